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


def box_voting(boxes, classes, pool_boxes, pool_scores, pool_classes, iou_threshold=0.5,
               score_threshold=0.0):
    """Score-weighted average of the same-class candidates around each box.

    For each valid kept box ``d`` (class ``c``), the voters are the pool
    entries ``j`` with ``pool_classes[j] == c``, a valid box (``is_valid``),
    a score above ``score_threshold`` and above 0, and
    ``IoU(d, pool_boxes[j]) >= iou_threshold`` (inclusive; IoU from
    ``pairwise_iou``). The kept box itself votes when it is in the pool (the
    usual case: the pool is the set NMS ran on, so its IoU with itself is
    1, and its score passed the same threshold). The result is
    ``sum_j s_j * box_j / sum_j s_j``.

    The voters are the boxes of the kept box's class that overlap it,
    weighted by score (Gidaris & Komodakis 2015, Sec. 3.3); a candidate at
    or below the detector's ``score_threshold`` (the threshold its
    detections use, ``per_class_nms``) carries a negligible weight, so it
    is left out: only candidates above it enter the IoU matrix. With the
    default 0.0 every candidate with a positive score votes.

    Args:
        boxes: float32 [B, D, 4], the kept boxes, (ymin, xmin, ymax, xmax)
            absolute pixels; padded rows may hold anything (e.g. ``PAD``).
        classes: int32 [B, D], each kept box's class; -1 on padded rows.
        pool_boxes: float32 [B, N, 4], the candidates (same format); padded
            or empty rows (``is_valid`` false) never vote.
        pool_scores: float32 [B, N], the voting weights (probabilities);
            entries <= max(score_threshold, 0) never vote.
        pool_classes: int32 [B, N], each candidate's class; < 0 never votes.
        iou_threshold: Python float, the least IoU of a voter.
        score_threshold: Python float, a voter's score must exceed it (the
            model's ``score_threshold``, 0.05).
    Returns:
        float32 [B, D, 4]: the voted boxes. Padded rows (class < 0 or an
        invalid box) and rows without any voter come back unchanged. Scores
        and classes are not changed by voting; the caller keeps its own.
    Cost: one ``top_k`` over the B x N scores, then an IoU matrix of
    B x D x M floats, M the most voters of one image of the batch (M <= N).
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    pool_boxes = tf.convert_to_tensor(pool_boxes, tf.float32)
    pool_scores = tf.convert_to_tensor(pool_scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    pool_classes = tf.cast(pool_classes, tf.int32)
    voter = (is_valid(pool_boxes) & (pool_scores > max(float(score_threshold), 0.0))
             & (pool_classes >= 0))  # [B, N]
    # Gather the voters to the front (top_k keeps equal keys in index order):
    # M columns, M the most voters of an image; other images' extra columns
    # are non-voters and stay masked.
    m = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(voter, tf.int32), axis=1)), 0)
    _, order = tf.math.top_k(tf.cast(voter, tf.float32), k=m)  # [B, M]
    pool_boxes = tf.gather(pool_boxes, order, batch_dims=1)
    pool_scores = tf.gather(pool_scores, order, batch_dims=1)
    pool_classes = tf.gather(pool_classes, order, batch_dims=1)
    voter = tf.gather(voter, order, batch_dims=1)[:, None, :]  # [B, 1, M]
    iou = pairwise_iou(boxes, pool_boxes)  # [B, D, M]
    same_class = tf.equal(classes[:, :, None], pool_classes[:, None, :])
    weights = tf.where(voter & same_class & (iou >= iou_threshold),
                       pool_scores[:, None, :], 0.0)  # [B, D, M]
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)
    # Invalid candidates are padded with -1, but their weight is exactly 0.
    voted = tf.einsum("bdn,bnc->bdc", weights, tf.where(voter[:, 0, :, None], pool_boxes, 0.0))
    voted = voted / tf.maximum(total, 1e-12)  # rows with total 0 are not used
    keep = (total[..., 0] > 0) & is_valid(boxes) & (classes >= 0)
    return tf.where(keep[..., None], voted, boxes)
