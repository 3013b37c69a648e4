"""BatchNorm (fused on TF) against keras.layers.BatchNormalization."""

import numpy as np
import pytest

import keras

from resnet_tf.layers import BatchNorm


def _pair(policy, x, **kwargs):
    ref = keras.layers.BatchNormalization(dtype=policy, **kwargs)
    ours = BatchNorm(dtype=policy, **kwargs)
    for layer in (ref, ours):
        layer.build(x.shape)
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 1.5, size=x.shape[-1]).astype("float32"),
               rng.normal(size=x.shape[-1]).astype("float32"),
               rng.normal(size=x.shape[-1]).astype("float32"),
               rng.uniform(0.5, 2.0, size=x.shape[-1]).astype("float32")]
    ref.set_weights(weights)
    ours.set_weights(weights)
    return ref, ours


def _f32(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))


@pytest.mark.parametrize("policy,tol", [("float32", 1e-5), ("mixed_bfloat16", 2e-2)])
@pytest.mark.parametrize("training", [True, False])
def test_matches_keras_batch_normalization(policy, tol, training):
    import tensorflow as tf

    x = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 6, 8)).astype("float32")
    ref, ours = _pair(policy, x, momentum=0.9, epsilon=1e-5)
    xs = tf.constant(x)
    grads = []
    for layer in (ref, ours):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = layer(xs, training=training)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
        grads.append(tape.gradient(loss, [xs, layer.gamma, layer.beta]))
        assert y.dtype == (tf.bfloat16 if policy == "mixed_bfloat16" else tf.float32)
    y_ref, y_ours = _f32(ref(x, training=False)), _f32(ours(x, training=False))
    np.testing.assert_allclose(y_ours, y_ref, atol=tol)
    for g_ref, g_ours in zip(*grads):
        np.testing.assert_allclose(_f32(g_ours), _f32(g_ref), rtol=tol, atol=tol * 10)
    # Moving statistics: updated identically in training, untouched otherwise.
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(_f32(getattr(ours, name)),
                                   _f32(getattr(ref, name)), rtol=1e-6, atol=1e-6)


def test_frozen_bn_uses_and_keeps_moving_statistics():
    x = np.random.default_rng(0).normal(size=(4, 3, 3, 2)).astype("float32")
    _, ours = _pair("float32", x)
    ours.trainable = False
    before = [np.asarray(w) for w in ours.weights]
    y = np.asarray(ours(x, training=True))
    mean, var = np.asarray(ours.moving_mean), np.asarray(ours.moving_variance)
    want = ((x - mean) / np.sqrt(var + ours.epsilon) * np.asarray(ours.gamma)
            + np.asarray(ours.beta))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    for b, w in zip(before, ours.weights):
        np.testing.assert_array_equal(b, np.asarray(w))


def test_falls_back_to_keras_for_other_ranks():
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    ref, ours = _pair("float32", x)
    np.testing.assert_allclose(np.asarray(ours(x, training=True)),
                               np.asarray(ref(x, training=True)), atol=1e-6)
