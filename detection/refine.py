"""Box refinement with box voting: the detector's optional test-time second
pass (the paper's Appendix B, the first step of Table 9).

The RoI head's regressed box is not the proposal its feature was pooled
from, so its score describes a different box. Refinement pools again, from
the regressed box, and runs the same head a second time:

1. for each RoI, take the regressed box of its highest-scoring foreground
   class (the head regresses one box per class; the top class is the one
   the RoI is most likely to be a detection of), or a padded row for an
   invalid RoI;
2. run ``head_outputs`` and ``decode_head`` on those boxes: a new set of
   class probabilities and class-specific boxes per RoI;
3. take the union of the R first-pass and R second-pass predictions
   (2R rows, each with K class boxes and scores), apply per-class NMS at
   ``nms_iou`` (0.3 in the paper) with the model's score threshold and
   ``max_detections`` cap;
4. box voting (``detection.ops.voting``): each kept box becomes the
   score-weighted mean of the union's boxes of its class (before NMS) that
   overlap it at IoU >= ``voting_iou`` (0.5) and score above the model's
   score threshold (the candidates NMS considered), itself included; its
   score and class stay those of the kept box.

The model runs this from ``FasterRCNN._detect`` when ``box_refinement`` is
on, so evaluation, prediction and the exported signature all include it.
Cost: a second RoI pooling and conv5_x pass over the R RoIs, plus voting's
D x M IoU matrix per image, M <= 2RK the candidates above the score
threshold.
"""

import tensorflow as tf

from detection.ops.boxes import PAD, is_valid
from detection.ops.nms import per_class_nms
from detection.ops.voting import box_voting


def top_class_boxes(rois, boxes, probs):
    """Each RoI's regressed box for its highest-scoring foreground class.

    Args:
        rois: float32 [B, R, 4] (ymin, xmin, ymax, xmax) pixels, the first
            pass's RoIs (invalid rows: ``is_valid`` false).
        boxes: float32 [B, R, K, 4], ``decode_head``'s class boxes.
        probs: float32 [B, R, K], ``decode_head``'s foreground probabilities.
    Returns:
        float32 [B, R, 4]: the box of ``argmax_k probs`` per RoI (ties: the
        lowest class), ``PAD`` rows where the RoI was invalid.
    """
    best = tf.argmax(probs, axis=-1, output_type=tf.int32)  # [B, R]
    picked = tf.gather(boxes, best, axis=2, batch_dims=2)
    return tf.where(is_valid(rois)[..., None], picked, PAD)


def second_pass(head_outputs, decode_head, c4, rois, boxes, probs, image_sizes):
    """Pool from each RoI's regressed box and run the head again.

    Args:
        head_outputs, decode_head: the model's two head seams
            (``FasterRCNN.head_outputs`` and ``FasterRCNN.decode_head``).
        c4: the trunk's feature, as ``head_outputs`` takes it.
        rois, boxes, probs: the first pass (see ``top_class_boxes``).
        image_sizes: float32 [B, 2] (height, width) before padding.
    Returns:
        ``(new_boxes [B, R, K, 4], new_probs [B, R, K])`` in the format of
        ``decode_head`` (clipped pixels; probabilities 0 where the RoI was
        invalid or its regressed box has no area).
    """
    new_rois = tf.stop_gradient(top_class_boxes(rois, boxes, probs))
    head = head_outputs(c4, new_rois, image_sizes)
    return decode_head(head, new_rois, image_sizes)


def merge_and_vote(boxes, probs, new_boxes, new_probs, *, max_detections,
                   score_threshold=0.05, nms_iou=0.3, voting_iou=0.5):
    """NMS over the union of two passes' predictions, then box voting.

    Args:
        boxes, new_boxes: float32 [B, R, K, 4] pixels (ymin, xmin, ymax,
            xmax); first and second pass (the two R may differ).
        probs, new_probs: float32 [B, R, K] foreground probabilities.
        max_detections: Python int, detections kept per image (and per class).
        score_threshold: candidates at or below it are dropped before NMS
            and do not vote.
        nms_iou: per-class NMS IoU on the union (0.3, Appendix B).
        voting_iou: the least IoU of a voter (0.5).
    Returns:
        The detector's output dict: ``boxes`` float32 [B, D, 4] (voted,
        padded ``PAD``), ``scores`` float32 [B, D] (the kept boxes' own
        scores, sorted, padded 0), ``classes`` int32 [B, D] (0-based, -1
        padded), ``num_detections`` int32 [B]; D = ``max_detections``, and
        ``num_detections == D`` says the cap was reached.
    """
    union_boxes = tf.concat([boxes, new_boxes], axis=1)  # [B, 2R, K, 4]
    union_probs = tf.concat([probs, new_probs], axis=1)
    det_boxes, scores, classes, count = per_class_nms(
        union_boxes, union_probs, max_detections, max_detections,
        iou_threshold=nms_iou, score_threshold=score_threshold)
    b, k = tf.shape(union_probs)[0], tf.shape(union_probs)[2]
    pool_classes = tf.broadcast_to(tf.range(k, dtype=tf.int32), tf.shape(union_probs))
    voted = box_voting(det_boxes, classes, tf.reshape(union_boxes, [b, -1, 4]),
                       tf.reshape(union_probs, [b, -1]), tf.reshape(pool_classes, [b, -1]),
                       iou_threshold=voting_iou, score_threshold=score_threshold)
    return {"boxes": voted, "scores": scores, "classes": classes, "num_detections": count}


def refine_detections(head_outputs, decode_head, c4, rois, boxes, probs, image_sizes, *,
                      max_detections, score_threshold=0.05, nms_iou=0.3, voting_iou=0.5):
    """Box refinement and voting on a first pass: ``second_pass`` then
    ``merge_and_vote`` (arguments as there); returns the detector's output
    dict."""
    new_boxes, new_probs = second_pass(head_outputs, decode_head, c4, rois, boxes, probs,
                                       image_sizes)
    return merge_and_vote(boxes, probs, new_boxes, new_probs,
                          max_detections=max_detections, score_threshold=score_threshold,
                          nms_iou=nms_iou, voting_iou=voting_iou)
