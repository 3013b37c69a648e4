"""The RPN head and the paper's C4 RoI head (conv5_x on each RoI).

The RoI head reuses ``resnet_tf.blocks.apply_stage`` with the classifier's
layer names (``conv5_block{b}_{i}_conv`` ...), so a classifier's conv5_x
weights load into it by name (``load_backbone_weights``).
"""

import keras

from resnet_tf import zoo
from resnet_tf.blocks import BlockOptions, apply_stage
from resnet_tf.layers import BatchNorm
from resnet_tf.weights import assign_by_name, named_weights, weighted_layers

# freeze_at -> the layer-name prefixes kept fixed: the stem (conv1_*), then
# also conv2_x (detectron2's MODEL.BACKBONE.FREEZE_AT, default 2 as the detector's).
FROZEN_PREFIXES = {0: (), 1: ("conv1",), 2: ("conv1", "conv2")}


def build_rpn_head(in_channels=1024, num_anchors=9, conv_channels=None,
                   weight_decay=1e-4, name="rpn_head"):
    """3x3 conv + ReLU, then sibling 1x1 convs: objectness (A) and deltas (4A).

    Input [B, H, W, in_channels]; outputs ``{"objectness": [B, H*W*A],
    "deltas": [B, H*W*A, 4]}`` ordered (y, x, anchor) like
    ``AnchorGenerator``. Initialised from N(0, 0.01) as in Faster R-CNN.
    """
    conv_channels = conv_channels or in_channels
    reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    init = keras.initializers.RandomNormal(stddev=0.01)
    x_in = keras.Input((None, None, in_channels), name="features")
    x = keras.layers.Conv2D(conv_channels, 3, padding="same", activation="relu",
                            kernel_initializer=init, kernel_regularizer=reg,
                            name="rpn_conv")(x_in)
    obj = keras.layers.Conv2D(num_anchors, 1, kernel_initializer=init,
                              kernel_regularizer=reg, name="rpn_objectness")(x)
    deltas = keras.layers.Conv2D(4 * num_anchors, 1, kernel_initializer=init,
                                 kernel_regularizer=reg, name="rpn_deltas")(x)
    obj = keras.layers.Reshape((-1,), name="rpn_objectness_flat")(obj)
    deltas = keras.layers.Reshape((-1, 4), name="rpn_deltas_flat")(deltas)
    return keras.Model(x_in, {"objectness": obj, "deltas": deltas}, name=name)


def build_conv5_head(num_classes, depth=50, options=None, pooled_size=14,
                     in_channels=None, name="roi_head", width=None):
    """conv5_x (stride 2 in its first block) on pooled RoIs, global average
    pooling, and two siblings: (K+1)-way class logits and class-specific
    box deltas (Appendix A, "RoI pooling before conv5_1").

    Args:
        num_classes: K foreground classes (class 0 is background).
        depth: the ImageNet depth whose conv5_x to build (18..152).
        options: ``BlockOptions`` (the detector's; BN is frozen by the model).
        width: the backbone's first-stage width (None: 64); conv5_x has 8x.
    Input [R, pooled_size, pooled_size, C4 channels]; outputs
    ``{"class_logits": [R, K+1], "box_deltas": [R, K, 4]}``.
    """
    layout = zoo.stage_layout(depth, "imagenet", width)
    stage, blocks, width, strides = layout.stages[-1]
    options = options or BlockOptions()
    if in_channels is None:
        c4_width = layout.stages[-2][2]
        in_channels = c4_width * (4 if layout.block == "bottleneck" else 1)
    reg = options.regularizer()
    x_in = keras.Input((pooled_size, pooled_size, in_channels), name="pooled_rois")
    x = apply_stage(x_in, layout.block, blocks, width, strides, stage, options)
    x = keras.layers.GlobalAveragePooling2D(name="roi_pool_avg")(x)
    cls = keras.layers.Dense(num_classes + 1, kernel_regularizer=reg, dtype="float32",
                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                             name="cls_logits")(x)
    box = keras.layers.Dense(4 * num_classes, kernel_regularizer=reg, dtype="float32",
                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
                             name="box_deltas")(x)
    box = keras.layers.Reshape((num_classes, 4), name="box_deltas_per_class")(box)
    return keras.Model(x_in, {"class_logits": cls, "box_deltas": box}, name=name)


def load_backbone_weights(model, classifier):
    """Copy every layer of ``model`` that the classifier has (by name:
    conv1..conv4 in the trunk, conv5 in the RoI head) from ``classifier``.

    Returns the list of layer names copied. Shapes are checked first; a
    mismatch names the first layer that differs.
    """
    source = named_weights(classifier)
    mine = {l.name for l in weighted_layers(model)}
    shared = {n: w for n, w in source.items() if n in mine}
    skip = tuple(n for n in mine if n not in shared)
    assign_by_name(model, shared, source=f"classifier {classifier.name!r}", skip=skip)
    return sorted(shared)


def freeze_backbone(parts, freeze_at, frozen_bn):
    """Freeze a fine-tuned backbone's early layers and, optionally, its BN,
    in place (the detector's trunk and conv5 head; the localizer's trunk).

    Args:
        parts: Keras models whose layers carry the classifier's names.
        freeze_at: int >= 0. 0 trains every layer; 1 freezes the stem
            (``conv1_*``); 2 or more also conv2_x (``FROZEN_PREFIXES``).
        frozen_bn: every ``BatchNorm`` in inference mode with its statistics
            fixed (the paper's detector: BN statistics from ImageNet).
    Raises:
        ValueError: a negative ``freeze_at``.
    """
    if int(freeze_at) < 0:
        raise ValueError(f"freeze_at must be 0 (train everything), 1 (freeze the stem) "
                         f"or 2 (also conv2_x), got {freeze_at}.")
    prefixes = FROZEN_PREFIXES[min(int(freeze_at), max(FROZEN_PREFIXES))]
    for part in parts:
        for layer in part.layers:
            if frozen_bn and isinstance(layer, BatchNorm):
                layer.trainable = False  # inference mode, statistics fixed
            if prefixes and layer.name.startswith(prefixes):
                layer.trainable = False
