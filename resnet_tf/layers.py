"""Small custom layers the ResNet blocks need.

Both are written with ``keras.ops`` so models run on every Keras backend.
``BatchNorm`` additionally takes TensorFlow's fused kernel when the backend is
TensorFlow, because Keras 3's own BatchNormalization computes moments with
separate reductions and upcasts bfloat16 inputs to float32, which costs a
large share of a ResNet training step on CPU (see benchmarks/RESULTS.md).
"""

import keras
from keras import ops

from resnet_tf.precision import fast_paths_enabled

_PACKAGE = "resnet_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNorm(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with a fused path on TensorFlow.

    Same variables, config and semantics as the Keras layer (so weights and
    ``.keras`` files are interchangeable), except that on the TensorFlow
    backend, for a 4-D channels-last input without mask or renorm, it calls
    ``FusedBatchNormV3``:

    - in training it normalises with the batch statistics and updates the
      moving mean and (biased) variance exactly as Keras does;
    - in inference (or when ``trainable`` is False, the paper's frozen BN for
      detection) it uses the moving statistics, exactly as Keras does.

    Under mixed precision the kernel reads bfloat16/float16 activations and
    float32 statistics directly instead of upcasting the activations.
    """

    def _can_fuse(self, inputs, mask):
        if keras.backend.backend() != "tensorflow" or not fast_paths_enabled():
            return False
        if mask is not None or self.renorm or len(inputs.shape) != 4:
            return False
        axis = self.axis if self.axis >= 0 else self.axis + 4
        return axis == 3 and self.scale and self.center

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # only reached on the TensorFlow backend

        x = inputs
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = tf.cast(x, tf.float32)
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        if training and self.trainable:
            # exponential_avg_factor=1 returns this batch's statistics; the
            # kernel reports the unbiased variance, Keras tracks the biased one.
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True
            )
            shape = tf.shape(x)
            n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            variance = variance * tf.math.divide_no_nan(n - 1.0, n)
            m = self.momentum
            self.moving_mean.assign(
                self.moving_mean * m + tf.cast(mean, self.moving_mean.dtype) * (1 - m)
            )
            self.moving_variance.assign(
                self.moving_variance * m
                + tf.cast(variance, self.moving_variance.dtype) * (1 - m)
            )
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZeroPadShortcut(keras.layers.Layer):
    """The paper's option-A shortcut: identity with zero-padded channels.

    Sec. 3.3: "the shortcut still performs identity mapping, with extra zero
    entries padded for increasing dimensions ... performed with a stride of 2".
    Subsampling takes every ``strides``-th pixel starting at 0, which is the
    centre of the matching output pixel of the symmetric-padded strided
    convolution on the residual path. The new channels are appended after the
    existing ones. No parameters.

    Args:
        out_channels: channel count after padding (>= input channels).
        strides: spatial subsampling factor.
    """

    def __init__(self, out_channels, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.strides = int(strides)

    def call(self, inputs):
        x = inputs
        if self.strides > 1:
            x = x[:, :: self.strides, :: self.strides, :]
        extra = self.out_channels - x.shape[-1]
        if extra < 0:
            raise ValueError(
                f"{self.name}: out_channels={self.out_channels} is smaller than "
                f"the input's {x.shape[-1]} channels; option A can only add "
                "channels."
            )
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
        return x

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides
        h = None if h is None else (h + s - 1) // s
        w = None if w is None else (w + s - 1) // s
        return (b, h, w, self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, strides=self.strides)
        return config
