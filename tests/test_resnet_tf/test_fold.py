"""Batch norm folded into the convolutions for inference
(``resnet_tf.fold``): same outputs as the model in inference mode, no batch
norm left, the original untouched, bfloat16 weights stored as bfloat16."""

import keras
import numpy as np
import pytest

import resnet_tf
from resnet_tf.fold import FoldedBatchNorm, fold_batch_norms, foldable_pairs


def _randomise_bn(model, seed=0):
    """Non-trivial moving statistics, so folding has something to fold."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n)])


def _bns(model):
    return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("name,kwargs,size", [
    ("resnet20", {}, 32),                                  # option A shortcuts
    ("resnet18", dict(classes=7), 64),                     # option B projections
    ("resnet50", dict(classes=5, shortcut="C"), 64),       # bottlenecks, all projections
    ("plain20", {}, 32),
])
def test_folded_model_computes_the_inference_mode_model(name, kwargs, size):
    model = resnet_tf.build(name, input_shape=(size, size, 3), classifier_activation=None,
                            **kwargs)
    _randomise_bn(model)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(1).normal(size=(3, size, size, 3)).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    folded = fold_batch_norms(model)
    out = np.asarray(folded(x))
    assert len(foldable_pairs(model)) == len(_bns(model)) > 0
    assert not _bns(folded)
    assert sum(isinstance(l, FoldedBatchNorm) for l in folded.layers) == len(_bns(model))
    # float64 folding, float32 arithmetic: agreement to float32 rounding.
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    assert np.argmax(out, -1).tolist() == np.argmax(ref, -1).tolist()
    # the original is untouched and still has its batch norms
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # two variables (kernel, bias) per folded conv instead of conv + 4 BN
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(folded.weights) == len(model.weights) - 4 * len(_bns(model)) + len(convs)


def test_bfloat16_copy_stores_bfloat16_weights_and_outputs_float32():
    model = resnet_tf.build("resnet18", input_shape=(64, 64, 3), classes=6,
                            classifier_activation=None)
    _randomise_bn(model, seed=2)
    x = np.random.default_rng(3).normal(size=(4, 64, 64, 3)).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    folded = fold_batch_norms(model, dtype="bfloat16")
    out = folded(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    convs = [l for l in folded.layers if isinstance(l, keras.layers.Conv2D)]
    assert convs and all(keras.backend.standardize_dtype(l.kernel.dtype) == "bfloat16" for l in convs)
    assert folded.layers[-1].dtype_policy.compute_dtype == "float32"  # the classifier
    err = np.abs(np.asarray(out) - ref).max() / np.abs(ref).max()
    assert err < 0.05, err


def test_only_conv_then_batch_norm_pairs_are_folded():
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inp)
    b1 = keras.layers.BatchNormalization(name="b1")(a)          # a has two users: kept
    side = keras.layers.ReLU(name="side")(a)
    c = keras.layers.Conv2D(4, 1, use_bias=True, name="c")(keras.layers.Add()([b1, side]))
    b2 = keras.layers.BatchNormalization(name="b2")(c)          # c -> b2 only: folded
    b3 = keras.layers.BatchNormalization(name="b3")(keras.layers.ReLU()(b2))  # after a ReLU
    model = keras.Model(inp, b3)
    _randomise_bn(model, seed=4)
    assert foldable_pairs(model) == {"c": "b2"}
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 3)).astype(np.float32)
    folded = fold_batch_norms(model)
    assert {l.name for l in _bns(folded)} == {"b1", "b3"}
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x, training=False)),
                               atol=1e-5)


def test_folding_needs_a_functional_model():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        fold_batch_norms(Sub())


def test_serving_function_is_the_folded_model_with_constant_weights():
    import tensorflow as tf

    from resnet_tf.evaluate import classifier_function
    from resnet_tf.fold import serving_function

    model = resnet_tf.build("resnet8", classes=4)  # any input size
    _randomise_bn(model, seed=6)
    run = serving_function(model)
    rng = np.random.default_rng(7)
    for shape in [(1, 32, 32, 3), (5, 40, 24, 3)]:  # one graph, any batch and size
        x = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(np.asarray(run(x)), np.asarray(model(x, training=False)),
                                   atol=1e-6)
    graph = run.get_concrete_function().graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "ReadVariableOp" not in ops and "FusedBatchNormV3" not in ops, ops
    assert "Conv2D" in ops
    # The weights are copied: the frozen function ignores later training.
    before = np.asarray(run(x))
    model.layers[-1].kernel.assign(model.layers[-1].kernel * 0.0)
    np.testing.assert_array_equal(np.asarray(run(x)), before)
    assert not np.allclose(np.asarray(classifier_function(model)(x)), before)
