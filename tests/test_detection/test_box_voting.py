"""detection.ops.voting.box_voting against a NumPy reference written here:
score-weighted mean of the same-class candidates at IoU >= threshold
(inclusive), the kept box itself included; padded rows untouched."""

import numpy as np
import tensorflow as tf

from detection.ops.boxes import PAD
from detection.ops.voting import box_voting


def iou_np(a, b):
    """IoU of two (ymin, xmin, ymax, xmax) boxes, float64."""
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def voting_np(boxes, classes, pool_boxes, pool_scores, pool_classes, thr):
    out = np.array(boxes, np.float64)
    for b in range(boxes.shape[0]):
        for d in range(boxes.shape[1]):
            box, c = boxes[b, d], classes[b, d]
            if c < 0 or box[2] <= box[0] or box[3] <= box[1]:
                continue
            num, den = np.zeros(4), 0.0
            for j in range(pool_boxes.shape[1]):
                p, s = pool_boxes[b, j], pool_scores[b, j]
                real = p[2] > p[0] and p[3] > p[1] and s > 0
                if real and pool_classes[b, j] == c and iou_np(box, p) >= thr:
                    num, den = num + s * p, den + s
            if den > 0:
                out[b, d] = num / den
    return out


def random_pool(rng, b=2, n=40, k=3):
    yx = rng.uniform(0, 60, (b, n, 2))
    hw = rng.uniform(8, 40, (b, n, 2))
    boxes = np.concatenate([yx, yx + hw], -1).astype(np.float32)
    # Clusters: half the boxes are jittered copies of the others.
    boxes[:, n // 2:] = boxes[:, :n // 2] + rng.normal(0, 3, (b, n // 2, 4)).astype(np.float32)
    boxes[..., 2:] = np.maximum(boxes[..., 2:], boxes[..., :2] + 1)
    scores = rng.uniform(0, 1, (b, n)).astype(np.float32)
    scores[:, ::7] = 0.0  # zero-score candidates never vote
    classes = rng.integers(0, k, (b, n)).astype(np.int32)
    classes[:, n // 2:] = np.where(rng.uniform(size=(b, n // 2)) < 0.7, classes[:, :n // 2],
                                   classes[:, n // 2:])
    boxes[:, -3:] = PAD  # padded candidates
    classes[:, -3:] = -1
    return boxes, scores, classes


def test_matches_numpy_reference():
    rng = np.random.default_rng(0)
    pool_boxes, pool_scores, pool_classes = random_pool(rng)
    # Kept boxes are pool rows (so each votes for itself), then padded rows.
    pick = np.array([0, 3, 5, 9, 14, 20])
    kept = np.concatenate([pool_boxes[:, pick], np.full((2, 2, 4), PAD, np.float32)], 1)
    kept_classes = np.concatenate([pool_classes[:, pick], np.full((2, 2), -1, np.int32)], 1)
    out = box_voting(kept, kept_classes, pool_boxes, pool_scores, pool_classes, 0.5).numpy()
    ref = voting_np(kept, kept_classes, pool_boxes, pool_scores, pool_classes, 0.5)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    moved = np.abs(out[:, :6] - kept[:, :6]).max(-1) > 1e-3
    assert moved.sum() >= 4  # the reference is not "unchanged" everywhere
    np.testing.assert_array_equal(out[:, 6:], PAD)


def test_inclusive_threshold_same_class_and_itself():
    kept = np.array([[[0, 0, 10, 10]]], np.float32)
    pool = np.array([[[0, 0, 10, 10],      # itself, score 1
                      [0, 0, 10, 5],       # IoU exactly 0.5: votes
                      [0, 0, 10, 4.5],     # IoU 0.45: does not
                      [0, 0, 10, 10.5],    # IoU 0.95, other class: does not
                      [1, 1, 11, 11]]],    # IoU 0.68, negative weight: does not
                    np.float32)
    scores = np.array([[1.0, 0.5, 0.9, 0.9, -0.5]], np.float32)
    pool_classes = np.array([[0, 0, 0, 1, 0]], np.int32)
    out = box_voting(kept, np.array([[0]], np.int32), pool, scores, pool_classes, 0.5).numpy()
    expect = (1.0 * pool[0, 0] + 0.5 * pool[0, 1]) / 1.5
    np.testing.assert_allclose(out[0, 0], expect, atol=1e-5)
    np.testing.assert_allclose(out[0, 0], voting_np(kept, np.array([[0]]), pool, scores,
                                                   pool_classes, 0.5)[0, 0], atol=1e-5)


def test_empty_pool_and_graph_mode():
    """No candidates at all (N = 0) and unknown shapes in a tf.function."""
    fn = tf.function(box_voting, input_signature=[
        tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None]),
        tf.TensorSpec([None, None], tf.int32)])
    kept = tf.constant([[[1.0, 2.0, 5.0, 7.0], [PAD] * 4]])
    out = fn(kept, tf.constant([[0, -1]]), tf.zeros([1, 0, 4]), tf.zeros([1, 0]),
             tf.zeros([1, 0], tf.int32))
    assert out.shape == (1, 2, 4)
    np.testing.assert_array_equal(out.numpy(), kept.numpy())
