"""The detector's losses: pure functions returning named scalars.

Approximate joint training (Ren et al.): RPN objectness log loss + smooth L1
box loss on the sampled anchors, head softmax + smooth L1 on the sampled
RoIs. Box losses are summed over positives and divided by the number of
sampled entries (so positives and negatives weigh as in the papers).
"""

import keras
from keras import ops

RPN_BETA = 1.0 / 9.0  # py-faster-rcnn's sigma = 3 for the RPN
HEAD_BETA = 1.0


def smooth_l1(x, beta):
    """Elementwise Huber-style smooth L1: 0.5 x^2 / beta if |x| < beta."""
    ax = ops.abs(x)
    return ops.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def rpn_losses(objectness, deltas, labels, sampled, target_deltas, beta=RPN_BETA):
    """Args:
        objectness: float [B, M] logits.
        deltas: float [B, M, 4] predicted deltas.
        labels: int [B, M]: 1 object, 0 background, others ignored.
        sampled: bool [B, M] the balanced sample.
        target_deltas: float [B, M, 4] (used where labels == 1).
    Returns:
        ``{"rpn_objectness": scalar, "rpn_box": scalar}``.
    """
    objectness = ops.cast(objectness, "float32")
    w = ops.cast(sampled, "float32")
    n = ops.maximum(ops.sum(w), 1.0)
    y = ops.cast(ops.equal(labels, 1), "float32")
    bce = ops.binary_crossentropy(y, objectness, from_logits=True)
    pos = w * y
    box = ops.sum(smooth_l1(ops.cast(deltas, "float32") - target_deltas, beta), axis=-1)
    return {"rpn_objectness": ops.sum(bce * w) / n, "rpn_box": ops.sum(box * pos) / n}


def head_losses(class_logits, box_deltas, labels, sampled, target_deltas,
                beta=HEAD_BETA):
    """Args:
        class_logits: float [R, K+1].
        box_deltas: float [R, K, 4] class-specific deltas.
        labels: int [R]: 0 background, k in 1..K foreground class k.
        sampled: bool [R].
        target_deltas: float [R, 4] (used where labels > 0).
    Returns:
        ``{"head_class": scalar, "head_box": scalar}``.
    """
    class_logits = ops.cast(class_logits, "float32")
    w = ops.cast(sampled, "float32")
    n = ops.maximum(ops.sum(w), 1.0)
    labels = ops.cast(labels, "int32")
    ce = ops.sparse_categorical_crossentropy(labels, class_logits, from_logits=True)
    fg = w * ops.cast(labels > 0, "float32")
    k = ops.shape(box_deltas)[1]
    pick = ops.one_hot(ops.maximum(labels - 1, 0), k, dtype="float32")  # [R, K]
    pred = ops.sum(ops.cast(box_deltas, "float32") * pick[..., None], axis=1)
    box = ops.sum(smooth_l1(pred - target_deltas, beta), axis=-1)
    return {"head_class": ops.sum(ce * w) / n, "head_box": ops.sum(box * fg) / n}


def total_loss(values, regularization=()):
    """The scalar a model's ``compute_loss`` returns.

    Args:
        values: the named loss scalars to add (e.g. ``rpn_losses``' and
            ``head_losses``' values).
        regularization: the model's ``losses`` (its layers' weight decay).
    Returns:
        float32 scalar: their sum, divided under ``tf.distribute`` by the
        number of replicas. The strategy sums the replicas' gradients, so
        each replica's share makes the sum the global batch's mean (as
        Keras's own ``compute_loss`` does; ``fit``'s loss tracker multiplies
        it back for display).
    """
    total = ops.sum(ops.stack([ops.cast(v, "float32") for v in values]))
    if regularization:
        total = total + ops.sum(ops.stack([ops.cast(l, "float32") for l in regularization]))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        total = total / tf.distribute.get_strategy().num_replicas_in_sync
    return total
