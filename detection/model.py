"""Faster R-CNN with the paper's C4 layout (Appendix A): wiring only.

    images -> trunk (stem .. conv4_x, stride 16) -> C4
    C4 -> RPN head -> objectness, deltas -> proposal layer -> RoIs
    C4, RoIs -> RoIAlign (or RoIPool) 14x14 -> conv5_x (stride 2) -> mean
          -> (K+1)-way class logits and class-specific box deltas

Training is the approximate joint training of Ren et al.: ``compute_loss``
builds the targets from ``y`` with ``detection.targets`` (anchors matched at
0.7/0.3 and sampled 256 per image, half positive at most; proposals matched
at 0.5 and sampled 128 per image, a quarter foreground at most, ground-truth
boxes added to the proposals; a new sample every step from the model's
``SeedGenerator``), so stock ``model.fit`` trains it, and each loss is its
own metric.

Inputs ``x``: ``{"images": float32 [B, H, W, 3] (preprocessed, padded),
"image_sizes": float32 [B, 2] (height, width before padding)}``.
Targets ``y``: ``{"boxes": float32 [B, G, 4] internal format, padded -1,
"classes": int32 [B, G] in [0, K), padded -1}``.
Inference output: ``{"boxes": [B, D, 4], "scores": [B, D], "classes":
[B, D] (0-based, -1 padded), "num_detections": [B]}``.
"""

import keras
import tensorflow as tf

from detection import losses, multiscale
from detection.anchors import AnchorGenerator
from detection.box_coder import HEAD_WEIGHTS, RPN_WEIGHTS, BoxCoder
from detection.heads import (Conv5HeadParts, build_conv5_head, build_rpn_head,
                             freeze_backbone)
from detection.matcher import head_matcher, rpn_matcher
from detection.ops.boxes import is_valid
from detection.ops.nms import per_class_nms
from detection.ops.roi_align import roi_align, roi_pool
from detection.proposals import (PROPOSALS_CAPPED, ProposalConfig, budget_full,
                                  generate_proposals)
from detection.refine import refine_detections
from detection.targets import label_and_sample_anchors, label_and_sample_proposals
from resnet_tf import zoo
from resnet_tf.backbone import apply_trunk
from resnet_tf.blocks import BlockOptions

LOSS_NAMES = ("rpn_objectness", "rpn_box", "head_class", "head_box")
FEATURE_LEVEL = "C4"  # Appendix A: the RPN and RoI pooling sit on conv4_x


def build_variables(model, inputs):
    """Build ``model`` (a subclassed Keras model, unbuilt) as one call on
    ``inputs`` would: the variables the call creates, and ``model.built``,
    without the call's arithmetic.

    On the TensorFlow backend the call is traced into a graph that is never
    run (Keras creates variables outside the graph). An eager call runs every
    op: for the C4 detector on a 64-px blank image that is conv5_x on each of
    its test proposals: 4.5 s of CPU against 1.3 s traced for ResNet-18,
    8.8 s against 1.8 s for ResNet-50 (``benchmarks/model_build.py``, a 2-core
    AVX2 EPYC). The localizers keep the eager call: their heads build inside
    the call, so a trace traces twice and costs more (ResNet-50: 4.0 s
    against 2.6 s eager). TensorFlow only, as the detector is.

    Args:
        model: a ``keras.Model``; its ``call`` must trace without AutoGraph
            (no Python ``if`` on a tensor).
        inputs: what ``model`` takes (tensors or a dict of them; blank is fine).
    Returns:
        ``model``.
    """
    tf.function(lambda: model(inputs), autograph=False).get_concrete_function()
    return model


@keras.saving.register_keras_serializable(package="detection")
class FasterRCNN(keras.Model):
    """Faster R-CNN, ResNet C4.

    Args:
        num_classes: K foreground classes.
        depth: backbone depth (18, 34, 50, 101, 152).
        width: the backbone's first-stage width (None: Table 1's 64); take
            the classifier's when fine-tuning from one.
        class_names: K names (stored; used by predict and export).
        anchor_scales, anchor_ratios: anchor sizes (pixels) and h/w ratios.
        rpn_batch, rpn_positive_fraction: anchors sampled per image.
        roi_batch, roi_positive_fraction: RoIs sampled per image.
        proposals: a ``ProposalConfig`` as a dict.
        pooler: "align" (RoIAlign) or "pool" (RoIPool); ``pooled_size``.
        frozen_bn: BN in inference mode with fixed statistics (the paper);
            False trains BN (from-scratch mode).
        freeze_at: freeze the stem (1) and also conv2_x (2, default); 0 trains
            everything.
        weight_decay: the paper's lambda.
        score_threshold, detection_nms, max_detections: test-time per-class
            NMS settings.
        box_refinement: test-time box refinement with box voting (Appendix
            B, ``detection.refine``): a second head pass on each RoI's
            regressed box, per-class NMS at ``refinement_nms`` over both
            passes, then voting at ``voting_iou``. Off by default (it runs
            the head twice).
        refinement_nms, voting_iou: its NMS IoU (0.3) and least voter IoU
            (0.5).
        global_context: Appendix B's global context (train and test): the
            whole image is pooled as one more RoI, run through the same
            conv5_x and pooling, and its feature is concatenated with each
            region's before the sibling layers (which grow from D to 2D
            inputs). Off by default (one more RoI per image).
        test_scales: Appendix B's multi-scale testing: increasing shorter
            sides (the paper's 200, 400, 600, 800, 1000) of an image
            pyramid whose C4 features the RoI head reads at test time; each
            RoI's head feature is the maxout of its two adjacent levels
            nearest ``scale_target`` squared (``detection.multiscale``).
            Proposals still come from the input scale, and a level at the
            input scale reuses its C4. None (default): single-scale testing.
        scale_target: the side (pixels, > 0) whose square a RoI's area at
            its chosen level is closest to, in multi-scale testing: the
            paper's 224 (the 224 x 224 training crops, default); a detector
            trained on objects of another size sets its typical side.
        seed: the sampling seed: it seeds the model's ``SeedGenerator``, which
            draws a new anchor and RoI sample every step.
        stride_on, conv_bias, bn_epsilon: the backbone layout (``ResNet``'s
            arguments); take the classifier's when fine-tuning from one, so
            imported v1 (keras.applications: "1x1", bias, 1.001e-5) and v1.5
            (torchvision: "3x3", no bias, 1e-5) weights load exactly.
    """

    def __init__(self, num_classes, depth=50, class_names=None,
                 anchor_scales=(128, 256, 512), anchor_ratios=(0.5, 1.0, 2.0),
                 rpn_batch=256, rpn_positive_fraction=0.5, roi_batch=128,
                 roi_positive_fraction=0.25, proposals=None, pooler="align",
                 pooled_size=14, frozen_bn=True, freeze_at=2, weight_decay=1e-4,
                 score_threshold=0.05, detection_nms=0.5, max_detections=100,
                 seed=0, width=None, stride_on="1x1", conv_bias=False, bn_epsilon=1e-5,
                 global_context=False, test_scales=None, scale_target=multiscale.TARGET_SIZE,
                 box_refinement=False, refinement_nms=0.3, voting_iou=0.5,
                 **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if pooler not in ("align", "pool"):
            raise ValueError(f"pooler must be 'align' or 'pool', got {pooler!r}.")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes.")
        layout = zoo.stage_layout(depth, "imagenet", width)
        # === Config ===
        self.num_classes = int(num_classes)
        self.depth = layout.depth
        self.width = layout.width
        self.class_names = list(class_names or [str(k) for k in range(num_classes)])
        self.anchor_scales = tuple(anchor_scales)
        self.anchor_ratios = tuple(anchor_ratios)
        self.rpn_batch, self.rpn_positive_fraction = int(rpn_batch), rpn_positive_fraction
        self.roi_batch, self.roi_positive_fraction = int(roi_batch), roi_positive_fraction
        self.proposal_config = ProposalConfig(**(proposals or {}))
        self.pooler, self.pooled_size = pooler, int(pooled_size)
        self.frozen_bn, self.freeze_at = bool(frozen_bn), int(freeze_at)
        self.weight_decay = float(weight_decay)
        self.score_threshold = float(score_threshold)
        self.detection_nms = float(detection_nms)
        self.max_detections = int(max_detections)
        for name, value in (("refinement_nms", refinement_nms), ("voting_iou", voting_iou)):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{name} must be an IoU in (0, 1], got {value!r}.")
        self.box_refinement = bool(box_refinement)
        self.refinement_nms, self.voting_iou = float(refinement_nms), float(voting_iou)
        self.seed = int(seed)
        self.stride_on, self.conv_bias = stride_on, bool(conv_bias)
        self.bn_epsilon = float(bn_epsilon)
        self.global_context = bool(global_context)
        self.test_scales = multiscale.check_scales(test_scales)
        target = multiscale.check_target(scale_target)
        self.scale_target = int(target) if target.is_integer() else target

        # === Layers ===
        options = BlockOptions(shortcut="B", weight_decay=weight_decay, stride_on=stride_on,
                               conv_bias=self.conv_bias, bn_epsilon=self.bn_epsilon)
        images = keras.Input((None, None, 3), name="images")
        c4 = apply_trunk(images, layout, options, last_level=FEATURE_LEVEL)[FEATURE_LEVEL]
        self.trunk = keras.Model(images, c4, name="trunk")
        c4_channels = c4.shape[-1]
        self.feature_stride = layout.stride(FEATURE_LEVEL)  # 16 pixels per C4 cell
        self.anchor_generator = AnchorGenerator(self.feature_stride, self.anchor_scales,
                                                self.anchor_ratios)
        self.rpn_head = build_rpn_head(c4_channels, self.anchor_generator.num_anchors,
                                       weight_decay=weight_decay)
        self.roi_head = build_conv5_head(num_classes, depth, options, self.pooled_size,
                                         c4_channels, width=self.width,
                                         global_context=self.global_context)
        # conv5_x + pooling and the siblings, run apart (context, maxout);
        # a plain object, so the weights file keeps its layout.
        self.head_parts = Conv5HeadParts(self.roi_head)
        self.rpn_matcher = rpn_matcher()  # 0.7 / 0.3, each box's best anchors
        self.head_matcher = head_matcher()  # 0.5
        self.rpn_coder = BoxCoder(RPN_WEIGHTS)
        self.head_coder = BoxCoder(HEAD_WEIGHTS)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_trackers = {n: keras.metrics.Mean(name=n) for n in LOSS_NAMES}
        # Fraction of training images whose post-NMS proposals filled the budget.
        self.proposals_capped = keras.metrics.Mean(name=PROPOSALS_CAPPED)
        freeze_backbone((self.trunk, self.roi_head), self.freeze_at, self.frozen_bn)

    def ensure_built(self, size=64):
        """Create every variable (needed before loading weights or resuming
        with BackupAndRestore) by tracing a call on a blank ``size``-px image
        (``build_variables``: nothing is computed)."""
        if not self.built:
            build_variables(self, {"images": tf.zeros([1, size, size, 3]),
                                   "image_sizes": tf.constant([[size, size]], tf.float32)})
        return self

    # --- forward -------------------------------------------------------------

    def _pool(self, features, rois):
        fn = roi_align if self.pooler == "align" else roi_pool
        return fn(features, rois, output_size=self.pooled_size,
                  spatial_scale=1 / self.feature_stride)

    def _rpn(self, images, training):
        c4 = self.trunk(images, training=training)
        rpn = self.rpn_head(c4, training=training)
        shape = tf.shape(c4)
        anchors = self.anchor_generator(shape[1], shape[2])
        return c4, rpn, anchors

    def call(self, inputs, training=False):
        images, sizes = inputs["images"], tf.cast(inputs["image_sizes"], tf.float32)
        c4, rpn, anchors = self._rpn(images, training)
        if training:
            return {"c4": c4, "objectness": rpn["objectness"], "deltas": rpn["deltas"],
                    "anchors": anchors}
        if self.test_scales:  # the head reads the pyramid; proposals stay single-scale
            c4 = self.feature_pyramid(images, sizes, input_c4=c4)
        return self._detect(c4, rpn, anchors, sizes)

    def feature_pyramid(self, images, image_sizes, input_c4=None):
        """The trunk's C4 on the ``test_scales`` pyramid of ``images``
        (float [B, H, W, 3], preprocessed and padded; ``image_sizes``
        float32 [B, 2]), a ``multiscale.FeaturePyramid`` that
        ``head_outputs`` takes in place of C4. ``input_c4``, the trunk's
        C4 of ``images`` when already computed, is reused for a level at
        the input's own scale (``multiscale.pyramid_features``)."""
        return multiscale.pyramid_features(
            lambda level: self.trunk(level, training=False), images, image_sizes,
            self.test_scales, input_features=input_c4)

    def head_outputs(self, c4, rois, image_sizes, training=False):
        """The RoI head on a batch of RoIs: pool each from C4, run conv5_x
        and the sibling layers (Appendix A).

        With ``global_context``, each image's full box (0, 0, height, width)
        is pooled as one more RoI and its feature joins each region's before
        the siblings; given a ``multiscale.FeaturePyramid``, each RoI's
        feature is the maxout of its two selected levels (Appendix B).

        Args:
            c4: the trunk's C4 feature, [B, h, w, C] (stride ``feature_stride``),
                or a ``multiscale.FeaturePyramid`` of it (multi-scale testing).
            rois: float32 [B, R, 4] (ymin, xmin, ymax, xmax) pixels of the
                padded input; invalid rows (``is_valid`` false) are pooled
                but their outputs are meaningless.
            image_sizes: float32 [B, 2], (height, width) before padding.
            training: BN/dropout mode of the head.
        Returns:
            ``{"class_logits": [B*R, K+1], "box_deltas": [B*R, K, 4]}``, rows
            in (image, RoI) order; box deltas are ``head_coder`` deltas of
            each RoI.
        """
        if not self.global_context:
            return self.head_parts.siblings(self.region_features(c4, rois, training))
        b, r = tf.shape(rois)[0], tf.shape(rois)[1]
        whole = full_image_boxes(image_sizes)[:, None]  # [B, 1, 4]
        features = self.region_features(c4, tf.concat([tf.cast(rois, tf.float32), whole], 1),
                                        training)
        features = tf.reshape(features, tf.stack([b, r + 1, -1]))
        d = tf.shape(features)[-1]
        region = tf.reshape(features[:, :r], tf.stack([-1, d]))
        context = tf.repeat(features[:, r], r, axis=0)  # [B*R, D], image-major
        return self.head_parts.siblings(region, context)

    def region_features(self, c4, rois, training=False):
        """conv5_x + average pooling of each RoI: float [B*R, D], rows in
        (image, RoI) order.

        Args:
            c4: [B, h, w, C] C4, or a ``multiscale.FeaturePyramid``: then
                each RoI is pooled at its two ``multiscale.select_scales``
                levels and the two features are merged by maxout.
            rois: float32 [B, R, 4] (ymin, xmin, ymax, xmax) input pixels.
        """
        if not isinstance(c4, multiscale.FeaturePyramid):
            return self.head_parts.features(self._pool(c4, rois), training=training)
        first, second = (tf.reshape(i, [-1]) for i in
                         multiscale.select_scales(rois, c4.factors, self.scale_target))
        pooled = (self._pool(level, multiscale.scale_boxes(rois, c4.factors[k]))
                  for k, level in enumerate(c4.features))
        both = tf.concat(multiscale.take_levels(pooled, first, second), 0)
        a, b = tf.split(self.head_parts.features(both, training=training), 2)
        return multiscale.maxout(a, b)

    def decode_head(self, head, rois, image_sizes):
        """Class probabilities and class-specific boxes from ``head_outputs``.

        Args:
            head: ``head_outputs``' dict for ``rois``.
            rois: float32 [B, R, 4] pixels, (ymin, xmin, ymax, xmax).
            image_sizes: float32 [B, 2] (height, width) before padding.
        Returns:
            ``(boxes, probs)``: float32 [B, R, K, 4] pixels clipped to the
            image, and float32 [B, R, K] foreground probabilities (0 on
            invalid RoIs).
        """
        b, r = tf.shape(rois)[0], tf.shape(rois)[1]
        probs = tf.nn.softmax(tf.cast(head["class_logits"], tf.float32))[:, 1:]
        flat_rois = tf.reshape(rois, [-1, 1, 4])
        boxes = self.head_coder.decode(tf.cast(head["box_deltas"], tf.float32), flat_rois)
        hw = tf.cast(image_sizes, tf.float32)[:, None, None, :]
        boxes = tf.clip_by_value(tf.reshape(boxes, [b, r, self.num_classes, 4]), 0.0,
                                 tf.concat([hw, hw], -1))
        valid = tf.reshape(is_valid(flat_rois[:, 0]), [b, r, 1])
        probs = tf.where(valid, tf.reshape(probs, [b, r, self.num_classes]), 0.0)
        return boxes, probs

    def _detect(self, c4, rpn, anchors, sizes):
        rois, _, _ = generate_proposals(rpn["objectness"], rpn["deltas"], anchors, sizes,
                                        self.proposal_config, training=False)
        head = self.head_outputs(c4, rois, sizes)
        boxes, probs = self.decode_head(head, rois, sizes)
        if self.box_refinement:
            return refine_detections(self.head_outputs, self.decode_head, c4, rois, boxes,
                                     probs, sizes, max_detections=self.max_detections,
                                     score_threshold=self.score_threshold,
                                     nms_iou=self.refinement_nms, voting_iou=self.voting_iou)
        det_boxes, scores, classes, count = per_class_nms(
            boxes, probs, self.max_detections, self.max_detections,
            iou_threshold=self.detection_nms, score_threshold=self.score_threshold)
        return {"boxes": det_boxes, "scores": scores, "classes": classes,
                "num_detections": count}

    # --- training --------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        if y is None or "c4" not in y_pred:
            raise ValueError("FasterRCNN trains with targets y={'boxes', 'classes'}.")
        values = self.loss_values(y_pred, x["image_sizes"], y["boxes"], y["classes"])
        for name in LOSS_NAMES:
            self.loss_trackers[name].update_state(values[name])
        return losses.total_loss([values[n] for n in LOSS_NAMES], self.losses)

    def loss_values(self, y_pred, image_sizes, gt_boxes, gt_classes):
        """The four losses of a batch, ``{name: float32 scalar}`` for
        ``LOSS_NAMES``.

        Args:
            y_pred: ``call(..., training=True)``'s output.
            image_sizes: float32 [B, 2], (height, width) before padding.
            gt_boxes: float32 [B, G, 4] (ymin, xmin, ymax, xmax) pixels,
                padded -1.
            gt_classes: int [B, G] in [0, K), padded -1.
        Draws this step's anchor sample, then its RoI sample, from the
        model's ``SeedGenerator``.
        """
        gt_boxes = tf.cast(gt_boxes, tf.float32)
        anchors = y_pred["anchors"]
        rpn = label_and_sample_anchors(anchors, gt_boxes, self.rpn_matcher, self.rpn_coder,
                                       self.rpn_batch, self.rpn_positive_fraction,
                                       self.seed_generator)
        values = losses.rpn_losses(y_pred["objectness"], y_pred["deltas"], rpn.labels,
                                   rpn.sampled, rpn.deltas)
        proposals, _, count = generate_proposals(
            y_pred["objectness"], y_pred["deltas"], anchors,
            tf.cast(image_sizes, tf.float32), self.proposal_config, training=True)
        self.proposals_capped.update_state(
            budget_full(count, self.proposal_config.post_nms_train))
        roi = label_and_sample_proposals(proposals, gt_boxes, gt_classes, self.head_matcher,
                                         self.head_coder, self.roi_batch,
                                         self.roi_positive_fraction, self.seed_generator,
                                         stand_in_size=self.feature_stride)
        head = self.head_outputs(y_pred["c4"], tf.stop_gradient(roi.rois),
                                 tf.cast(image_sizes, tf.float32), training=True)
        flat = lambda t: tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))  # noqa: E731
        values.update(losses.head_losses(head["class_logits"], head["box_deltas"],
                                         flat(roi.classes), flat(roi.sampled),
                                         flat(roi.deltas)))
        return values

    @property
    def metrics(self):
        return super().metrics + list(self.loss_trackers.values()) + [self.proposals_capped]

    def get_config(self):
        return {
            "num_classes": self.num_classes, "depth": self.depth, "width": self.width,
            "class_names": self.class_names, "anchor_scales": list(self.anchor_scales),
            "anchor_ratios": list(self.anchor_ratios), "rpn_batch": self.rpn_batch,
            "rpn_positive_fraction": self.rpn_positive_fraction,
            "roi_batch": self.roi_batch, "roi_positive_fraction": self.roi_positive_fraction,
            "proposals": dict(self.proposal_config.__dict__), "pooler": self.pooler,
            "pooled_size": self.pooled_size, "frozen_bn": self.frozen_bn,
            "freeze_at": self.freeze_at, "weight_decay": self.weight_decay,
            "score_threshold": self.score_threshold, "detection_nms": self.detection_nms,
            "max_detections": self.max_detections, "seed": self.seed, "name": self.name,
            "stride_on": self.stride_on, "conv_bias": self.conv_bias,
            "bn_epsilon": self.bn_epsilon, "global_context": self.global_context,
            "test_scales": list(self.test_scales) if self.test_scales else None,
            "scale_target": self.scale_target,
            "box_refinement": self.box_refinement,
            "refinement_nms": self.refinement_nms, "voting_iou": self.voting_iou,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def full_image_boxes(image_sizes):
    """float32 [B, 4] (0, 0, height, width): each image's whole unpadded
    extent as a box, from ``image_sizes`` float [B, 2] (the global-context
    RoI, Appendix B)."""
    hw = tf.cast(image_sizes, tf.float32)
    return tf.concat([tf.zeros_like(hw), hw], -1)
