"""Non-maximum suppression with fixed-size, padded outputs (TensorFlow)."""

import tensorflow as tf

from detection.ops.boxes import PAD


def batched_nms(boxes, scores, max_output, iou_threshold, score_threshold=float("-inf")):
    """Greedy NMS per image, padded to ``max_output``.

    Args:
        boxes: float32 [B, N, 4], internal format.
        scores: float32 [B, N]; entries at or below ``score_threshold`` are
            never kept (use -inf for "keep by rank only").
        max_output: Python int, boxes kept per image at most.
        iou_threshold: suppress boxes overlapping a kept one by more.
    Returns:
        ``(boxes, scores, indices, count)``: float32 [B, max_output, 4] (padded
        rows all ``PAD``), float32 [B, max_output] (padded: -inf), int32
        [B, max_output] indices into N (padded: -1), int32 [B] kept counts.
        Kept boxes come in descending score order.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    n = tf.shape(boxes)[1]
    # non_max_suppression_padded wants at least max_output candidates.
    short = tf.maximum(max_output - n, 0)
    boxes_p = tf.pad(boxes, [[0, 0], [0, short], [0, 0]])
    scores_p = tf.pad(scores, [[0, 0], [0, short]], constant_values=float("-inf"))
    idx, count = tf.image.non_max_suppression_padded(
        boxes_p, scores_p, max_output, iou_threshold=iou_threshold,
        score_threshold=score_threshold, pad_to_max_output_size=True)
    kept_scores = tf.gather(scores_p, idx, batch_dims=1)
    # The op keeps -inf scores even with a -inf threshold; kept boxes come in
    # descending score order, so the valid ones stay a prefix.
    keep = tf.logical_and(tf.range(max_output)[None, :] < tf.cast(count, tf.int32)[:, None],
                          kept_scores > score_threshold)
    count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    out_boxes = tf.where(keep[..., None], tf.gather(boxes_p, idx, batch_dims=1), PAD)
    out_scores = tf.where(keep, kept_scores, float("-inf"))
    out_idx = tf.where(keep, tf.cast(idx, tf.int32), -1)
    return out_boxes, out_scores, out_idx, count


def per_class_nms(boxes, scores, max_per_class, max_total, iou_threshold=0.5,
                  score_threshold=0.05):
    """Test-time detection NMS, class by class (Faster R-CNN's last step).

    Args:
        boxes: float32 [B, R, K, 4], a box per RoI and foreground class.
        scores: float32 [B, R, K], class probabilities (background removed).
        max_per_class, max_total: Python ints (e.g. 100 and 100).
    Returns:
        ``(boxes [B, max_total, 4], scores [B, max_total], classes
        [B, max_total] int32 in [0, K) or -1, count [B])``, padded, sorted by
        score.
    """
    out = tf.image.combined_non_max_suppression(
        tf.convert_to_tensor(boxes, tf.float32), tf.convert_to_tensor(scores, tf.float32),
        max_output_size_per_class=max_per_class, max_total_size=max_total,
        iou_threshold=iou_threshold, score_threshold=score_threshold,
        pad_per_class=False, clip_boxes=False)
    count = tf.cast(out.valid_detections, tf.int32)
    keep = tf.range(max_total)[None, :] < count[:, None]
    det_boxes = tf.where(keep[..., None], out.nmsed_boxes, PAD)
    det_scores = tf.where(keep, out.nmsed_scores, 0.0)
    det_classes = tf.where(keep, tf.cast(out.nmsed_classes, tf.int32), -1)
    return det_boxes, det_scores, det_classes, count
