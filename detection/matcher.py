"""Assign each anchor (or proposal) to a ground-truth box by IoU.

``Matcher.match`` returns, per anchor, the index of its ground-truth box or
one of the named index sentinels below, and the anchor's training label
(``POSITIVE`` / ``NEGATIVE`` / ``IGNORE``), so callers never re-derive the
labels from the indices (detectron2's ``Matcher`` returns the same pair).

RPN settings (Ren et al. Sec. 3.1.2): positive at IoU >= 0.7, negative
below 0.3, in between ignored, and every ground-truth box's best anchor(s)
positive too. Head settings: foreground at IoU >= 0.5 (Fast R-CNN Sec. 2.3),
background below 0.5 (detectron2's default; Fast R-CNN took background from
[0.1, 0.5)).
"""

import collections

from keras import ops

from detection.ops.boxes import is_valid, pairwise_iou

# --- match indices: a gt index in [0, N), or one of these -------------------------
BELOW_LOW_THRESHOLD = -1  # IoU below ``low``: negative / background
BETWEEN_THRESHOLDS = -2  # ``low`` <= IoU < ``high``: ignored, no loss

# --- labels: what the sampler and the losses read -----------------------------------
POSITIVE = 1  # matched: object (RPN) / foreground (head)
NEGATIVE = 0  # below ``low``: background
IGNORE = -1  # between the thresholds (or, for callers, padding): never sampled

MatchResult = collections.namedtuple("MatchResult", ["matches", "labels", "iou"])
MatchResult.__doc__ = """``Matcher.match``'s result.

    matches: int32 [..., M], a gt index in [0, N) or ``BELOW_LOW_THRESHOLD``
        / ``BETWEEN_THRESHOLDS``.
    labels: int32 [..., M], ``POSITIVE`` where ``matches >= 0``, ``NEGATIVE``
        where ``BELOW_LOW_THRESHOLD``, ``IGNORE`` where ``BETWEEN_THRESHOLDS``.
    iou: float32 [..., M], the IoU with the best gt box (0 when none).
"""


def labels_of(matches):
    """int32 [..., M] labels (``POSITIVE`` / ``NEGATIVE`` / ``IGNORE``) of
    match indices int [..., M] (see ``MatchResult``)."""
    return ops.cast(ops.where(matches >= 0, POSITIVE,
                              ops.where(matches == BELOW_LOW_THRESHOLD, NEGATIVE, IGNORE)),
                    "int32")


class Matcher:
    """Args:
        high: IoU at or above which an anchor matches (positive).
        low: IoU below which an anchor is negative; ``low == high`` leaves
            nothing between.
        allow_low_quality_matches: also match every ground-truth box to the
            anchors with its highest IoU (ties included), even below ``high``.
    """

    def __init__(self, high, low, allow_low_quality_matches=False):
        if not 0 <= low <= high <= 1:
            raise ValueError(f"Matcher needs 0 <= low <= high <= 1, got low={low}, "
                             f"high={high}.")
        self.high, self.low = float(high), float(low)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def match(self, anchors, gt_boxes):
        """Match anchors to ground truth.

        Args:
            anchors: float32 [..., M, 4], (ymin, xmin, ymax, xmax) pixels.
            gt_boxes: float32 [..., N, 4], the same format; padded rows (all
                -1) and boxes without area never match.
        Returns:
            a ``MatchResult(matches, labels, iou)``, each [..., M]: the gt
            index or an index sentinel, the label, and the best IoU.
        """
        valid = is_valid(gt_boxes)  # [..., N]
        iou = pairwise_iou(anchors, gt_boxes)  # [..., M, N]
        iou = ops.where(valid[..., None, :], iou, -1.0)
        best = ops.max(iou, axis=-1)
        idx = ops.cast(ops.argmax(iou, axis=-1), "int32")
        matches = ops.where(best >= self.high, idx,
                            ops.where(best < self.low, BELOW_LOW_THRESHOLD,
                                      BETWEEN_THRESHOLDS))
        if self.allow_low_quality_matches:
            best_per_gt = ops.max(iou, axis=-2, keepdims=True)  # [..., 1, N]
            is_best = ops.logical_and(iou == best_per_gt, best_per_gt > 0)
            is_best = ops.logical_and(is_best, valid[..., None, :])
            low_quality = ops.any(is_best, axis=-1)
            matches = ops.where(low_quality, idx, matches)
        none = ops.logical_not(ops.any(valid, axis=-1, keepdims=True))
        matches = ops.cast(ops.where(none, BELOW_LOW_THRESHOLD, matches), "int32")
        return MatchResult(matches, labels_of(matches), ops.maximum(best, 0.0))


def rpn_matcher():
    """Ren et al. Sec. 3.1.2: positive at IoU >= 0.7 (and each box's best
    anchors), negative below 0.3."""
    return Matcher(0.7, 0.3, allow_low_quality_matches=True)


def head_matcher():
    """Foreground at IoU >= 0.5 (Fast R-CNN Sec. 2.3), background below it
    (detectron2's ``ROI_HEADS.IOU_THRESHOLDS``)."""
    return Matcher(0.5, 0.5)
