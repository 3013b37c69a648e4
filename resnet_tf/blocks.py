"""Residual and plain blocks of the paper as ``apply_*`` functions.

Layer naming (API: weight importers and the detector's conv5 head use it):

- ``{prefix}_{i}_conv``, ``{prefix}_{i}_bn``, ``{prefix}_{i}_relu`` for the
  i-th convolution of a block's residual path (i = 1, 2[, 3]);
- ``{prefix}_{i}_pad`` for the explicit zero padding before a strided
  convolution with a kernel larger than 1;
- ``{prefix}_0_conv`` / ``{prefix}_0_bn`` for a projection shortcut (options B
  and C), ``{prefix}_0_shortcut`` for option A's zero-padding shortcut;
- ``{prefix}_add`` for the addition and ``{prefix}_out`` for the block's
  final ReLU (plain blocks have no ``_add``, but keep ``_out``).

``prefix`` is ``conv{stage}_block{b}`` with 1-based b, as in
``keras.applications`` so that its weights map by name.

A 1x1 convolution with stride > 1 on fewer than 16 input channels is a
``resnet_tf.onednn_guard.SubsampledPointwiseConv2D`` (a ``Conv2D`` with the
same name, config and weights that subsamples first), because TF 2.21's
oneDNN filter gradient of that convolution corrupts the heap.

Padding: stride-1 convolutions use ``"same"``; a strided k x k convolution
(k > 1) is preceded by symmetric zero padding of k // 2 and uses ``"valid"``
(Caffe's and PyTorch's convention, and keras.applications'). TensorFlow's
``"same"`` would pad asymmetrically at stride 2 and shift the sampling grid.
"""

import dataclasses

import keras

from resnet_tf.layers import BatchNorm, ZeroPadShortcut
from resnet_tf.onednn_guard import SubsampledPointwiseConv2D, needs_guard

SHORTCUTS = ("A", "B", "C", "none")  # "none": a plain block
STRIDE_PLACEMENTS = ("1x1", "3x3")


@dataclasses.dataclass(frozen=True)
class BlockOptions:
    """Per-layer settings shared by every convolution of a network.

    Args:
        shortcut: "A" (zero-padding identity), "B" (projection where
            dimensions change), "C" (projection everywhere) or "none" (plain).
        stride_on: "1x1" puts a bottleneck's stride on its first 1x1 (the
            paper's original); "3x3" on its 3x3 ("ResNet v1.5").
        conv_bias: give convolutions a bias (only needed to carry weights from
            models that have one, such as keras.applications).
        weight_decay: the paper's weight decay lambda; every conv and dense
            kernel adds lambda / 2 * ||W||^2 to the loss, so SGD's update
            carries lambda * W, as in Caffe. 0 disables it.
        bn_momentum, bn_epsilon: BatchNormalization settings.
        zero_init_residual: initialise the last BN gamma of each residual
            branch to zero (so every block starts as the identity).
    """

    shortcut: str = "B"
    stride_on: str = "1x1"
    conv_bias: bool = False
    weight_decay: float = 1e-4
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    zero_init_residual: bool = False

    def __post_init__(self):
        if self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"Unknown shortcut option {self.shortcut!r}; use 'A' (zero "
                "padding), 'B' (projection where dimensions change), 'C' (all "
                "projections) or 'none' (plain network)."
            )
        if self.stride_on not in STRIDE_PLACEMENTS:
            raise ValueError(
                f"Unknown stride_on {self.stride_on!r}; use '1x1' (the paper) "
                "or '3x3' (v1.5)."
            )
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")

    def regularizer(self):
        if not self.weight_decay:
            return None
        return keras.regularizers.L2(self.weight_decay / 2.0)

    @classmethod
    def of_classifier(cls, config, layout, weight_decay):
        """The options of a classifier built from ``config`` (a ``ResNet``
        ``get_config()`` dict), for a network that reuses its layers and
        weights (the localizer's trunk, the R-CNN second stage), with its
        own ``weight_decay``. ``layout`` is the classifier's
        ``zoo.StageLayout`` (its default shortcut)."""
        return cls(
            shortcut=(config.get("shortcut") or layout.default_shortcut)
            if config.get("residual", True) else "none",
            stride_on=config.get("stride_on", "1x1"),
            conv_bias=config.get("conv_bias", False), weight_decay=weight_decay,
            bn_momentum=config.get("bn_momentum", 0.9),
            bn_epsilon=config.get("bn_epsilon", 1e-5))


def apply_conv_bn(x, filters, kernel_size, strides, name, options, relu=True,
                  zero_gamma=False):
    """Convolution, batch normalization and (optionally) ReLU.

    Args:
        x: float [B, H, W, C] feature map.
        name: prefix of the layer names (``{name}_conv``, ``_bn``, ``_relu``).
        zero_gamma: initialise the BN scale to zero.
    Returns:
        [B, ceil(H / strides), ceil(W / strides), filters].
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    # A 1x1 strided conv on < 16 channels crashes TF 2.21's oneDNN filter
    # gradient; the subsampling form is the same conv (resnet_tf.onednn_guard).
    conv = (SubsampledPointwiseConv2D if needs_guard(kernel_size, strides, x.shape[-1])
            else keras.layers.Conv2D)
    x = conv(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=options.conv_bias,
        kernel_initializer="he_normal",  # [13], as the paper says
        kernel_regularizer=options.regularizer(),
        name=f"{name}_conv",
    )(x)
    x = BatchNorm(
        momentum=options.bn_momentum,
        epsilon=options.bn_epsilon,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=f"{name}_bn",
    )(x)
    if relu:
        x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def apply_shortcut(x, out_channels, strides, name, options):
    """The shortcut branch of a block, or None for a plain block."""
    if options.shortcut == "none":
        return None
    changes = strides != 1 or x.shape[-1] != out_channels
    if options.shortcut == "C" or (options.shortcut == "B" and changes):
        return apply_conv_bn(x, out_channels, 1, strides, f"{name}_0", options,
                             relu=False)
    if options.shortcut == "A" and changes:
        return ZeroPadShortcut(out_channels, strides, name=f"{name}_0_shortcut")(x)
    return x


def _merge(residual, shortcut, name):
    if shortcut is not None:
        residual = keras.layers.Add(name=f"{name}_add")([shortcut, residual])
    return keras.layers.Activation("relu", name=f"{name}_out")(residual)


def apply_basic_block(x, filters, strides, name, options):
    """Two 3x3 convolutions (Fig. 2 left; ResNet-18/34 and CIFAR nets).

    Returns [B, H / strides, W / strides, filters].
    """
    shortcut = apply_shortcut(x, filters, strides, name, options)
    y = apply_conv_bn(x, filters, 3, strides, f"{name}_1", options)
    y = apply_conv_bn(y, filters, 3, 1, f"{name}_2", options, relu=False,
                      zero_gamma=options.zero_init_residual)
    return _merge(y, shortcut, name)


def apply_bottleneck_block(x, filters, strides, name, options):
    """1x1 reduce, 3x3, 1x1 expand to ``4 * filters`` (Fig. 5 right).

    The stride sits on the first 1x1 (the paper) or on the 3x3
    (``options.stride_on == "3x3"``). Returns [B, H / s, W / s, 4 * filters].
    """
    out_channels = 4 * filters
    shortcut = apply_shortcut(x, out_channels, strides, name, options)
    s1, s3 = (strides, 1) if options.stride_on == "1x1" else (1, strides)
    y = apply_conv_bn(x, filters, 1, s1, f"{name}_1", options)
    y = apply_conv_bn(y, filters, 3, s3, f"{name}_2", options)
    y = apply_conv_bn(y, out_channels, 1, 1, f"{name}_3", options, relu=False,
                      zero_gamma=options.zero_init_residual)
    return _merge(y, shortcut, name)


BLOCKS = {"basic": apply_basic_block, "bottleneck": apply_bottleneck_block}


def apply_stage(x, block, num_blocks, filters, strides, name, options):
    """``num_blocks`` blocks; the first carries the stride.

    Block b is named ``{name}_block{b}`` (``conv3_block1`` ...).
    """
    apply_block = BLOCKS[block]
    for b in range(1, num_blocks + 1):
        x = apply_block(x, filters, strides if b == 1 else 1,
                        f"{name}_block{b}", options)
    return x
