"""NMS, proposals and RoI pooling against numpy references."""

import numpy as np

from box_fixtures import iou, random_boxes, roi_align_reference
from detection.anchors import AnchorGenerator
from detection.ops.nms import batched_nms, per_class_nms
from detection.ops.roi_align import roi_align, roi_pool
from detection.proposals import ProposalConfig, generate_proposals


def _nms_ref(boxes, scores, thresh, k):
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order and len(keep) < k:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if iou(boxes[i], boxes[j]) <= thresh]
    return keep


def _boxes(rng, n):
    return random_boxes(rng, n, size=100, sides=(5, 40))


def test_batched_nms_matches_greedy_reference():
    rng = np.random.default_rng(0)
    boxes = np.stack([_boxes(rng, 60), _boxes(rng, 60)])
    scores = rng.uniform(size=(2, 60)).astype(np.float32)
    out_boxes, out_scores, idx, count = batched_nms(boxes, scores, 25, 0.5)
    for b in range(2):
        ref = _nms_ref(boxes[b], scores[b], 0.5, 25)
        n = int(count[b])
        assert idx.numpy()[b, :n].tolist() == ref
        assert (idx.numpy()[b, n:] == -1).all() and (out_boxes.numpy()[b, n:] == -1).all()
        np.testing.assert_allclose(out_boxes.numpy()[b, :n], boxes[b][ref])
    # Fewer candidates than outputs: padded.
    few = batched_nms(boxes[:, :3], scores[:, :3], 10, 0.99)
    assert few[3].numpy().tolist() == [3, 3]


def test_per_class_nms_keeps_classes_apart():
    box = np.array([10, 10, 50, 50], np.float32)
    boxes = np.tile(box, (1, 2, 2, 1))  # 2 RoIs x 2 classes, all the same box
    scores = np.array([[[0.9, 0.8], [0.6, 0.01]]], np.float32)
    b, s, c, n = per_class_nms(boxes, scores, max_per_class=100, max_total=5)
    assert int(n[0]) == 2  # one per class survives; 0.01 is below 0.05
    assert sorted(c.numpy()[0, :2].tolist()) == [0, 1]
    np.testing.assert_allclose(s.numpy()[0, :2], [0.9, 0.8])
    assert (c.numpy()[0, 2:] == -1).all()


def test_proposals_from_zero_deltas_are_the_best_clipped_anchors():
    gen = AnchorGenerator(stride=16, scales=(32,), aspect_ratios=(1.0,))
    anchors = gen(4, 4)  # 16 anchors, 32x32, centred every 16 px
    m = anchors.shape[0]
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, m)).astype(np.float32)
    cfg = ProposalConfig(pre_nms_test=10, post_nms_test=5, nms_iou=0.99)
    boxes, probs, count = generate_proposals(logits, np.zeros((1, m, 4), np.float32),
                                             anchors, [[60.0, 60.0]], cfg)
    order = np.argsort(-logits[0])[:5]
    want = np.clip(np.asarray(anchors)[order], 0, 60)
    assert int(count[0]) == 5
    np.testing.assert_allclose(boxes.numpy()[0], want, atol=1e-5)
    np.testing.assert_allclose(probs.numpy()[0], 1 / (1 + np.exp(-logits[0][order])),
                               rtol=1e-5)
    # Tiny boxes are dropped; training sizes are used when training.
    cfg = ProposalConfig(pre_nms_train=16, post_nms_train=16, min_size=20.0)
    boxes, _, count = generate_proposals(logits, np.zeros((1, m, 4), np.float32),
                                         anchors, [[60.0, 60.0]], cfg, training=True)
    kept = boxes.numpy()[0, :int(count[0])]
    assert (kept[:, 2] - kept[:, 0] > 20).all() and int(count[0]) < 16


def test_roi_align_matches_the_aligned_reference():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
    boxes = np.array([[[16, 16, 120, 100], [40, 8, 90, 150]],
                      [[0, 0, 176, 144], [30, 30, 60, 60]]], np.float32)
    out = roi_align(feats, boxes, output_size=4, spatial_scale=1 / 16, sampling_ratio=2)
    assert out.shape == (4, 4, 4, 3)
    for b in range(2):
        for r in range(2):
            ref = roi_align_reference(feats[b], boxes[b, r], 4, 1 / 16, 2)
            np.testing.assert_allclose(out.numpy()[b * 2 + r], ref, atol=1e-4)


def test_roi_pool_is_the_max_over_snapped_cells():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(1, 10, 10, 2)).astype(np.float32)
    box = np.array([[[32, 16, 111, 111]]], np.float32)  # cells y 2..7, x 1..7
    out = roi_pool(feats, box, output_size=2, spatial_scale=1 / 16).numpy()[0]
    cells = feats[0, 2:8, 1:8]  # 6 x 7 cells
    ys = [(0, 3), (3, 6)]
    xs = [(0, 4), (3, 7)]  # bins of 3.5 cells: the middle column is shared
    for i, (ya, yb) in enumerate(ys):
        for j, (xa, xb) in enumerate(xs):
            np.testing.assert_allclose(out[i, j], cells[ya:yb, xa:xb].max(axis=(0, 1)),
                                       rtol=1e-6)
    assert roi_pool(feats, box, output_size=14).shape == (1, 14, 14, 2)
