"""A guard against a heap corruption in TensorFlow 2.21's oneDNN kernels.

The fault: with oneDNN on (TensorFlow's default on x86 CPUs,
``TF_ENABLE_ONEDNN_OPTS`` unset or 1), the filter gradient
(``Conv2DBackpropFilter``) of a 1x1 convolution with stride > 1 and fewer
than 16 input channels writes outside its buffers: the process dies with a
segmentation fault or a glibc ``malloc(): ...`` abort, at a step that
depends on the shapes. The forward pass, the input gradient and every kernel
larger than 1x1 are unaffected.

Boundary, probed one configuration per child process on TF 2.21.0, float32
and bfloat16, on a 2-core AVX-512 (BF16/VNNI) CPU, with glibc's
``MALLOC_CHECK_=3`` to catch corruptions that don't crash at once: input
channels 1..15 fail (output channels 1..32, strides 2, 3, 4 and 8, maps
16..64 pixels a side, batch 1..4; not every shape in that box fails, e.g.
odd map sizes and some batch sizes survive); 16 to 64 input channels never
failed; nor did stride 1, 3x3 or 7x7 kernels. In a ResNet this is the
projection shortcut (and, with ``stride_on="1x1"``, a bottleneck's first
convolution) of the first strided stage when the network is narrower than
16 channels there: ``--width 8`` for ResNet-18/34, ``--width`` 2 or 3 for
the bottleneck nets.

The remedy keeps the arithmetic and the weights: a 1x1 convolution with
stride s reads exactly the pixels ``x[:, ::s, ::s]`` ("same" padding adds
nothing for a 1x1 kernel, and "valid" gives the same ``ceil(H / s)``
outputs), so ``SubsampledPointwiseConv2D`` subsamples first and convolves
at stride 1, which runs oneDNN's stride-1 kernels. Its config, kernel,
layer name, output and even class ``__name__`` (which Keras files key
weights by) are those of the ``Conv2D`` it replaces, so saved weights load
either way. ``apply_conv_bn`` uses it only where the fault can strike
(it is slower than the strided kernel on wide layers: measured 9 -> 37 ms
for a 256 -> 128 channel 56x56 layer's forward and backward, batch 8).
"""

import keras

# Input channels from which TF 2.21's oneDNN 1x1 strided filter gradient
# was never seen to corrupt memory (see the module docstring).
MIN_SAFE_CHANNELS = 16


def needs_guard(kernel_size, strides, in_channels):
    """True when a Conv2D of these settings would run the faulty oneDNN
    kernel: a 1x1 kernel, stride > 1 and fewer than ``MIN_SAFE_CHANNELS``
    input channels (None, unknown: guarded)."""
    return (kernel_size == 1 and strides > 1
            and (in_channels is None or in_channels < MIN_SAFE_CHANNELS))


class SubsampledPointwiseConv2D(keras.layers.Conv2D):
    """A 1x1 ``Conv2D`` with stride s computed as ``x[:, ::s, ::s]`` then a
    stride-1 1x1 convolution: the same outputs, gradients, config and
    weights as ``keras.layers.Conv2D`` with those arguments, without TF
    2.21's oneDNN strided 1x1 filter gradient (see the module docstring).

    Takes ``keras.layers.Conv2D``'s arguments. Input float [B, H, W, C]
    (channels_last) or [B, C, H, W]; output [B, ceil(H / s_h),
    ceil(W / s_w), filters] (or channels first).

    Raises:
        ValueError: for a kernel other than 1x1 or a dilation other than 1.
    """

    def __init__(self, filters, kernel_size=1, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if tuple(self.kernel_size) != (1, 1) or tuple(self.dilation_rate) != (1, 1):
            raise ValueError(
                f"{self.name}: SubsampledPointwiseConv2D computes only 1x1, "
                f"undilated convolutions; got kernel_size={self.kernel_size}, "
                f"dilation_rate={self.dilation_rate}. Use keras.layers.Conv2D.")

    def convolution_op(self, inputs, kernel):
        sh, sw = self.strides
        if self.data_format == "channels_last":
            inputs = inputs[:, ::sh, ::sw, :]
        else:
            inputs = inputs[:, :, ::sh, ::sw]
        return keras.ops.conv(inputs, kernel, strides=1, padding="valid",
                              dilation_rate=1, data_format=self.data_format)


# Keras files key each layer's weights by its class's snake-cased name and
# its rank among layers of that name ("layers/conv2d_7/vars"), so the class
# answers to Conv2D's name: weights and .keras files written with the guard
# load into models built without it (another TF, a wider net) and back.
# Serialized configs name it by its registered name.
SubsampledPointwiseConv2D.__name__ = "Conv2D"
keras.saving.register_keras_serializable(
    package="resnet_tf", name="SubsampledPointwiseConv2D")(SubsampledPointwiseConv2D)
