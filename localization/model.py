"""The localizer: a classifier for the class guesses, a per-class RPN for the
boxes (Appendix C). Wiring only.

    images -> classifier (a frozen copy of the --init-from classifier) -> class probabilities
    images -> trunk (the classifier's stem .. feature level, fine-tuned) -> features
    features -> PerClassRPNHead -> per anchor: C logits, C x 4 deltas

Feature level: by default the classifier's last stage (ImageNet: conv5_x,
``C5``, stride 32, 7 x 7 cells on a 224 crop; CIFAR nets: ``C4``, stride 4).
The classification network's own final convolutional features are what the
paper's localizer sits on, and their receptive field covers whole objects,
which ILSVRC's mostly large boxes need. ``feature_level="C4"`` (stride 16)
gives a finer grid.

Anchors (``detection.anchors.AnchorGenerator``): translation invariant, at
every cell; default 3 scales (64, 128, 256 px: sqrt of the area) x 3 aspect
ratios (h / w = 0.5, 1, 2) = 9 per cell, sized for 224 crops in which an
ILSVRC object typically spans half the image. Regression is relative to
them with ``detection.box_coder``'s RPN weights (1, 1, 1, 1).

Training (``compute_loss``, so stock ``model.fit`` trains it): the
detector's RPN target assignment,
``detection.targets.label_and_sample_anchors``: anchors are matched to the
image's boxes (positive at IoU >= 0.7, negative below 0.3, each box's best
anchors positive), and 8 anchors per image are sampled (at most half
positive: 1:1 when the crop has enough positives), a new sample every step
from the model's ``SeedGenerator``. Only the image's ground-truth class c
receives a loss: dimension c of ``cls`` on the 8 sampled anchors
(logistic loss, target 1 for positives and 0 for negatives) and the 4
dimensions of class c's regressor of ``reg`` on the sampled positives
(smooth L1 against the encoded box). The other C - 1 logits and (C - 1) x 4
deltas get no gradient from that image (they learn from images of their
own class). Both losses are divided by the number of sampled anchors, as in
``detection.losses.rpn_losses``, which computes them.

Testing: the classifier's top-k classes (k = 5); for each, the anchor with
the highest class-c logit over the whole map, decoded with class c's deltas
and clipped to the image, is that class's box.

Inputs ``x``: float32 [B, H, W, 3], preprocessed (mean subtracted).
Targets ``y``: ``{"labels": int32 [B] (class index), "boxes": float32
[B, G, 4] internal format (ymin, xmin, ymax, xmax) pixels, padded -1}``.
Inference output: ``{"probabilities": [B, C], "classes": [B, k],
"scores": [B, k] (sigmoid of the best anchor's logit), "boxes": [B, k, 4]}``.
"""

import keras
from keras import ops

from detection import losses
from detection.anchors import AnchorGenerator
from detection.box_coder import RPN_WEIGHTS, BoxCoder
from detection.heads import freeze_backbone, load_backbone_weights
from detection.matcher import Matcher
from detection.targets import label_and_sample_anchors
from localization.head import PerClassRPNHead
from resnet_tf import zoo
from resnet_tf.backbone import ResNet, apply_trunk
from resnet_tf.blocks import BlockOptions

LOSS_NAMES = ("loc_cls", "loc_reg")
DEFAULT_SCALES = (64, 128, 256)
DEFAULT_RATIOS = (0.5, 1.0, 2.0)


@keras.saving.register_keras_serializable(package="localization")
class Localizer(keras.Model):
    """The paper's per-class RPN localizer.

    Args:
        classifier: the classifier's ``ResNet.get_config()`` (depth, family,
            shortcut, classes...); its copy gives the class guesses and its
            architecture the trunk.
        class_names: C names (default "0".."C-1").
        feature_level: "C2".."C5"; None = the classifier's last stage.
        anchor_scales, anchor_ratios, anchor_offset: see ``AnchorGenerator``.
        head_channels: the head's 3x3 conv width (0: none).
        anchors_per_image, positive_fraction: the sample (paper: 8, 1:1).
        positive_iou, negative_iou: the matcher's thresholds.
        frozen_bn: trunk BN in inference mode with fixed statistics.
        freeze_at: 0 trains the whole trunk; 1 freezes the stem; 2 also conv2_x.
        weight_decay: the head's and trunk's lambda.
        top_k: classes localized at test time.
        seed: the head's initialisation and the anchor sampling seed (it
            seeds the model's ``SeedGenerator``: a new sample every step).
    """

    def __init__(self, classifier, class_names=None, feature_level=None,
                 anchor_scales=DEFAULT_SCALES, anchor_ratios=DEFAULT_RATIOS,
                 anchor_offset=0.0, head_channels=512, anchors_per_image=8,
                 positive_fraction=0.5, positive_iou=0.7, negative_iou=0.3,
                 frozen_bn=True, freeze_at=0, weight_decay=1e-4, top_k=5, seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        cfg = {k: v for k, v in dict(classifier).items() if k not in ("trainable",)}
        if not cfg.get("include_top", True):
            raise ValueError("the localizer needs a classifier with its top "
                             "(include_top=True): its predictions are the class guesses.")
        layout = zoo.stage_layout(cfg.get("depth", 50), cfg.get("family"), cfg.get("width"))
        num_classes = int(cfg.get("classes") or layout.default_classes)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for a classifier with "
                             f"{num_classes} classes.")
        level = feature_level or layout.levels[-1]
        # === Config ===
        self.classifier_config = cfg
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(k) for k in range(num_classes)])
        self.feature_level = level
        self.stride = layout.stride(level)
        self.anchor_scales = tuple(float(s) for s in anchor_scales)
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.anchor_offset = float(anchor_offset)
        self.head_channels = int(head_channels)
        self.anchors_per_image = int(anchors_per_image)
        self.positive_fraction = float(positive_fraction)
        self.positive_iou, self.negative_iou = float(positive_iou), float(negative_iou)
        self.frozen_bn, self.freeze_at = bool(frozen_bn), int(freeze_at)
        self.weight_decay = float(weight_decay)
        self.top_k = int(top_k)
        self.seed = int(seed)

        # === Layers ===
        self.classifier = ResNet(**{**cfg, "input_shape": None, "name": "classifier"})
        self.classifier.trainable = False  # its predictions are kept as they are
        options = BlockOptions.of_classifier(cfg, layout, weight_decay)
        images = keras.Input((None, None, 3), name="images")
        features = apply_trunk(images, layout, options, last_level=level)[level]
        self.trunk = keras.Model(images, features, name="trunk")
        self.anchor_generator = AnchorGenerator(self.stride, self.anchor_scales,
                                                self.anchor_ratios, self.anchor_offset)
        self.head = PerClassRPNHead(num_classes, self.anchor_generator.num_anchors,
                                    conv_channels=self.head_channels,
                                    weight_decay=weight_decay, seed=self.seed,
                                    name="per_class_rpn")
        self.matcher = Matcher(self.positive_iou, self.negative_iou,
                               allow_low_quality_matches=True)
        self.coder = BoxCoder(RPN_WEIGHTS)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_trackers = {n: keras.metrics.Mean(name=n) for n in LOSS_NAMES}
        freeze_backbone((self.trunk,), self.freeze_at, self.frozen_bn)

    def ensure_built(self, size=None):
        """Run once on a blank image so every variable exists."""
        if not self.built:
            size = size or (224 if self.classifier.family == "imagenet" else 32)
            self(ops.zeros((1, size, size, 3)))
        return self

    def load_classifier_weights(self, classifier):
        """Copy a classifier's weights: all of them into the frozen
        classifier copy, and by layer name into the trunk. Returns the trunk
        layer names copied."""
        self.ensure_built()
        self.classifier.set_weights(classifier.get_weights())
        return load_backbone_weights(self.trunk, classifier)

    # --- forward -------------------------------------------------------------

    def classify(self, images):
        """float32 [B, C]: the classifier's probabilities."""
        return ops.cast(self.classifier(images, training=False), "float32")

    def features(self, images, training=False):
        return self.trunk(images, training=training)

    def anchors_for(self, features):
        shape = ops.shape(features)
        return self.anchor_generator(shape[1], shape[2])

    def localize(self, features, classes, image_size):
        """The best anchor of each chosen class, decoded.

        Args:
            features: [B, H, W, F] trunk features of images of ``image_size``.
            classes: int [B, K].
            image_size: (height, width) of the network input, for clipping.
        Returns:
            ``(scores float32 [B, K] sigmoid of the best logit, boxes float32
            [B, K, 4] input pixels)``.
        """
        cls, reg = self.head.for_classes(features, classes)
        b, k = ops.shape(cls)[0], ops.shape(cls)[-1]
        cls = ops.reshape(ops.cast(cls, "float32"), (b, -1, k))  # [B, M, K]
        reg = ops.reshape(ops.cast(reg, "float32"), (b, -1, k, 4))
        best = ops.argmax(cls, axis=1)  # [B, K]
        logits = ops.max(cls, axis=1)
        deltas = ops.take_along_axis(reg, best[:, None, :, None], axis=1)[:, 0]  # [B, K, 4]
        anchors = ops.take(self.anchors_for(features), best, axis=0)  # [B, K, 4]
        boxes = self.coder.decode(deltas, anchors)
        h, w = ops.cast(image_size[0], "float32"), ops.cast(image_size[1], "float32")
        boxes = ops.clip(boxes, 0.0, ops.reshape(ops.stack([h, w, h, w]), (1, 1, 4)))
        return ops.sigmoid(logits), boxes

    def call(self, images, training=False):
        features = self.features(images, training=training)
        if training:
            return {"features": features, "anchors": self.anchors_for(features)}
        probs = self.classify(images)
        k = min(self.top_k, self.num_classes)
        _, classes = ops.top_k(probs, k=k)
        shape = ops.shape(images)
        scores, boxes = self.localize(features, classes, (shape[1], shape[2]))
        return {"probabilities": probs, "classes": ops.cast(classes, "int32"),
                "scores": scores, "boxes": boxes}

    # --- training --------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        if y is None or "features" not in y_pred:
            raise ValueError("Localizer trains with targets y={'labels', 'boxes'}.")
        values = self.loss_values(y_pred["features"], y_pred["anchors"], y["labels"],
                                  y["boxes"])
        for name in LOSS_NAMES:
            self.loss_trackers[name].update_state(values[name])
        return losses.total_loss([values[n] for n in LOSS_NAMES], self.losses)

    def loss_values(self, features, anchors, labels, gt_boxes):
        """``{"loc_cls", "loc_reg"}`` for a batch (see the module docstring
        for which dimensions receive a loss)."""
        gt_boxes = ops.cast(gt_boxes, "float32")
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        cls, reg = self.head.for_classes(features, labels[:, None])  # the GT class only
        b = ops.shape(gt_boxes)[0]
        cls = ops.reshape(cls, (b, -1))  # [B, M]
        reg = ops.reshape(reg, (b, -1, 4))
        t = label_and_sample_anchors(anchors, gt_boxes, self.matcher, self.coder,
                                     self.anchors_per_image, self.positive_fraction,
                                     self.seed_generator)
        v = losses.rpn_losses(cls, reg, t.labels, t.sampled, t.deltas)
        return {"loc_cls": v["rpn_objectness"], "loc_reg": v["rpn_box"]}

    @property
    def metrics(self):
        return super().metrics + list(self.loss_trackers.values())

    def get_config(self):
        return {
            "classifier": self.classifier_config, "class_names": self.class_names,
            "feature_level": self.feature_level, "anchor_scales": list(self.anchor_scales),
            "anchor_ratios": list(self.anchor_ratios), "anchor_offset": self.anchor_offset,
            "head_channels": self.head_channels,
            "anchors_per_image": self.anchors_per_image,
            "positive_fraction": self.positive_fraction,
            "positive_iou": self.positive_iou, "negative_iou": self.negative_iou,
            "frozen_bn": self.frozen_bn, "freeze_at": self.freeze_at,
            "weight_decay": self.weight_decay, "top_k": self.top_k, "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
