"""Importing keras.applications ResNet weights, and mismatch errors."""

import numpy as np
import pytest

import keras

from resnet_tf import ResNet
from resnet_tf.weights import assign_by_name, from_keras_applications, named_weights


def _randomize(model, seed=0):
    """Random weights everywhere, BN statistics included (a real check)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            c = ws[0].shape
            ws = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                  rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)]
        else:
            ws = [w + rng.normal(0, 0.01, w.shape) for w in ws]
        layer.set_weights([w.astype("float32") for w in ws])


def test_keras_applications_resnet50_imports_exactly(tmp_path):
    src = keras.applications.ResNet50(weights=None, input_shape=(96, 96, 3))
    _randomize(src)
    ours = from_keras_applications(src)
    assert isinstance(ours, ResNet) and ours.depth == 50 and ours.conv_bias
    x = np.random.default_rng(1).normal(size=(2, 96, 96, 3)).astype("float32")
    want = np.asarray(src(x))
    np.testing.assert_allclose(np.asarray(ours(x)), want, atol=1e-5, rtol=0)
    # Pre-softmax features agree as well (the comparison is not flattened
    # by a saturated softmax).
    feats = keras.Model(src.input, src.get_layer("avg_pool").output)
    np.testing.assert_allclose(
        np.asarray(ours.feature_model(["C5"])(x)["C5"]).mean(axis=(1, 2)),
        np.asarray(feats(x)), rtol=1e-4, atol=1e-5)
    # From a saved file too, and into a fully convolutional model.
    path = tmp_path / "r50.keras"
    src.save(path)
    fcn = from_keras_applications(str(path), input_shape=(None, None, 3))
    np.testing.assert_allclose(np.asarray(fcn(x)), want, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [101, 152])
def test_deeper_keras_applications_models_map_by_name(depth):
    app = {101: keras.applications.ResNet101, 152: keras.applications.ResNet152}
    src = app[depth](weights=None, include_top=False, pooling="avg",
                     input_shape=(64, 64, 3))
    ours = from_keras_applications(src)
    assert ours.depth == depth and ours.pooling == "avg"
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(src(x)),
                               rtol=1e-4, atol=1e-4)


def test_shape_mismatch_names_the_first_layer_and_assigns_nothing():
    src = ResNet(20, classes=10)
    dst = ResNet(20, classes=5)
    before = [np.asarray(w) for w in dst.weights]
    with pytest.raises(ValueError, match="'predictions'"):
        assign_by_name(dst, named_weights(src), source="src.h5")
    for b, w in zip(before, dst.weights):
        np.testing.assert_array_equal(b, np.asarray(w))
    src_b = ResNet(20, shortcut="B")
    with pytest.raises(ValueError, match="conv3_block1_0_conv"):
        assign_by_name(ResNet(20), named_weights(src_b))
    with pytest.raises(ValueError, match="conv1_conv"):
        assign_by_name(ResNet(20, conv_bias=True), named_weights(ResNet(20)))


def test_non_rgb_input_is_rejected():
    src = keras.applications.ResNet50(weights=None, include_top=False,
                                      input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="1 channels.*RGB"):
        from_keras_applications(src, input_shape=(64, 64, 1))
    gray = keras.applications.ResNet50(weights=None, include_top=False,
                                       input_shape=(64, 64, 1))
    with pytest.raises(ValueError, match="1-channel input"):
        from_keras_applications(gray)
