"""detection.ops.voting.box_voting against a NumPy reference written here:
score-weighted mean of the same-class candidates at IoU >= threshold
(inclusive) and score above the score threshold, the kept box itself
included; padded rows untouched."""

import numpy as np
import pytest
import tensorflow as tf

from box_fixtures import iou as iou_np
from box_fixtures import random_boxes
from detection.ops.boxes import PAD
from detection.ops.voting import box_voting


def voting_np(boxes, classes, pool_boxes, pool_scores, pool_classes, thr, score_thr=0.0):
    out = np.array(boxes, np.float64)
    for b in range(boxes.shape[0]):
        for d in range(boxes.shape[1]):
            box, c = boxes[b, d], classes[b, d]
            if c < 0 or box[2] <= box[0] or box[3] <= box[1]:
                continue
            num, den = np.zeros(4), 0.0
            for j in range(pool_boxes.shape[1]):
                p, s = pool_boxes[b, j], pool_scores[b, j]
                real = p[2] > p[0] and p[3] > p[1] and s > max(score_thr, 0.0)
                if real and pool_classes[b, j] == c and iou_np(box, p) >= thr:
                    num, den = num + s * p, den + s
            if den > 0:
                out[b, d] = num / den
    return out


def random_pool(rng, b=2, n=40, k=3):
    boxes = random_boxes(rng, b * n, size=60, sides=(8, 40)).reshape(b, n, 4)
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


@pytest.mark.parametrize("score_thr", [0.0, 0.3])
def test_matches_numpy_reference(score_thr):
    rng = np.random.default_rng(0)
    pool_boxes, pool_scores, pool_classes = random_pool(rng)
    # Kept boxes are pool rows (so each votes for itself), then padded rows.
    pick = np.array([0, 3, 5, 9, 14, 20])
    kept = np.concatenate([pool_boxes[:, pick], np.full((2, 2, 4), PAD, np.float32)], 1)
    kept_classes = np.concatenate([pool_classes[:, pick], np.full((2, 2), -1, np.int32)], 1)
    out = box_voting(kept, kept_classes, pool_boxes, pool_scores, pool_classes, 0.5,
                     score_threshold=score_thr).numpy()
    ref = voting_np(kept, kept_classes, pool_boxes, pool_scores, pool_classes, 0.5, score_thr)
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


def test_voter_below_score_threshold_is_ignored():
    """A same-class candidate overlapping the kept box but scored at or
    below the score threshold does not vote; the result is the weighted mean
    of the voters above it, computed by hand. At threshold 0 it does vote
    (so the candidate would move the box)."""
    kept = np.array([[[0, 0, 10, 10]]], np.float32)
    pool = np.array([[[0, 0, 10, 10],      # itself, score 0.9
                      [0, 0, 10, 8],       # IoU 0.8, score 0.3: votes
                      [2, 2, 12, 12],      # IoU 0.47 < 0.5: does not
                      [0, 0, 12, 12],      # IoU 0.69, score 0.04 <= 0.05: does not
                      [0, 1, 10, 11]]],    # IoU 0.82, score exactly 0.05: does not
                    np.float32)
    scores = np.array([[0.9, 0.3, 0.9, 0.04, 0.05]], np.float32)
    pool_classes = np.zeros((1, 5), np.int32)
    args = (kept, np.array([[0]], np.int32), pool, scores, pool_classes, 0.5)
    out = box_voting(*args, score_threshold=0.05).numpy()[0, 0]
    expect = (0.9 * np.array([0, 0, 10, 10]) + 0.3 * np.array([0, 0, 10, 8])) / 1.2
    np.testing.assert_allclose(out, expect, atol=1e-5)
    everyone = box_voting(*args, score_threshold=0.0).numpy()[0, 0]
    expect_all = (0.9 * pool[0, 0] + 0.3 * pool[0, 1] + 0.04 * pool[0, 3]
                  + 0.05 * pool[0, 4]) / 1.29
    np.testing.assert_allclose(everyone, expect_all, atol=1e-5)
    assert np.abs(everyone - out).max() > 0.1


def test_voters_gathered_per_image():
    """Images with different numbers of voters in one batch: each image's
    result equals voting on that image alone (the voters of the image with
    the most fix the batch's columns)."""
    rng = np.random.default_rng(1)
    pool_boxes, pool_scores, pool_classes = random_pool(rng, b=3, n=30)
    pool_scores[1, :20] = 0.01  # image 1: few voters above 0.2
    pool_scores[2] = 0.0  # image 2: none
    kept = pool_boxes[:, [0, 21, 25]]
    kept_classes = pool_classes[:, [0, 21, 25]]
    out = box_voting(kept, kept_classes, pool_boxes, pool_scores, pool_classes, 0.5,
                     score_threshold=0.2).numpy()
    for i in range(3):
        alone = box_voting(kept[i:i + 1], kept_classes[i:i + 1], pool_boxes[i:i + 1],
                           pool_scores[i:i + 1], pool_classes[i:i + 1], 0.5,
                           score_threshold=0.2).numpy()
        np.testing.assert_allclose(out[i:i + 1], alone, atol=1e-5)
    np.testing.assert_allclose(out, voting_np(kept, kept_classes, pool_boxes, pool_scores,
                                              pool_classes, 0.5, 0.2), atol=1e-4)
    np.testing.assert_array_equal(out[2], kept[2])


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
