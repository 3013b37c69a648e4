"""The speed paths train to the same numbers as the plain Keras layers.

From one seed, a small ResNet is trained a few SGD steps with the fast paths
(``resnet_tf.precision.fast_paths(True)``, the default) and without them;
the losses of every step and the inference outputs afterwards (which use the
moving BN statistics) must agree within the tolerances below. The 50-step
ResNet-50 version of this check is ``benchmarks/train_throughput.py
--numerics`` (results in benchmarks/RESULTS.md).
"""

import numpy as np
import pytest

import keras

import resnet_tf
from resnet_tf import precision

# (relative tolerance of the losses, absolute tolerance of the probabilities)
# float32: only summation order differs (fused kernel vs separate reductions);
# measured 1.3e-7 and 2.7e-7. bfloat16: activations keep 8 bits of mantissa
# and the paths round at different places (Keras upcasts to float32 for the
# statistics); measured 6.6e-4 and 7.2e-3.
TOLERANCE = {"float32": (1e-5, 1e-5), "mixed_bfloat16": (5e-3, 3e-2)}


def _train(policy, fast, steps=4):
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        with precision.fast_paths(fast):
            model = resnet_tf.build("resnet8", input_shape=(16, 16, 3), classes=5,
                                    family="cifar")
            model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                          loss="sparse_categorical_crossentropy")
            rng = np.random.default_rng(1)
            losses = []
            for _ in range(steps):
                x = rng.normal(size=(8, 16, 16, 3)).astype("float32")
                y = rng.integers(0, 5, size=(8,)).astype("int32")
                losses.append(float(np.ravel(model.train_on_batch(x, y))[0]))
            probs = model.predict_on_batch(x)
            ops = _op_types(model, x) if keras.backend.backend() == "tensorflow" else set()
    finally:
        keras.config.set_dtype_policy(old)
    return np.array(losses), np.asarray(probs, np.float32), ops


def _op_types(model, x):
    import tensorflow as tf

    fn = tf.function(lambda t: model(t, training=True))
    graph = fn.get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fast_paths_match_plain_keras(policy):
    fast_losses, fast_probs, fast_ops = _train(policy, True)
    plain_losses, plain_probs, plain_ops = _train(policy, False)
    loss_rtol, prob_atol = TOLERANCE[policy]
    np.testing.assert_allclose(fast_losses, plain_losses, rtol=loss_rtol)
    np.testing.assert_allclose(fast_probs, plain_probs, rtol=0, atol=prob_atol)
    if keras.backend.backend() == "tensorflow":
        # The comparison above means something only if the paths differ.
        assert "FusedBatchNormV3" in fast_ops
        assert "FusedBatchNormV3" not in plain_ops


def test_fast_paths_switch_restores():
    assert precision.fast_paths_enabled()
    with precision.fast_paths(False):
        assert not precision.fast_paths_enabled()
    assert precision.fast_paths_enabled()


def test_slow_bfloat16_reason():
    no_amx = {"avx512f", "avx512_bf16"}
    assert "float32" in precision.slow_bfloat16_reason(
        "mixed_bfloat16", cpu_flags=no_amx, has_gpu=False)
    assert precision.slow_bfloat16_reason(
        "mixed_bfloat16", cpu_flags=no_amx | {"amx_bf16"}, has_gpu=False) is None
    assert precision.slow_bfloat16_reason(
        "mixed_bfloat16", cpu_flags=no_amx, has_gpu=True) is None
    assert precision.slow_bfloat16_reason("float32", cpu_flags=no_amx) is None
