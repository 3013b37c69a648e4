"""Detection building blocks: box ops, anchors, box coder, matcher, sampler."""

import math

import numpy as np
import pytest

from box_fixtures import iou_matrix, np_, random_boxes
from detection.anchors import AnchorGenerator
from detection.box_coder import HEAD_WEIGHTS, RPN_WEIGHTS, SCALE_CLIP, BoxCoder
from detection.matcher import (BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, IGNORE, NEGATIVE,
                               POSITIVE, Matcher, head_matcher, rpn_matcher)
from detection.ops import boxes as B
from detection.sampler import sample_balanced


def test_iou_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 30), random_boxes(rng, 7)
    np.testing.assert_allclose(np_(B.pairwise_iou(a, b)), iou_matrix(a, b), atol=1e-5)


XYWH = np.array([[10, 20, 30, 40]], np.float32)  # x, y, w, h (COCO)
YXYX = np.array([[20, 10, 60, 40]], np.float32)  # the same box, internal


def test_xywh_converts_to_the_internal_format():
    np.testing.assert_allclose(np_(B.to_internal(XYWH, "xywh")), YXYX)


def test_relative_coordinates_round_trip():
    rel = np_(B.from_internal(YXYX, "rel_yxyx", height=100, width=50))
    np.testing.assert_allclose(rel, [[0.2, 0.2, 0.6, 0.8]])
    np.testing.assert_allclose(np_(B.to_internal(rel, "rel_yxyx", height=100, width=50)),
                               YXYX, rtol=1e-6)


def test_clip_holds_boxes_inside_the_image():
    np.testing.assert_allclose(np_(B.clip(np.array([[-5, 3, 120, 60]], np.float32),
                                          100.0, 50.0)), [[0, 3, 100, 50]])


def test_an_unknown_format_is_named_in_the_error():
    with pytest.raises(ValueError, match="cxcywh"):
        B.to_internal(XYWH, "cxcywh")


def test_padding_and_empty_boxes_are_not_valid():
    assert np_(B.is_valid(np.array([[-1, -1, -1, -1], [0, 0, 0, 5], [0, 0, 2, 2]],
                                   np.float32))).tolist() == [False, False, True]


def test_anchor_generator_layout():
    gen = AnchorGenerator()
    assert gen.num_anchors == 9
    cell = gen.cell_anchors()
    h, w = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    np.testing.assert_allclose(np.sqrt(h * w), np.repeat([128, 256, 512], 3), rtol=1e-5)
    np.testing.assert_allclose(h / w, np.tile([0.5, 1, 2], 3), rtol=1e-5)
    anchors = np_(gen(3, 5))
    assert anchors.shape == (3 * 5 * 9, 4)
    # Ordering (y, x, anchor): the anchors of cell (1, 2) are rows 63..71,
    # centred at (16, 32).
    cell_12 = anchors[(1 * 5 + 2) * 9:(1 * 5 + 2) * 9 + 9]
    np.testing.assert_allclose((cell_12[:, 0] + cell_12[:, 2]) / 2, 16.0)
    np.testing.assert_allclose((cell_12[:, 1] + cell_12[:, 3]) / 2, 32.0)
    custom = AnchorGenerator(stride=8, scales=(32,), aspect_ratios=(1.0,), offset=0.5)
    np.testing.assert_allclose(np_(custom(1, 2)), [[-12, -12, 20, 20], [-12, -4, 20, 28]])
    with pytest.raises(ValueError, match="positive"):
        AnchorGenerator(scales=(0, 128))


@pytest.mark.parametrize("weights", [RPN_WEIGHTS, HEAD_WEIGHTS])
def test_box_coder_round_trip_and_known_values(weights):
    rng = np.random.default_rng(1)
    anchors, boxes = random_boxes(rng, 50), random_boxes(rng, 50)
    coder = BoxCoder(weights)
    deltas = coder.encode(boxes, anchors)
    np.testing.assert_allclose(np_(coder.decode(deltas, anchors)), boxes, rtol=1e-4,
                               atol=1e-3)
    # A box twice the anchor's size, same centre: (0, 0, w_h log 2, w_w log 2).
    a = np.array([[10, 10, 30, 50]], np.float32)
    b = np.array([[0, -10, 40, 70]], np.float32)
    np.testing.assert_allclose(np_(coder.encode(b, a)),
                               [[0, 0, weights[2] * math.log(2), weights[3] * math.log(2)]],
                               atol=1e-6)


def test_box_coder_clips_huge_scales():
    coder = BoxCoder(HEAD_WEIGHTS)
    a = np.array([[0, 0, 16, 16]], np.float32)
    out = np_(coder.decode(np.array([[0, 0, 1e4, 1e4]], np.float32), a))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 16 * math.exp(SCALE_CLIP), rtol=1e-5)


def test_rpn_matcher_rules():
    gt = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [-1, -1, -1, -1]], np.float32)
    anchors = np.array([
        [0, 0, 10, 10],     # IoU 1 with gt 0: positive
        [0, 0, 10, 14],     # IoU 0.714 with gt 0: positive
        [0, 0, 10, 20],     # IoU 0.5 with gt 0: between -> ignored
        [100, 100, 110, 110],  # IoU 0: negative
        [50, 50, 60, 75],   # IoU 0.4 with gt 1, its best: low-quality positive
    ], np.float32)
    matches, labels, iou = rpn_matcher().match(anchors, gt)
    assert np_(matches).tolist() == [0, 0, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD, 1]
    assert np_(labels).tolist() == [POSITIVE, POSITIVE, IGNORE, NEGATIVE, POSITIVE]
    np.testing.assert_allclose(np_(iou), [1, 10 / 14, 0.5, 0, 0.4], atol=1e-5)
    strict = Matcher(0.7, 0.3).match(anchors, gt)
    assert np_(strict.matches)[4] == BETWEEN_THRESHOLDS and np_(strict.labels)[4] == IGNORE
    head = head_matcher().match(anchors, gt)
    assert np_(head.matches).tolist() == [0, 0, 0, BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD]
    assert np_(head.labels).tolist() == [POSITIVE] * 3 + [NEGATIVE] * 2


def test_matcher_labels_are_derived_from_its_indices_everywhere():
    rng = np.random.default_rng(4)
    anchors = random_boxes(rng, 300)
    gt = random_boxes(rng, 5)
    result = rpn_matcher().match(anchors, gt)
    m, lab = np_(result.matches), np_(result.labels)
    assert lab.dtype == np.int32 and m.dtype == np.int32
    np.testing.assert_array_equal(lab == POSITIVE, m >= 0)
    np.testing.assert_array_equal(lab == NEGATIVE, m == BELOW_LOW_THRESHOLD)
    np.testing.assert_array_equal(lab == IGNORE, m == BETWEEN_THRESHOLDS)
    assert {POSITIVE, NEGATIVE, IGNORE} <= set(lab.tolist())


def test_matcher_batched_and_with_no_ground_truth():
    rng = np.random.default_rng(2)
    anchors = np.stack([random_boxes(rng, 20), random_boxes(rng, 20)])
    gt = np.stack([random_boxes(rng, 3), np.full((3, 4), -1, np.float32)])
    matches, labels, _ = rpn_matcher().match(anchors, gt)
    m = np_(matches)
    assert m.shape == (2, 20) and (m[1] == BELOW_LOW_THRESHOLD).all()
    assert (np_(labels)[1] == NEGATIVE).all()
    single = rpn_matcher().match(anchors[0], gt[0]).matches
    np.testing.assert_array_equal(m[0], np_(single))
    with pytest.raises(ValueError, match="low <= high"):
        Matcher(0.3, 0.7)


def test_sampler_respects_counts_and_fraction():
    rng = np.random.default_rng(3)
    labels = rng.choice([1, 0, -1], size=(4, 1000), p=[0.02, 0.9, 0.08]).astype("int32")
    labels[3] = -1
    labels[3, :10] = 1
    chosen = np_(sample_balanced(labels, 256, 0.5, seed=0))
    for row, sel in zip(labels, chosen):
        n_pos, n_neg = (sel & (row == 1)).sum(), (sel & (row == 0)).sum()
        assert not (sel & (row == -1)).any()
        assert n_pos == min((row == 1).sum(), 128)
        assert n_neg == min((row == 0).sum(), 256 - n_pos)
    head = np_(sample_balanced(np.ones((1, 600), "int32"), 512, 0.25, seed=1))
    assert head.sum() == 128  # only positives available: capped at a quarter
    again = np_(sample_balanced(labels, 256, 0.5, seed=0))
    np.testing.assert_array_equal(again, chosen)
    assert not np.array_equal(np_(sample_balanced(labels, 256, 0.5, seed=5)), chosen)
