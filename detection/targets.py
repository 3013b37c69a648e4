"""Target assignment: which anchors and which proposals a training step
learns from, and what each should predict.

The two steps of Faster R-CNN's approximate joint training (Ren et al.
2015), named after detectron2's ``label_and_sample_anchors`` (RPN) and
``label_and_sample_proposals`` (RoI heads); torchvision calls them
``assign_targets_to_anchors`` and ``select_training_samples``. The
detector's and the localizer's ``compute_loss`` call them and inline
nothing; both RPNs (the detector's and the localizer's per-class one) use
``label_and_sample_anchors``.

Boxes are float32 ``[..., 4]`` (ymin, xmin, ymax, xmax) absolute input
pixels; ground-truth rows padded with -1 (``detection.ops.boxes.PAD``) never
match. Labels are ``detection.matcher``'s ``POSITIVE`` (1), ``NEGATIVE`` (0)
and ``IGNORE`` (-1).

Randomness: the samples are drawn with ``seed``. The models pass their
``keras.random.SeedGenerator`` (seeded from their ``seed`` argument), whose
state advances on every call, also inside ``fit``'s compiled train step: every
step draws a new sample, and a run is repeatable from its seed. An int seed
draws the same sample every call (tests).
"""

import collections

from keras import ops

from detection.matcher import IGNORE, POSITIVE
from detection.ops.boxes import is_valid
from detection.sampler import sample_balanced

AnchorTargets = collections.namedtuple("AnchorTargets", ["labels", "sampled", "deltas"])
AnchorTargets.__doc__ = """``label_and_sample_anchors``'s result, each [B, M, ...].

    labels: int32 [B, M], ``POSITIVE`` / ``NEGATIVE`` / ``IGNORE``.
    sampled: bool [B, M], the balanced sample (the anchors with a loss).
    deltas: float32 [B, M, 4], the matched box encoded against the anchor
        (meaningful where ``labels == POSITIVE``; 0 elsewhere).
"""

ProposalTargets = collections.namedtuple("ProposalTargets",
                                         ["rois", "classes", "sampled", "deltas"])
ProposalTargets.__doc__ = """``label_and_sample_proposals``'s result: a fixed
    ``num_samples`` rows per image, the sampled ones first.

    rois: float32 [B, S, 4], the RoIs to pool (padded rows replaced by the
        stand-in box, so every row is a finite, positive-size box).
    classes: int32 [B, S], 0 background, k in 1..K foreground class k - 1.
    sampled: bool [B, S], the rows that receive a loss.
    deltas: float32 [B, S, 4], the matched box encoded against the RoI
        (meaningful where ``classes > 0``; 0 elsewhere).
"""


def _encode_matched(coder, matches, gt_boxes, references):
    """float32 [B, M, 4]: each reference's matched gt box encoded against
    it, and 0 where it matched nothing (the reference stands in for the
    box, which keeps ``log`` finite)."""
    matched = ops.take_along_axis(gt_boxes, ops.maximum(matches, 0)[..., None], axis=1)
    matched = ops.where((matches >= 0)[..., None], matched, references)
    return coder.encode(matched, references)


def label_and_sample_anchors(anchors, gt_boxes, matcher, coder, num_samples,
                             positive_fraction, seed):
    """Label every anchor of every image and sample the RPN's minibatch.

    Ren et al. Sec. 3.1.2-3.1.3: an anchor is positive at IoU >= 0.7 with a
    ground-truth box (and each box's best anchors are positive too),
    negative below 0.3, ignored between (``detection.matcher.rpn_matcher``);
    each image samples 256 anchors, at most half positive, negatives filling
    the rest. The localizer (He et al. Appendix C) samples 8, 1:1.

    Args:
        anchors: float32 [M, 4], the feature map's anchors (the same for
            every image).
        gt_boxes: float32 [B, G, 4], padded rows -1.
        matcher: a ``detection.matcher.Matcher``.
        coder: a ``detection.box_coder.BoxCoder`` (the RPN's weights).
        num_samples: int, anchors sampled per image.
        positive_fraction: float in [0, 1], the most positives may take.
        seed: a ``keras.random.SeedGenerator`` (a new sample every call) or
            an int (the same sample every call).
    Returns:
        ``AnchorTargets(labels int32 [B, M], sampled bool [B, M], deltas
        float32 [B, M, 4])``.
    Raises:
        ValueError: ``positive_fraction`` outside [0, 1].
    """
    gt_boxes = ops.cast(gt_boxes, "float32")
    anchors = ops.cast(anchors, "float32")
    b = ops.shape(gt_boxes)[0]
    anchors_b = ops.broadcast_to(anchors[None], (b, ops.shape(anchors)[0], 4))
    match = matcher.match(anchors_b, gt_boxes)
    sampled = sample_balanced(match.labels, num_samples, positive_fraction, seed)
    deltas = _encode_matched(coder, match.matches, gt_boxes, anchors_b)
    return AnchorTargets(match.labels, sampled, deltas)


def label_and_sample_proposals(proposals, gt_boxes, gt_classes, matcher, coder,
                               num_samples, positive_fraction, seed, stand_in_size):
    """Add the ground truth to the proposals, label them, and keep the RoI
    head's minibatch: ``num_samples`` rows per image, sampled ones first.

    Faster R-CNN's head training (Fast R-CNN Sec. 2.3): a proposal is
    foreground (its matched box's class) at IoU >= 0.5 and background below
    (``detection.matcher.head_matcher``); each image samples ``num_samples``
    RoIs, at most ``positive_fraction`` foreground (the paper's 25%; the
    detector's default 128 per image is the original Faster R-CNN code's
    ``TRAIN.BATCH_SIZE``, 512 detectron2's and torchvision's).
    The ground-truth boxes join the proposals first, so every image has
    foreground to learn from early on (py-faster-rcnn, detectron2
    ``proposal_append_gt``).

    Rows that are padding (padded proposals, padded ground truth) are never
    sampled. When an image has fewer candidates than ``num_samples``, its
    unsampled rows fill the rest (lowest index first: ``top_k`` is stable);
    they pass through the head but carry no loss. A padded row becomes the
    stand-in box ``[0, 0, stand_in_size, stand_in_size]`` (one feature cell
    at the origin), which pools and encodes to finite numbers.

    Args:
        proposals: float32 [B, P, 4], the RPN's proposals, padded -1.
        gt_boxes: float32 [B, G, 4], padded -1.
        gt_classes: int [B, G] in [0, K), padded -1.
        matcher: a ``detection.matcher.Matcher`` (the head's).
        coder: a ``detection.box_coder.BoxCoder`` (the head's weights).
        num_samples: int <= P + G, RoIs kept per image.
        positive_fraction: float in [0, 1], the most foreground may take.
        seed: a ``keras.random.SeedGenerator`` or an int (see the module).
        stand_in_size: float pixels, the side of the stand-in box (the
            detector passes its feature stride).
    Returns:
        ``ProposalTargets(rois float32 [B, S, 4], classes int32 [B, S],
        sampled bool [B, S], deltas float32 [B, S, 4])``, S = ``num_samples``.
    Raises:
        ValueError: ``positive_fraction`` outside [0, 1].
    """
    gt_boxes = ops.cast(gt_boxes, "float32")
    rois = ops.concatenate([ops.cast(proposals, "float32"), gt_boxes], axis=1)
    match = matcher.match(rois, gt_boxes)
    labels = ops.where(is_valid(rois), match.labels, IGNORE)
    sampled = sample_balanced(labels, num_samples, positive_fraction, seed)
    gt_classes = ops.cast(gt_classes, "int32")
    matched_class = ops.take_along_axis(gt_classes, ops.maximum(match.matches, 0), axis=1)
    classes = ops.where(match.labels == POSITIVE, matched_class + 1, 0)
    # The sampled rows first; ties keep their order (top_k is stable).
    _, order = ops.top_k(ops.cast(sampled, "float32"), k=int(num_samples))
    rows = lambda t: ops.take_along_axis(t, order, axis=1)  # noqa: E731
    boxes = lambda t: ops.take_along_axis(t, order[..., None], axis=1)  # noqa: E731
    rois, classes, sampled, matches = boxes(rois), rows(classes), rows(sampled), \
        rows(match.matches)
    stand_in = ops.convert_to_tensor([0.0, 0.0, float(stand_in_size), float(stand_in_size)])
    rois = ops.where(is_valid(rois)[..., None], rois, stand_in)
    deltas = _encode_matched(coder, matches, gt_boxes, rois)
    return ProposalTargets(rois, ops.cast(classes, "int32"), sampled, deltas)
