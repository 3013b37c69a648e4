"""The functional ResNet: structure, options, configs and the feature view."""

import re

import numpy as np
import pytest

import keras

from conftest import inbound_layers
from resnet_tf import ResNet, build
from resnet_tf.layers import BatchNorm, ZeroPadShortcut
from resnet_tf.zoo import count_macs

NAME_SCHEME = re.compile(
    r"^(conv1_(pad|conv|bn|relu)|pool1_(pad|pool)|avg_pool|max_pool|predictions|images"
    r"|conv[2-5]_block\d+_(add|out|0_shortcut|[0-3]_(pad|conv|bn|relu)))$"
)


def _conv_layers(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]


def test_every_conv_is_followed_by_bn_and_every_relu_follows_bn_or_add():
    model = build("resnet50", input_shape=(64, 64, 3))
    convs = _conv_layers(model)
    assert len(convs) == 53  # 49 on the residual paths + 4 projections
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            (src,) = inbound_layers(layer)
            assert isinstance(src, keras.layers.Conv2D), layer.name
        if isinstance(layer, keras.layers.Activation):
            (src,) = inbound_layers(layer)
            assert isinstance(src, (BatchNorm, keras.layers.Add)), layer.name
    bns = [l for l in model.layers if isinstance(l, BatchNorm)]
    assert len(bns) == len(convs)
    assert all(isinstance(c.kernel_initializer, keras.initializers.HeNormal)
               for c in convs)
    assert not any(c.use_bias for c in convs)


def test_layer_names_follow_the_documented_scheme():
    for name in ("resnet50", "resnet18", "resnet20"):
        model = build(name)
        bad = [l.name for l in model.layers if not NAME_SCHEME.match(l.name)]
        assert not bad, bad
        assert len({l.name for l in model.layers}) == len(model.layers)


@pytest.mark.parametrize("shortcut,projections", [("A", 0), ("B", 3), ("C", 8)])
def test_shortcut_options_on_resnet18(shortcut, projections):
    model = ResNet(18, shortcut=shortcut, input_shape=(64, 64, 3))
    proj = [l for l in model.layers if l.name.endswith("_0_conv")]
    assert len(proj) == projections
    pads = [l for l in model.layers if isinstance(l, ZeroPadShortcut)]
    assert len(pads) == (3 if shortcut == "A" else 0)


def test_bottleneck_option_b_projects_only_where_dimensions_change():
    model = build("resnet50")
    proj = sorted(l.name for l in model.layers if l.name.endswith("_0_conv"))
    assert proj == [f"conv{s}_block1_0_conv" for s in (2, 3, 4, 5)]


def test_option_a_shortcut_subsamples_and_pads_zeros():
    x = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype("float32")
    y = np.asarray(ZeroPadShortcut(8, strides=2)(x))
    assert y.shape == (2, 4, 3, 8)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 3:], 0)
    with pytest.raises(ValueError, match="only add"):
        ZeroPadShortcut(2)(x)


def test_imagenet_stage_outputs_and_strides():
    model = build("resnet50", include_top=False)
    feats = model.feature_model()
    out = feats(np.zeros((1, 224, 160, 3), "float32"))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"C2": (1, 56, 40, 256), "C3": (1, 28, 20, 512),
                      "C4": (1, 14, 10, 1024), "C5": (1, 7, 5, 2048)}
    c4_layer = model.stage_outputs["C4"]._keras_history.operation
    assert c4_layer.name == "conv4_block6_out"
    assert list(model.feature_model(["C4"]).output) == ["C4"]
    with pytest.raises(ValueError, match="C6"):
        model.feature_model(["C6"])


def test_cifar_family_layout():
    model = build("resnet20")
    assert not any(isinstance(l, keras.layers.MaxPooling2D) for l in model.layers)
    assert model.get_layer("conv1_conv").kernel.shape == (3, 3, 3, 16)
    out = model.feature_model()(np.zeros((1, 32, 32, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "C2": (1, 32, 32, 16), "C3": (1, 16, 16, 32), "C4": (1, 8, 8, 64)}
    assert model.output.shape == (None, 10)


def test_any_input_size_builds_and_runs():
    model = build("resnet18", classes=5)
    assert model.input.shape == (None, None, None, 3)
    for h, w in ((64, 64), (97, 130), (32, 32)):
        assert model(np.zeros((2, h, w, 3), "float32")).shape == (2, 5)
    conv = build("resnet18", include_top=False)
    assert conv(np.zeros((1, 97, 130, 3), "float32")).shape == (1, 4, 5, 512)
    for pooling in ("avg", "max"):
        m = build("resnet18", include_top=False, pooling=pooling)
        assert m(np.zeros((1, 64, 64, 3), "float32")).shape == (1, 512)


def test_probabilities_and_logits():
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype("float32")
    probs = np.asarray(build("resnet20")(x))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    logits = np.asarray(build("resnet20", classifier_activation=None)(x))
    assert (logits < 0).any()


def test_weight_decay_is_half_lambda_times_squared_norm():
    model = build("resnet20", weight_decay=1e-4)
    kernels = [l.kernel for l in model.layers
               if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]
    assert len(model.losses) == len(kernels) == 20
    want = 0.5e-4 * sum(float(np.sum(np.square(k))) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(want, rel=1e-5)
    assert build("resnet20", weight_decay=0).losses == []


def test_zero_init_residual_makes_each_block_start_as_identity():
    model = ResNet(18, zero_init_residual=True, include_top=False)
    gammas = [l.gamma for l in model.layers if l.name.endswith("_2_bn")]
    assert len(gammas) == 8 and all(not np.any(np.asarray(g)) for g in gammas)
    block = keras.Model(model.input, [model.get_layer("conv2_block1_add").input[0],
                                      model.get_layer("conv2_block1_out").output])
    shortcut, out = block(np.random.default_rng(0).normal(
        size=(1, 32, 32, 3)).astype("float32"))
    np.testing.assert_allclose(np.asarray(out), np.maximum(np.asarray(shortcut), 0))
    assert not np.any(np.asarray(
        build("resnet18").get_layer("conv2_block1_2_bn").gamma) == 0)


def test_mixed_precision_keeps_probabilities_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build("resnet20")
    y = model(np.zeros((2, 32, 32, 3), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"


def test_config_round_trip_and_keras_file(tmp_path):
    model = build("resnet20", classes=7, shortcut="B", zero_init_residual=True,
                  weight_decay=5e-4)
    config = model.get_config()
    assert config["depth"] == 20 and config["classes"] == 7
    assert config["shortcut"] == "B" and config["weight_decay"] == 5e-4
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    # Move the BN statistics away from their initial values first.
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, np.array([1, 2]), epochs=1, verbose=0)
    clone = ResNet.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(model(x)))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ResNet) and loaded.get_config() == config
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


@pytest.mark.parametrize("name,width,c5", [("resnet18", 16, 128), ("resnet50", 32, 1024)])
def test_a_narrower_net_keeps_the_layout(name, width, c5):
    full = build(name, classes=10, input_shape=(64, 64, 3))
    narrow = build(name, classes=10, width=width, input_shape=(64, 64, 3))
    assert full.name == name and narrow.name == f"{name}_w{width}"
    assert [layer.name for layer in narrow.layers] == [layer.name for layer in full.layers]
    assert narrow.stage_outputs["C5"].shape[-1] == c5
    assert narrow.stage_outputs["C2"].shape[-1] * 8 == c5
    ratio = 64 // width
    for layer in full.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            got = narrow.get_layer(layer.name).kernel.shape
            # Every filter count shrinks by the ratio; input channels too,
            # except the stem's 3.
            assert tuple(got) == (kh, kw, cin if cin == 3 else cin // ratio, cout // ratio)
    # ~ratio^2 fewer multiply-adds (the stem and the classifier shrink by ratio).
    assert count_macs(narrow) < count_macs(full) / (ratio**2 / 2)
    config = narrow.get_config()
    assert config["width"] == width and full.get_config()["width"] == 64
    clone = ResNet.from_config(config)
    assert clone.count_params() == narrow.count_params()


def test_plain_and_residual_nets_train_with_fit():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=16)
    for residual in (True, False):
        keras.utils.set_random_seed(0)
        model = ResNet(8, family="cifar", residual=residual)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      "sparse_categorical_crossentropy")
        hist = model.fit(x, y, batch_size=16, epochs=25, verbose=0).history["loss"]
        assert hist[-1] < 0.5 * hist[0], (residual, hist[0], hist[-1])


@pytest.mark.parametrize("kwargs,match", [
    (dict(depth=19), "Unsupported CIFAR depth 19"),
    (dict(depth=50, family="imagenet", stride_on="2x2"), "stride_on"),
    (dict(depth=51, family="imagenet"), "Unsupported ImageNet depth 51"),
    (dict(depth=18, shortcut="D"), "Unknown shortcut option 'D'"),
    (dict(depth=18, input_shape=(16, 64, 3)), r"too small .* at least 32"),
    (dict(depth=20, input_shape=(3, 32, 3)), r"at least 4"),
    (dict(depth=18, input_shape=(64, 64)), "height, width, channels"),
    (dict(depth=18, pooling="sum", include_top=False), "pooling"),
    (dict(depth="50"), "integer"),
    (dict(depth=20, family="alexnet"), "Unknown family 'alexnet'"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet(**kwargs)
