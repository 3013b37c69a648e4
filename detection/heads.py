"""The RPN head and the paper's C4 RoI head (conv5_x on each RoI).

The RoI head reuses ``resnet_tf.blocks.apply_stage`` with the classifier's
layer names (``conv5_block{b}_{i}_conv`` ...), so a classifier's conv5_x
weights load into it by name (``load_backbone_weights``). With global
context (Appendix B) only its sibling layers grow; ``Conv5HeadParts`` runs
conv5_x + pooling and the siblings apart (global context, multi-scale maxout).
"""

import keras

from resnet_tf import zoo
from resnet_tf.blocks import BlockOptions, apply_stage
from resnet_tf.layers import BatchNorm
from resnet_tf.weights import assign_by_name, named_weights, weighted_layers

# freeze_at -> the layer-name prefixes kept fixed: the stem (conv1_*), then
# also conv2_x (detectron2's MODEL.BACKBONE.FREEZE_AT, default 2 as the detector's).
FROZEN_PREFIXES = {0: (), 1: ("conv1",), 2: ("conv1", "conv2")}

# The conv5 head's input, its pooled feature, and (global context) the
# concatenation of region and global features: the names ``Conv5HeadParts``
# splits the head at.
POOLED_INPUT, FEATURE_LAYER, CONTEXT_LAYER = "pooled_rois", "roi_pool_avg", "global_context"


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
                     in_channels=None, name="roi_head", width=None, global_context=False):
    """conv5_x (stride 2 in its first block) on pooled RoIs, global average
    pooling, and two siblings: (K+1)-way class logits and class-specific
    box deltas (Appendix A, "RoI pooling before conv5_1").

    Args:
        num_classes: K foreground classes (class 0 is background).
        depth: the ImageNet depth whose conv5_x to build (18..152).
        options: ``BlockOptions`` (the detector's; BN is frozen by the model).
        width: the backbone's first-stage width (None: 64); conv5_x has 8x.
        global_context: Appendix B's global context: the siblings take each
            region's feature concatenated with its image's global feature
            (the whole image pooled as one more RoI through the same conv5_x
            and pooling), so they grow from D to 2D inputs; conv5_x is
            unchanged, and every layer keeps its name.
    Input [R, pooled_size, pooled_size, C4 channels] (with ``global_context``
    a dict: that as ``"pooled_rois"``, and ``"global_features"`` float
    [R, D], D conv5_x's channels); outputs ``{"class_logits": [R, K+1],
    "box_deltas": [R, K, 4]}``. ``Conv5HeadParts`` runs the two halves
    (conv5_x + pooling, the siblings) on their own.
    """
    layout = zoo.stage_layout(depth, "imagenet", width)
    stage, blocks, width, strides = layout.stages[-1]
    options = options or BlockOptions()
    if in_channels is None:
        c4_width = layout.stages[-2][2]
        in_channels = c4_width * (4 if layout.block == "bottleneck" else 1)
    reg = options.regularizer()
    x_in = keras.Input((pooled_size, pooled_size, in_channels), name=POOLED_INPUT)
    x = apply_stage(x_in, layout.block, blocks, width, strides, stage, options)
    x = keras.layers.GlobalAveragePooling2D(name=FEATURE_LAYER)(x)
    inputs = x_in
    if global_context:
        g_in = keras.Input((x.shape[-1],), name="global_features")
        inputs = {POOLED_INPUT: x_in, "global_features": g_in}
        x = keras.layers.Concatenate(name=CONTEXT_LAYER)([x, g_in])
    cls = keras.layers.Dense(num_classes + 1, kernel_regularizer=reg, dtype="float32",
                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                             name="cls_logits")(x)
    box = keras.layers.Dense(4 * num_classes, kernel_regularizer=reg, dtype="float32",
                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
                             name="box_deltas")(x)
    box = keras.layers.Reshape((num_classes, 4), name="box_deltas_per_class")(box)
    return keras.Model(inputs, {"class_logits": cls, "box_deltas": box}, name=name)


class Conv5HeadParts:
    """The two halves of a ``build_conv5_head`` model, sharing its layers
    (and so its weights): ``features`` (conv5_x + average pooling) and
    ``siblings`` (the class and box layers). The detector runs them apart
    to pool the global-context RoI and to merge scales (maxout) before the
    siblings (Appendix B).

    A plain object, not a Keras layer, so a model that holds it saves and
    loads exactly the head's own variables (the weights file's layout is
    unchanged by it).
    """

    def __init__(self, head):
        self.head = head
        self.global_context = CONTEXT_LAYER in [l.name for l in head.layers]
        self.features = keras.Model(head.get_layer(POOLED_INPUT).output,
                                    head.get_layer(FEATURE_LAYER).output,
                                    name=f"{head.name}_features")

    def siblings(self, features, global_features=None):
        """Class logits and box deltas from pooled features.

        Args:
            features: float [N, D], ``features``' output.
            global_features: float [N, D], each row's image's global feature;
                required exactly when the head has global context.
        Returns:
            ``{"class_logits": float32 [N, K+1], "box_deltas": float32
            [N, K, 4]}``.
        Raises:
            ValueError: ``global_features`` given to a head without context,
                or missing for one with it.
        """
        if (global_features is not None) != self.global_context:
            raise ValueError(f"the RoI head {self.head.name!r} was built with "
                             f"global_context={self.global_context}; pass global_features "
                             f"{'with' if self.global_context else 'only with'} it.")
        if self.global_context:
            features = self.head.get_layer(CONTEXT_LAYER)([features, global_features])
        box = self.head.get_layer("box_deltas")(features)
        return {"class_logits": self.head.get_layer("cls_logits")(features),
                "box_deltas": self.head.get_layer("box_deltas_per_class")(box)}


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
