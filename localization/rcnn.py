"""The localizer's second stage: an R-CNN on warped proposals (Appendix C,
Table 13 "RPN+RCNN").

    stage 1 (``localization.model.Localizer``, the per-class RPN): for a class
        c, its N highest-scored boxes (``top_proposals``; the paper's N = 200)
    each box -> cropped from the image and warped to S x S
        (``localization.data.rcnn.warp_regions``; the paper's S = 224)
    warped regions -> ``RegionClassifier``: the classifier's own network
        (stem .. last stage, global average pooling), fine-tuned, then two
        sibling dense layers in per-class form:
            rcnn_cls: C + 1 logits (softmax; 0 background, c + 1 class c)
            rcnn_reg: C x 4 deltas (one regressor per class)
    class c's answer: the proposal whose class-(c + 1) probability is the
        highest, regressed with class c's deltas (``RegionClassifier.rescore``)

Why an R-CNN and not a Fast R-CNN head on shared features: an ILSVRC image
mostly holds one dominant object, so its proposals overlap heavily and the
RoIs of one image are near copies; the paper trains RoI-centric instead,
each mini-batch drawn from many images (``localization.data.rcnn``).

Classification is C + 1-way (a background class added), the form the
detector's head and ``detection.losses.head_losses`` use: a region is
labelled with the image's class when its IoU with a ground-truth box is at
least 0.5 (R-CNN's fine-tuning threshold) and background otherwise; its
regression target is the matched box, encoded with ``detection.box_coder``'s
head weights (10, 10, 5, 5). The C-way alternative would need a separate
background decision; C + 1 lets a background-looking proposal lose to a
tight one of the same class.

Boxes are float32 ``[..., 4]`` (ymin, xmin, ymax, xmax) pixels of the view
the regions are cropped from.
"""

import keras
from keras import ops

from detection import losses
from detection.box_coder import HEAD_WEIGHTS, BoxCoder
from detection.heads import freeze_backbone, load_backbone_weights
from resnet_tf import zoo
from resnet_tf.backbone import apply_trunk
from resnet_tf.blocks import BlockOptions

LOSS_NAMES = ("rcnn_cls", "rcnn_reg")


def top_proposals(localizer, features, classes, image_size, num_proposals):
    """The per-class RPN's ``num_proposals`` highest-scored boxes of each
    chosen class (no NMS: the paper keeps the top boxes as they are).

    Args:
        localizer: a ``localization.model.Localizer``.
        features: [B, H, W, F] its trunk features of images of ``image_size``.
        classes: int [B, K].
        image_size: (height, width) of the network input, for clipping.
        num_proposals: N; at most the number of anchors M of the map (fewer
            anchors: all M, ``min(N, M)`` returned).
    Returns:
        ``(scores float32 [B, K, N] sigmoid of the logits, best first,
        boxes float32 [B, K, N, 4] input pixels, clipped)``.
    """
    cls, reg = localizer.head.for_classes(features, classes)
    b, k = ops.shape(cls)[0], ops.shape(cls)[-1]
    cls = ops.transpose(ops.reshape(ops.cast(cls, "float32"), (b, -1, k)), (0, 2, 1))
    reg = ops.transpose(ops.reshape(ops.cast(reg, "float32"), (b, -1, k, 4)), (0, 2, 1, 3))
    anchors = localizer.anchors_for(features)  # [M, 4]
    n = min(int(num_proposals), int(cls.shape[-1])) if cls.shape[-1] is not None \
        else int(num_proposals)
    logits, idx = ops.top_k(cls, k=n)  # [B, K, N]
    deltas = ops.take_along_axis(reg, idx[..., None], axis=2)
    boxes = localizer.coder.decode(deltas, ops.take(anchors, idx, axis=0))
    h, w = ops.cast(image_size[0], "float32"), ops.cast(image_size[1], "float32")
    boxes = ops.clip(boxes, 0.0, ops.reshape(ops.stack([h, w, h, w]), (1, 1, 1, 4)))
    return ops.sigmoid(logits), boxes


@keras.saving.register_keras_serializable(package="localization")
class RegionClassifier(keras.Model):
    """The R-CNN of the localizer's second stage.

    Args:
        classifier: the classifier's ``ResNet.get_config()``; its
            architecture (stem .. last stage) is the network, its layer
            names let ``load_classifier_weights`` copy the weights.
        class_names: C names (default "0".."C-1").
        warp_size: S, the side regions are warped to (paper: 224).
        frozen_bn: BN in inference mode with fixed statistics.
        freeze_at: 0 trains the whole trunk; 1 freezes the stem; 2 also conv2_x.
        weight_decay: lambda of every kernel.
        seed: the sibling layers' initialisation.

    Input: float32 [N, S, S, 3] warped regions, preprocessed (mean
    subtracted). Output: ``{"class_logits": float32 [N, C + 1],
    "box_deltas": float32 [N, C, 4]}``. Training targets ``y``:
    ``{"classes": int32 [N] (0 background, c + 1 class c), "deltas": float32
    [N, 4] (the matched box encoded against the region's box, head weights;
    read where classes > 0)}``.
    """

    def __init__(self, classifier, class_names=None, warp_size=224, frozen_bn=True,
                 freeze_at=0, weight_decay=1e-4, seed=0, **kwargs):
        super().__init__(**kwargs)
        cfg = {k: v for k, v in dict(classifier).items() if k not in ("trainable",)}
        layout = zoo.stage_layout(cfg.get("depth", 50), cfg.get("family"), cfg.get("width"))
        num_classes = int(cfg.get("classes") or layout.default_classes)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for a classifier with "
                             f"{num_classes} classes.")
        if int(warp_size) < 8:
            raise ValueError(f"warp_size must be >= 8 pixels, got {warp_size}.")
        # === Config ===
        self.classifier_config = cfg
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(k) for k in range(num_classes)])
        self.warp_size = int(warp_size)
        self.frozen_bn, self.freeze_at = bool(frozen_bn), int(freeze_at)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)

        # === Layers ===
        options = BlockOptions.of_classifier(cfg, layout, weight_decay)
        regions = keras.Input((None, None, 3), name="regions")
        features = apply_trunk(regions, layout, options)[layout.levels[-1]]
        pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
        self.trunk = keras.Model(regions, pooled, name="trunk")
        reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
        # Fast R-CNN's initialisation of the siblings: N(0, 0.01^2), N(0, 0.001^2).
        self.cls = keras.layers.Dense(
            num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(
                stddev=0.01, seed=self.seed), kernel_regularizer=reg, name="rcnn_cls")
        self.reg = keras.layers.Dense(
            num_classes * 4, kernel_initializer=keras.initializers.RandomNormal(
                stddev=0.001, seed=self.seed + 1), kernel_regularizer=reg, name="rcnn_reg")
        self.coder = BoxCoder(HEAD_WEIGHTS)
        self.loss_trackers = {n: keras.metrics.Mean(name=n) for n in LOSS_NAMES}
        freeze_backbone((self.trunk,), self.freeze_at, self.frozen_bn)

    def ensure_built(self):
        """Run once on a blank region so every variable exists."""
        if not self.built:
            self(ops.zeros((1, self.warp_size, self.warp_size, 3)))
        return self

    def load_classifier_weights(self, classifier):
        """Copy a classifier's weights into the trunk by layer name (stem ..
        last stage); returns the layer names copied. The sibling layers
        start from their initialisers."""
        self.ensure_built()
        return load_backbone_weights(self.trunk, classifier)

    def call(self, regions, training=False):
        h = self.trunk(regions, training=training)
        logits = ops.cast(self.cls(h), "float32")
        deltas = ops.cast(self.reg(h), "float32")
        return {"class_logits": logits,
                "box_deltas": ops.reshape(deltas, (-1, self.num_classes, 4))}

    def rescore(self, head, classes, boxes, image_size):
        """Each region's score and regressed box for its class.

        Args:
            head: this model's output for N regions.
            classes: int [N], the class each region is scored for.
            boxes: float32 [N, 4], the regions' boxes (view pixels).
            image_size: (height, width) of the view, for clipping.
        Returns:
            ``(scores float32 [N] softmax probability of class c + 1,
            boxes float32 [N, 4] decoded with class c's deltas, clipped)``.
        """
        classes = ops.cast(classes, "int32")
        probs = ops.softmax(head["class_logits"], axis=-1)
        scores = ops.take_along_axis(probs, (classes + 1)[:, None], axis=1)[:, 0]
        deltas = ops.take_along_axis(head["box_deltas"], classes[:, None, None], axis=1)[:, 0]
        out = self.coder.decode(deltas, ops.cast(boxes, "float32"))
        h, w = ops.cast(image_size[0], "float32"), ops.cast(image_size[1], "float32")
        return scores, ops.clip(out, 0.0, ops.reshape(ops.stack([h, w, h, w]), (1, 4)))

    # --- training --------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        if y is None:
            raise ValueError("RegionClassifier trains with targets y={'classes', 'deltas'}.")
        v = losses.head_losses(y_pred["class_logits"], y_pred["box_deltas"], y["classes"],
                               ops.ones_like(y["classes"], dtype="bool"),
                               ops.cast(y["deltas"], "float32"))
        values = {"rcnn_cls": v["head_class"], "rcnn_reg": v["head_box"]}
        for name in LOSS_NAMES:
            self.loss_trackers[name].update_state(values[name])
        return losses.total_loss([values[n] for n in LOSS_NAMES], self.losses)

    @property
    def metrics(self):
        return super().metrics + list(self.loss_trackers.values())

    def get_config(self):
        return {"classifier": self.classifier_config, "class_names": self.class_names,
                "warp_size": self.warp_size, "frozen_bn": self.frozen_bn,
                "freeze_at": self.freeze_at, "weight_decay": self.weight_decay,
                "seed": self.seed, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
