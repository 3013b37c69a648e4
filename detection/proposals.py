"""The RPN's proposal layer (Ren et al. Sec. 3.1): decode anchor deltas,
clip to the image, drop tiny boxes, keep the top scores, NMS at 0.7.

Defaults: 12,000 boxes before NMS and 2,000 after when training, 6,000 and
300 when testing (py-faster-rcnn's settings, which the paper used).

These are budgets, and they are counted where they meet data: the top-k
before NMS takes ``min(pre_nms, anchors)`` (fewer anchors: all of them), a
returned ``count`` equal to ``post_nms`` says NMS had more boxes to give
(``budget_full``; in training, the ``proposals_capped`` metric is the
fraction of images where it did, counted as it happens), and
``detection.data.pipeline.count_caps`` counts a split's images with more
anchors than ``pre_nms`` or more objects than ``post_nms`` (the "Capped:"
line of ``train_detector``).
"""

import dataclasses

import tensorflow as tf

from detection.box_coder import RPN_WEIGHTS, BoxCoder
from detection.ops.boxes import PAD
from detection.ops.nms import batched_nms


# The training metric (``FasterRCNN.metrics``): the fraction of images
# whose post-NMS proposal budget was full, counted as training runs.
PROPOSALS_CAPPED = "proposals_capped"


def budget_full(count, post_nms):
    """float32 [B]: 1 where an image's proposal ``count`` (int [B],
    ``generate_proposals``'s) filled ``post_nms``: NMS had more to give, so
    proposals were capped; else 0."""
    return tf.cast(tf.greater_equal(count, post_nms), tf.float32)


@dataclasses.dataclass(frozen=True)
class ProposalConfig:
    pre_nms_train: int = 12_000
    post_nms_train: int = 2_000
    pre_nms_test: int = 6_000
    post_nms_test: int = 300
    nms_iou: float = 0.7
    min_size: float = 0.0  # pixels; smaller proposals are dropped

    def sizes(self, training):
        return ((self.pre_nms_train, self.post_nms_train) if training
                else (self.pre_nms_test, self.post_nms_test))


def generate_proposals(objectness, deltas, anchors, image_sizes, config=ProposalConfig(),
                       training=False):
    """Proposals from RPN outputs.

    Args:
        objectness: float [B, M] logits, one per anchor.
        deltas: float [B, M, 4] RPN box deltas (weights (1, 1, 1, 1)).
        anchors: float32 [M, 4] internal format.
        image_sizes: float32 [B, 2], each image's (height, width) before
            batch padding; proposals are clipped to it.
    Returns:
        ``(boxes, scores, count)``: float32 [B, post_nms, 4] (padded rows
        ``PAD``), float32 [B, post_nms] objectness probabilities (padded 0),
        int32 [B] valid counts (``count == post_nms``: the budget was full,
        ``budget_full``). No gradient flows into the boxes (the paper's
        approximate joint training).
    """
    pre, post = config.sizes(training)
    objectness = tf.stop_gradient(tf.cast(objectness, tf.float32))
    deltas = tf.stop_gradient(tf.cast(deltas, tf.float32))
    m = tf.shape(objectness)[1]
    k = tf.minimum(pre, m)
    top_scores, top_idx = tf.math.top_k(objectness, k=k)
    top_deltas = tf.gather(deltas, top_idx, batch_dims=1)
    top_anchors = tf.gather(tf.cast(anchors, tf.float32), top_idx)
    boxes = BoxCoder(RPN_WEIGHTS).decode(top_deltas, top_anchors)
    hw = tf.cast(image_sizes, tf.float32)[:, None, :]
    limits = tf.concat([hw, hw], axis=-1)
    boxes = tf.clip_by_value(boxes, 0.0, limits)
    size_ok = tf.logical_and(boxes[..., 2] - boxes[..., 0] > config.min_size,
                             boxes[..., 3] - boxes[..., 1] > config.min_size)
    scores = tf.where(size_ok, top_scores, float("-inf"))
    boxes, scores, _, count = batched_nms(boxes, scores, post, config.nms_iou,
                                          score_threshold=float("-inf"))
    valid = tf.range(post)[None, :] < count[:, None]
    probs = tf.where(valid, tf.sigmoid(scores), 0.0)
    boxes = tf.where(valid[..., None], boxes, PAD)
    return boxes, probs, count
