"""Target assignment (detection/targets.py): anchor labels follow the IoU
thresholds, samples respect the positive fraction and never take ignored or
padded rows, a new sample every step, and the detector and the localizer
label with the same function."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from box_fixtures import iou_matrix, np_, random_boxes
from detection.box_coder import HEAD_WEIGHTS, RPN_WEIGHTS, BoxCoder
from detection.matcher import IGNORE, NEGATIVE, POSITIVE, head_matcher, rpn_matcher
from detection.targets import label_and_sample_anchors, label_and_sample_proposals

PAD = [-1.0] * 4


def np_encode(boxes, refs, weights):
    """The R-CNN parameterisation in numpy (Girshick et al.)."""
    wy, wx, wh, ww = weights
    h, w = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    ha, wa = refs[..., 2] - refs[..., 0], refs[..., 3] - refs[..., 1]
    y, x = boxes[..., 0] + h / 2, boxes[..., 1] + w / 2
    ya, xa = refs[..., 0] + ha / 2, refs[..., 1] + wa / 2
    return np.stack([wy * (y - ya) / ha, wx * (x - xa) / wa,
                     wh * np.log(h / ha), ww * np.log(w / wa)], -1)


def np_anchor_labels(anchors, gt):
    """labels [M] and matched gt index [M] by Ren et al. Sec. 3.1.2, in
    numpy: >= 0.7 positive, < 0.3 negative, between ignored, and each gt's
    best anchors positive (matched to their own best gt)."""
    valid = [(g[2] > g[0]) and (g[3] > g[1]) for g in gt]
    labels = np.full(len(anchors), NEGATIVE)
    matched = np.zeros(len(anchors), int)
    if not any(valid):
        return labels, matched
    iou = np.where(valid, iou_matrix(anchors, gt), -1.0)
    best, matched = iou.max(1), iou.argmax(1)
    labels = np.where(best >= 0.7, POSITIVE, np.where(best < 0.3, NEGATIVE, IGNORE))
    for j in np.flatnonzero(valid):
        top = iou[:, j].max()
        if top > 0:
            labels[iou[:, j] == top] = POSITIVE
    return labels, matched


# Five anchors, one per rule, against two boxes and a padded row.
GT = np.array([[0, 0, 10, 10], [50, 50, 60, 60], PAD], np.float32)
ANCHORS = np.array([
    [0, 0, 10, 10],        # IoU 1 with gt 0: positive
    [0, 0, 10, 14],        # IoU 0.714: positive
    [0, 0, 10, 20],        # IoU 0.5: between the thresholds, ignored
    [100, 100, 110, 110],  # IoU 0: negative
    [50, 50, 60, 75],      # IoU 0.4 with gt 1, its best anchor: positive
], np.float32)


def _anchors(anchors=ANCHORS, gt=GT, num=256, fraction=0.5, seed=0):
    return label_and_sample_anchors(anchors, np.asarray(gt)[None] if gt.ndim == 2 else gt,
                                    rpn_matcher(), BoxCoder(RPN_WEIGHTS), num, fraction,
                                    seed)


def test_anchor_labels_follow_the_rpn_iou_thresholds():
    t = _anchors()
    assert np_(t.labels)[0].tolist() == [POSITIVE, POSITIVE, IGNORE, NEGATIVE, POSITIVE]
    want = np_encode(GT[[0, 0, 1]], ANCHORS[[0, 1, 4]], RPN_WEIGHTS)
    np.testing.assert_allclose(np_(t.deltas)[0, [0, 1, 4]], want, atol=1e-6)
    np.testing.assert_array_equal(np_(t.deltas)[0, [2, 3]], 0.0)  # no target: zeros
    # A sample larger than the anchors takes every labelled one, never the ignored.
    assert np_(t.sampled)[0].tolist() == [True, True, False, True, True]


def test_anchor_labels_equal_a_numpy_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    anchors = random_boxes(rng, 400, size=100)
    gt = np.stack([random_boxes(rng, 4, size=100), np.concatenate(
        [random_boxes(rng, 1, size=100), np.full((3, 4), -1, np.float32)])])
    t = _anchors(anchors, gt)
    for b in range(2):
        labels, matched = np_anchor_labels(anchors, gt[b])
        np.testing.assert_array_equal(np_(t.labels)[b], labels)
        pos = labels == POSITIVE
        np.testing.assert_allclose(np_(t.deltas)[b][pos],
                                   np_encode(gt[b][matched[pos]], anchors[pos], RPN_WEIGHTS),
                                   rtol=1e-4, atol=1e-4)
        assert {POSITIVE, NEGATIVE} <= set(labels.tolist())


def test_an_image_without_boxes_has_only_negatives():
    t = _anchors(gt=np.full((1, 2, 4), -1, np.float32), num=3)
    assert (np_(t.labels) == NEGATIVE).all() and np_(t.sampled).sum() == 3


def test_the_positive_fraction_caps_positives_and_negatives_fill_the_rest():
    rng = np.random.default_rng(1)
    gt = random_boxes(rng, 3, size=100, sides=(30, 50))
    near = gt[rng.integers(0, 3, 60)] + rng.uniform(-1, 1, (60, 4)).astype(np.float32)
    anchors = np.concatenate([near, random_boxes(rng, 600, size=100)])
    gt = gt[None]
    labels = np_(_anchors(anchors, gt).labels)[0]
    n_pos, n_neg = (labels == POSITIVE).sum(), (labels == NEGATIVE).sum()
    assert n_pos > 8 and n_neg > 64 and (labels == IGNORE).any()
    for num, fraction in ((16, 0.5), (64, 0.25), (40, 0.0)):
        sampled = np_(_anchors(anchors, gt, num, fraction).sampled)[0]
        cap = int(num * fraction)
        assert (sampled & (labels == POSITIVE)).sum() == min(n_pos, cap)
        assert (sampled & (labels == NEGATIVE)).sum() == num - min(n_pos, cap)
        assert not (sampled & (labels == IGNORE)).any()
    # Fewer positives than the cap: all of them, negatives fill the rest.
    sampled = np_(_anchors(anchors, gt, 4 * n_pos, 0.5).sampled)[0]
    assert (sampled & (labels == POSITIVE)).sum() == n_pos
    assert sampled.sum() == 4 * n_pos
    with pytest.raises(ValueError, match="positive_fraction"):
        _anchors(fraction=1.5)


def test_each_step_draws_a_new_sample_and_a_seed_repeats_the_run():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    anchors = random_boxes(rng, 500, size=100)
    gt = random_boxes(rng, 3, size=100)[None]
    gen = keras.random.SeedGenerator(7)
    step = tf.function(lambda: _anchors(anchors, gt, 32, 0.5, gen).sampled)
    compiled = [np_(step()) for _ in range(3)]  # as inside fit's train step
    assert not np.array_equal(compiled[0], compiled[1])
    assert not np.array_equal(compiled[1], compiled[2])
    again = tf.function(lambda g: _anchors(anchors, gt, 32, 0.5, g).sampled)
    g2 = keras.random.SeedGenerator(7)
    np.testing.assert_array_equal(np_(again(g2)), compiled[0])
    np.testing.assert_array_equal(np_(again(g2)), compiled[1])
    # An int seed: the same sample every call.
    np.testing.assert_array_equal(np_(_anchors(anchors, gt, 32, 0.5, 3).sampled),
                                  np_(_anchors(anchors, gt, 32, 0.5, 3).sampled))


def _proposals(proposals, gt, classes, num, fraction=0.25, seed=0):
    return label_and_sample_proposals(proposals, gt, classes, head_matcher(),
                                      BoxCoder(HEAD_WEIGHTS), num, fraction, seed,
                                      stand_in_size=16)


PROPOSAL_GT = np.array([[[0, 0, 40, 40], [50, 50, 90, 100], PAD]], np.float32)
PROPOSAL_CLASSES = np.array([[2, 0, -1]])
PROPOSALS = np.array([[[0, 0, 40, 44],     # IoU 0.91 with gt 0: class 2 -> 3
                       [60, 60, 90, 100],  # IoU 0.6 with gt 1: class 0 -> 1
                       [0, 0, 40, 80],     # IoU 0.5: foreground (>= 0.5)
                       [0, 0, 40, 90],     # IoU 0.44: background
                       PAD, PAD]], np.float32)


def test_proposals_take_the_ground_truth_and_its_classes():
    gt, proposals = PROPOSAL_GT, PROPOSALS
    t = _proposals(proposals, gt, PROPOSAL_CLASSES, num=9, fraction=1.0)
    rois, cls, sampled = np_(t.rois)[0], np_(t.classes)[0], np_(t.sampled)[0]
    # 4 proposals + 2 ground-truth boxes are sampled; 3 padded rows are not.
    assert sampled.tolist() == [True] * 6 + [False] * 3
    assert cls[:6].tolist() == [3, 1, 3, 0, 3, 1]  # the sampled first, in order
    np.testing.assert_array_equal(rois[:4], proposals[0, :4])
    np.testing.assert_array_equal(rois[4:6], gt[0, :2])  # gt boxes joined the proposals
    np.testing.assert_array_equal(rois[6:], [[0, 0, 16, 16]] * 3)  # stand-in box
    fg = cls > 0
    matched = gt[0][[0, 1, 0, 0, 1]]
    np.testing.assert_allclose(np_(t.deltas)[0][fg], np_encode(matched, rois[fg],
                                                               HEAD_WEIGHTS), atol=1e-5)
    np.testing.assert_array_equal(np_(t.deltas)[0][~fg], 0.0)


def test_proposals_respect_the_foreground_fraction():
    rng = np.random.default_rng(3)
    gt = random_boxes(rng, 2, size=100, sides=(30, 50))
    near = gt[rng.integers(0, 2, 30)] + rng.uniform(-1, 1, (30, 4)).astype(np.float32)
    far = random_boxes(rng, 60, size=100) + 200  # no overlap: background
    proposals = np.concatenate([near, far])[None]
    t = _proposals(proposals, gt[None], np.array([[0, 1]]), num=32, fraction=0.25)
    cls, sampled = np_(t.classes)[0], np_(t.sampled)[0]
    assert sampled.all()  # 92 candidates: a full 32
    assert (cls > 0).sum() == 8 and (cls == 0).sum() == 24


def _small_localizer(seed):
    from localization.model import Localizer
    from resnet_tf import build

    clf = build("resnet8", classes=4)
    loc = Localizer(clf.get_config(), anchor_scales=(10, 16, 24), anchor_ratios=(1.0,),
                    head_channels=16, seed=seed)
    loc.ensure_built()
    return loc


def test_the_localizer_labels_anchors_with_the_detectors_function():
    from detection import losses

    loc = _small_localizer(seed=5)
    x = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype("float32")
    labels = np.array([1, 3])
    gt = np.array([[[4, 4, 20, 20], PAD], [[2, 6, 30, 28], [8, 8, 16, 16]]], np.float32)
    pred = loc(x, training=True)
    got = loc.loss_values(pred["features"], pred["anchors"], labels, gt)
    # The same call, by hand: the head's GT-class outputs, then the function
    # with a generator in the state the localizer's started in.
    t = label_and_sample_anchors(pred["anchors"], gt, loc.matcher, loc.coder,
                                 loc.anchors_per_image, loc.positive_fraction,
                                 keras.random.SeedGenerator(5))
    cls, reg = loc.head.for_classes(pred["features"], labels[:, None])
    want = losses.rpn_losses(np_(cls).reshape(2, -1), np_(reg).reshape(2, -1, 4),
                             t.labels, t.sampled, t.deltas)
    assert float(got["loc_cls"]) == pytest.approx(float(want["rpn_objectness"]), rel=1e-6)
    assert float(got["loc_reg"]) == pytest.approx(float(want["rpn_box"]), rel=1e-6)
    assert np_(t.sampled).sum() == 2 * loc.anchors_per_image
    # The next step draws a new sample.
    again = loc.loss_values(pred["features"], pred["anchors"], labels, gt)
    assert float(again["loc_cls"]) != float(got["loc_cls"])


def test_the_detector_labels_anchors_with_the_same_function():
    from detection import losses
    from detection.model import FasterRCNN

    model = FasterRCNN(2, depth=18, width=8, anchor_scales=(16, 32), anchor_ratios=(1.0,),
                       rpn_batch=16, roi_batch=8, pooled_size=4, seed=9,
                       proposals=dict(pre_nms_train=50, post_nms_train=10))
    x = {"images": np.random.default_rng(5).normal(size=(1, 64, 64, 3)).astype("float32"),
         "image_sizes": np.array([[64, 64]], "float32")}
    gt = np.array([[[8, 8, 40, 36], [30, 20, 60, 60]]], np.float32)
    pred = model(x, training=True)
    got = model.loss_values(pred, x["image_sizes"], gt, np.array([[0, 1]]))
    t = label_and_sample_anchors(pred["anchors"], gt, model.rpn_matcher, model.rpn_coder,
                                 16, 0.5, keras.random.SeedGenerator(9))
    want = losses.rpn_losses(pred["objectness"], pred["deltas"], t.labels, t.sampled,
                             t.deltas)
    for name in ("rpn_objectness", "rpn_box"):
        assert float(got[name]) == pytest.approx(float(want[name]), rel=1e-6), name
    # The next step draws a new sample (16 of the 32 anchors).
    again = model.loss_values(pred, x["image_sizes"], gt, np.array([[0, 1]]))
    assert float(again["rpn_objectness"]) != float(got["rpn_objectness"])


JAX_SCRIPT = r"""
import os, sys, numpy as np, keras
assert keras.backend.backend() == "jax"
sys.path[:0] = [sys.argv[2], os.path.dirname(sys.argv[2])]  # this folder, tests/
import test_detection_targets as t
a = t._anchors()
p = t._proposals(t.PROPOSALS, t.PROPOSAL_GT, t.PROPOSAL_CLASSES, num=9, fraction=1.0)
np.savez(sys.argv[1], labels=np.asarray(a.labels), deltas=np.asarray(a.deltas),
         sampled=np.asarray(a.sampled), classes=np.asarray(p.classes),
         rois=np.asarray(p.rois), roi_deltas=np.asarray(p.deltas))
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_targets_under_jax_equal_tensorflow(tmp_path):
    """Target assignment is keras.ops only, so the localizer trains under JAX."""
    out = tmp_path / "out.npz"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(out),
                           os.path.dirname(__file__)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    a = _anchors()
    p = _proposals(PROPOSALS, PROPOSAL_GT, PROPOSAL_CLASSES, num=9, fraction=1.0)
    np.testing.assert_array_equal(got["labels"], np_(a.labels))
    np.testing.assert_array_equal(got["sampled"], np_(a.sampled))
    np.testing.assert_allclose(got["deltas"], np_(a.deltas), atol=1e-5)
    np.testing.assert_array_equal(got["classes"], np_(p.classes))
    np.testing.assert_array_equal(got["rois"], np_(p.rois))
    np.testing.assert_allclose(got["roi_deltas"], np_(p.deltas), atol=1e-5)
