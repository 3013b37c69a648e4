"""Box voting: replace each kept detection by the score-weighted mean of the
candidate boxes of its class that overlap it (TensorFlow, static shapes).

Box voting comes from Gidaris & Komodakis (2015, "Object detection via a
multi-region & semantic segmentation-aware CNN model"); He et al. (2015)
use it after the NMS of box refinement (Appendix B of the ResNet paper).
NMS keeps one box per object but throws away the other boxes' evidence about
where the object is; voting puts it back into the kept box's coordinates.
"""

import tensorflow as tf

from detection.ops.boxes import is_valid, pairwise_iou


def box_voting(boxes, classes, pool_boxes, pool_scores, pool_classes, iou_threshold=0.5):
    """Score-weighted average of the same-class candidates around each box.

    For each valid kept box ``d`` (class ``c``), the voters are the pool
    entries ``j`` with ``pool_classes[j] == c``, a valid box (``is_valid``),
    a score > 0, and ``IoU(d, pool_boxes[j]) >= iou_threshold`` (inclusive;
    IoU from ``pairwise_iou``). The kept box itself votes when it is in the
    pool (the usual case: the pool is the set NMS ran on, so its IoU with
    itself is 1). The result is ``sum_j s_j * box_j / sum_j s_j``.

    Args:
        boxes: float32 [B, D, 4], the kept boxes, (ymin, xmin, ymax, xmax)
            absolute pixels; padded rows may hold anything (e.g. ``PAD``).
        classes: int32 [B, D], each kept box's class; -1 on padded rows.
        pool_boxes: float32 [B, N, 4], the candidates (same format); padded
            or empty rows (``is_valid`` false) never vote.
        pool_scores: float32 [B, N], the voting weights (probabilities);
            entries <= 0 never vote.
        pool_classes: int32 [B, N], each candidate's class; < 0 never votes.
        iou_threshold: Python float, the least IoU of a voter.
    Returns:
        float32 [B, D, 4]: the voted boxes. Padded rows (class < 0 or an
        invalid box) and rows without any voter come back unchanged. Scores
        and classes are not changed by voting; the caller keeps its own.
    Cost: an IoU matrix of B x D x N floats.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    pool_boxes = tf.convert_to_tensor(pool_boxes, tf.float32)
    pool_scores = tf.convert_to_tensor(pool_scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    pool_classes = tf.cast(pool_classes, tf.int32)
    iou = pairwise_iou(boxes, pool_boxes)  # [B, D, N]
    voter = (is_valid(pool_boxes) & (pool_scores > 0) & (pool_classes >= 0))[:, None, :]
    same_class = tf.equal(classes[:, :, None], pool_classes[:, None, :])
    weights = tf.where(voter & same_class & (iou >= iou_threshold),
                       pool_scores[:, None, :], 0.0)  # [B, D, N]
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)
    # Invalid candidates are padded with -1, but their weight is exactly 0.
    voted = tf.einsum("bdn,bnc->bdc", weights, tf.where(voter[:, 0, :, None], pool_boxes, 0.0))
    voted = voted / tf.maximum(total, 1e-12)  # rows with total 0 are not used
    keep = (total[..., 0] > 0) & is_valid(boxes) & (classes >= 0)
    return tf.where(keep[..., None], voted, boxes)
