"""The functional ResNet builder for both families of the paper."""

import contextlib
import sys

import keras

from resnet_tf import zoo
from resnet_tf.blocks import BlockOptions, apply_conv_bn, apply_stage

_POOLINGS = (None, "avg", "max")


@keras.saving.register_keras_serializable(package="resnet_tf")
class ResNet(keras.Model):
    """A ResNet (or its plain twin) from "Deep Residual Learning" as a
    functional Keras model.

    Args:
        depth: 18, 34, 50, 101, 152 (ImageNet, Table 1) or 6n + 2
            (CIFAR, Sec. 4.2: 20, 32, 44, 56, 110, 1202, ...).
        family: "imagenet" or "cifar"; None picks ImageNet for Table 1
            depths, CIFAR otherwise (pass "cifar" for a CIFAR net of depth 50).
        residual: False builds the plain twin (the same layers, no shortcuts).
        shortcut: "A", "B" or "C" (Sec. 3.3); None is the paper's default:
            B for ImageNet depths, A for CIFAR.
        stride_on: "1x1" (the paper) or "3x3" (v1.5) for bottleneck blocks.
        zero_init_residual: zero-initialise each residual branch's last BN gamma.
        weight_decay: the paper's lambda (1e-4); see ``BlockOptions``.
        conv_bias: convolutions with bias (to carry weights that have one).
        bn_momentum, bn_epsilon: BatchNormalization settings.
        include_top: global average pooling and a fully connected classifier.
        pooling: with ``include_top=False``: None (the conv5_x map), "avg" or
            "max".
        classes: classifier outputs; None -> 1000 (ImageNet) or 10 (CIFAR).
        classifier_activation: activation of the classifier ("softmax",
            None for logits). It is computed in float32 under mixed precision.
        input_shape: (H, W, 3); the default (None, None, 3) accepts any size
            of at least the network's total stride (fully convolutional).
        name: model name; default "resnet50", "plain20", ... ("resnet18_w16"
            with a non-default width).
        width: the first stage's width, doubled at each later stage, and the
            stem's filters; None is the paper's (64 ImageNet, 16 CIFAR). A
            narrower net keeps the layout, so detectors and localizers built
            from it work the same (``zoo.stage_layout``).

    Output: [B, classes] with the top, else the pooled [B, C] or the final
    [B, H/32, W/32, C] map (H/4 for CIFAR).

    ``model.stage_outputs`` maps "C2".."C5" (CIFAR: "C2".."C4") to the last
    block output of each stage; ``model.feature_model()`` returns a model
    that outputs them as a dict. ImageNet strides are C2=4, C3=8, C4=16,
    C5=32; CIFAR strides are C2=1, C3=2, C4=4.
    """

    def __init__(
        self,
        depth=50,
        family=None,
        residual=True,
        shortcut=None,
        stride_on="1x1",
        zero_init_residual=False,
        weight_decay=1e-4,
        conv_bias=False,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        include_top=True,
        pooling=None,
        classes=None,
        classifier_activation="softmax",
        input_shape=None,
        name=None,
        width=None,
        **kwargs,
    ):
        # === Config ===
        layout = zoo.stage_layout(depth, family, width)
        if shortcut is not None and shortcut not in zoo.SHORTCUT_OPTIONS:
            raise ValueError(
                f"Unknown shortcut option {shortcut!r}; use 'A' (zero padding), "
                "'B' (projection where dimensions change) or 'C' (all "
                "projections)."
            )
        shortcut = shortcut or layout.default_shortcut
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}.")
        classes = layout.default_classes if classes is None else int(classes)
        if include_top and classes < 1:
            raise ValueError(f"classes must be >= 1, got {classes}.")
        input_shape = _check_input_shape(input_shape, layout)
        options = BlockOptions(
            shortcut=shortcut if residual else "none",
            stride_on=stride_on,
            conv_bias=conv_bias,
            weight_decay=weight_decay,
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            zero_init_residual=zero_init_residual,
        )
        name = name or (f"{'resnet' if residual else 'plain'}{layout.depth}"
                        + ("" if layout.is_default_width else f"_w{layout.width}"))

        # === Functional Model ===
        inputs = keras.Input(shape=input_shape, name="images")
        stage_outputs = apply_trunk(inputs, layout, options)
        x = outputs = stage_outputs[f"C{len(layout.stages) + 1}"]
        if include_top:
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
            outputs = keras.layers.Dense(
                classes,
                activation=classifier_activation,
                kernel_regularizer=options.regularizer(),
                dtype=_float32_if_mixed(),
                name="predictions",
            )(x)
        elif pooling == "avg":
            outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            outputs = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        with deep_recursion():
            super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.depth = layout.depth
        self.family = layout.family
        self.width = layout.width
        self.residual = bool(residual)
        self.shortcut = shortcut
        self.stride_on = stride_on
        self.zero_init_residual = bool(zero_init_residual)
        self.weight_decay = float(weight_decay)
        self.conv_bias = bool(conv_bias)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.include_top = bool(include_top)
        self.pooling = pooling
        self.classes = classes
        self.classifier_activation = classifier_activation
        self.image_shape = tuple(input_shape)
        self.layout = layout
        self.stage_outputs = stage_outputs

    def feature_model(self, levels=None, name=None):
        """A model from this one's input to its stage outputs, as a dict.

        Args:
            levels: the keys to return, e.g. ("C4",); default all of them.
        Returns:
            ``keras.Model`` whose output is ``{"C2": [B, H/4, W/4, C], ...}``,
            sharing this model's layers and weights.
        """
        levels = tuple(levels or self.stage_outputs)
        unknown = [lv for lv in levels if lv not in self.stage_outputs]
        if unknown:
            raise ValueError(
                f"Unknown stage levels {unknown}; {self.name} has "
                f"{list(self.stage_outputs)}."
            )
        return keras.Model(
            self.input,
            {lv: self.stage_outputs[lv] for lv in levels},
            name=name or f"{self.name}_features",
        )

    def get_config(self):
        return {
            "depth": self.depth,
            "family": self.family,
            "width": self.width,
            "residual": self.residual,
            "shortcut": self.shortcut,
            "stride_on": self.stride_on,
            "zero_init_residual": self.zero_init_residual,
            "weight_decay": self.weight_decay,
            "conv_bias": self.conv_bias,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
            "include_top": self.include_top,
            "pooling": self.pooling,
            "classes": self.classes,
            "classifier_activation": self.classifier_activation,
            "input_shape": self.image_shape,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def apply_trunk(inputs, layout, options, last_level=None):
    """The stem and stages of ``layout`` on ``inputs``.

    Args:
        inputs: the image tensor [B, H, W, 3].
        layout: a ``zoo.StageLayout``.
        options: ``BlockOptions``.
        last_level: stop after this stage output ("C4" for the detector's
            shared trunk); None builds them all.
    Returns:
        dict "C2".. -> the last block output of each stage built.
    """
    if layout.family == "imagenet":
        x = apply_conv_bn(inputs, layout.stem_filters, 7, 2, "conv1", options)
        # Zero padding is safe before max pooling: inputs are post-ReLU.
        x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    else:
        x = apply_conv_bn(inputs, layout.stem_filters, 3, 1, "conv1", options)
    stage_outputs = {}
    for level, (stage, blocks, width, strides) in enumerate(layout.stages, 2):
        x = apply_stage(x, layout.block, blocks, width, strides, stage, options)
        stage_outputs[f"C{level}"] = x
        if f"C{level}" == last_level:
            break
    return stage_outputs


def build(name, **kwargs):
    """Build a named architecture: ``build("resnet50")``, ``build("plain20")``.

    Keyword arguments go to ``ResNet`` (``classes``, ``shortcut``, ...).
    """
    depth, residual = zoo.parse_name(name)
    return ResNet(depth=depth, residual=residual, **kwargs)


@contextlib.contextmanager
def deep_recursion(limit=60_000):
    """Raise Python's recursion limit for Keras' recursive graph walks.

    Keras maps a functional graph recursively, one level per layer;
    ResNet-1202 is about 3,600 layers deep, past Python's default of 1,000.
    """
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _check_input_shape(input_shape, layout):
    if input_shape is None:
        return (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels), got {input_shape}."
        )
    for size in input_shape[:2]:
        if size is not None and size < layout.total_stride:
            raise ValueError(
                f"input_shape {input_shape} is too small for "
                f"{layout.family} ResNet-{layout.depth}: its total stride is "
                f"{layout.total_stride}, so height and width must be at least "
                f"{layout.total_stride}."
            )
    if input_shape[2] is None or input_shape[2] < 1:
        raise ValueError(f"input_shape {input_shape} needs a known channel count.")
    return input_shape


def _float32_if_mixed():
    policy = keras.config.dtype_policy()
    if policy.compute_dtype != policy.variable_dtype:
        return "float32"
    return None
