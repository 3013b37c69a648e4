"""Assign each anchor (or proposal) to a ground-truth box by IoU.

``Matcher.match`` returns, per anchor, the index of its ground-truth box or
one of the named sentinels below. RPN settings (Ren et al. Sec. 3.1.2):
positive at IoU >= 0.7, negative below 0.3, in between ignored, and every
ground-truth box's best anchor(s) positive too. Head settings: foreground at
IoU >= 0.5, background below 0.5.
"""

from keras import ops

from detection.ops.boxes import is_valid, pairwise_iou

BELOW_LOW_THRESHOLD = -1  # negative / background
BETWEEN_THRESHOLDS = -2  # ignored: no loss


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
            anchors: float32 [..., M, 4], internal format.
            gt_boxes: float32 [..., N, 4]; padded rows (all -1) and boxes
                without area never match.
        Returns:
            ``(matches, iou)``: int32 [..., M], a gt index in [0, N) or
            ``BELOW_LOW_THRESHOLD`` / ``BETWEEN_THRESHOLDS``; and float32
            [..., M] the IoU with the matched (best) gt box.
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
        matches = ops.where(none, BELOW_LOW_THRESHOLD, matches)
        return matches, ops.maximum(best, 0.0)


def rpn_matcher():
    return Matcher(0.7, 0.3, allow_low_quality_matches=True)


def head_matcher():
    return Matcher(0.5, 0.5)
