"""Golden losses of the detector: fixed weights, a fixed batch, a fixed
sampling seed, and the four losses pinned (as detectron2's
``tests/modeling/test_roi_heads.py`` pins ``loss_cls`` / ``loss_box_reg`` of
a seeded model on fixed boxes).

Pinned numbers catch any change to what the detector computes: anchors,
matching, sampling, proposals, pooling, the heads, the losses. They are
recorded once from the code (``python tests/test_detection/test_detection_golden.py``
prints them); a change that moves them on purpose records new ones and says
why. Pinning alone cannot say the numbers are right, so the second test
recomputes the four losses in numpy, outside the package's target and loss
code, on a configuration whose samples take every labelled anchor and RoI
(no randomness), from the model's own raw outputs.
"""

import numpy as np
import pytest

from box_fixtures import iou_matrix, np_
from detection.model import LOSS_NAMES, FasterRCNN

# A narrow ResNet-18 on 64 x 64 images: a 4 x 4 C4 map, 3 anchors a cell.
CONFIG = dict(num_classes=3, depth=18, width=8, anchor_scales=(16, 32, 64),
              anchor_ratios=(1.0,), pooled_size=4, seed=0, rpn_batch=32,
              rpn_positive_fraction=0.5, roi_batch=16, roi_positive_fraction=0.25,
              proposals=dict(pre_nms_train=48, post_nms_train=20))
ANCHORS_PER_IMAGE = 4 * 4 * 3
POST_NMS = 20
IMAGES = np.random.default_rng(2024).normal(size=(2, 64, 64, 3)).astype("float32")
SIZES = np.array([[64, 64], [60, 56]], "float32")
# Image 0 has every kind of anchor: positive at IoU >= 0.7 (box 0's best,
# 0.711), positive only as box 1's best (0.518), one ignored at [0.6, 0.7),
# and negatives; image 1 one box on an anchor (IoU 1) and a padded row.
GT_BOXES = np.array([[[3, 32, 48, 64], [19, 38, 64, 59]],
                     [[16, 16, 48, 48], [-1, -1, -1, -1]]], "float32")
GT_CLASSES = np.array([[0, 2], [1, -1]], "int32")

# Recorded from the code after the targets refactor (TF 2.21, Keras 3.15, CPU;
# the code before it gave the same numbers to the last bit; with oneDNN off
# the last digit may move).
GOLDEN = {"rpn_objectness": 1.04622149, "rpn_box": 0.14868969,
          "head_class": 0.61673820, "head_box": 0.21097365}


def _model(**overrides):
    """The detector with weights from a numpy generator (independent of
    Keras's initialisers): kernels N(0, 1 / fan_in), biases 0, BN the
    identity (statistics 0 / 1, gamma 1, beta 0)."""
    model = FasterRCNN(**{**CONFIG, **overrides}).ensure_built(64)
    rng = np.random.default_rng(7)
    for w in sorted(model.weights, key=lambda w: w.path):
        name = w.path.rsplit("/", 1)[-1]
        if name == "kernel":
            fan_in = int(np.prod(w.shape[:-1]))
            value = rng.normal(0, 1 / np.sqrt(fan_in), w.shape)
        elif name in ("gamma", "moving_variance"):
            value = np.ones(w.shape)
        else:
            value = np.zeros(w.shape)
        w.assign(value.astype("float32"))
    return model


def _losses(model):
    x = {"images": IMAGES, "image_sizes": SIZES}
    pred = model(x, training=True)
    values = model.loss_values(pred, SIZES, GT_BOXES, GT_CLASSES)
    return pred, {k: float(v) for k, v in values.items()}


def test_the_four_losses_are_the_golden_ones():
    _, values = _losses(_model())
    assert set(values) == set(LOSS_NAMES)
    for name in LOSS_NAMES:
        assert values[name] == pytest.approx(GOLDEN[name], rel=1e-5), (name, values)
    assert values["head_box"] > 0 and values["rpn_box"] > 0  # both box losses see positives


# --- the numpy recomputation -------------------------------------------------------

def _np_encode(boxes, refs, weights):
    wy, wx, wh, ww = weights
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ha, wa = refs[:, 2] - refs[:, 0], refs[:, 3] - refs[:, 1]
    return np.stack([wy * (boxes[:, 0] + h / 2 - refs[:, 0] - ha / 2) / ha,
                     wx * (boxes[:, 1] + w / 2 - refs[:, 1] - wa / 2) / wa,
                     wh * np.log(h / ha), ww * np.log(w / wa)], -1)


def _smooth_l1(x, beta):
    return np.where(np.abs(x) < beta, 0.5 * x * x / beta, np.abs(x) - 0.5 * beta)


def _valid(boxes):
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def _np_rpn_losses(objectness, deltas, anchors):
    """Ren et al.: positive >= 0.7 or a box's best anchor, negative < 0.3;
    log loss over the labelled anchors, smooth L1 (beta 1/9) on positives,
    both over the number labelled (the sample takes them all here)."""
    bce_sum = box_sum = count = 0.0
    for b in range(len(GT_BOXES)):
        gt = GT_BOXES[b][_valid(GT_BOXES[b])]
        iou = iou_matrix(anchors, gt)
        best, idx = iou.max(1), iou.argmax(1)
        pos = best >= 0.7
        for j in range(len(gt)):
            pos |= (iou[:, j] == iou[:, j].max()) & (iou[:, j].max() > 0)
        neg = (best < 0.3) & ~pos
        logits = objectness[b].astype(np.float64)
        bce = np.where(pos, np.logaddexp(0, -logits), np.logaddexp(0, logits))
        bce_sum += bce[pos | neg].sum()
        target = _np_encode(gt[idx[pos]], anchors[pos], (1, 1, 1, 1))
        box_sum += _smooth_l1(deltas[b][pos] - target, 1 / 9).sum()
        count += (pos | neg).sum()
    return bce_sum / count, box_sum / count


def _np_head_losses(rois, class_logits, box_deltas):
    """Foreground at IoU >= 0.5 (class + 1), background below; softmax
    cross-entropy over every real RoI, smooth L1 (beta 1) on the matched
    class's deltas (weights 10, 10, 5, 5) of the foreground."""
    ce_sum = box_sum = count = 0.0
    for b in range(len(GT_BOXES)):
        gt_valid = _valid(GT_BOXES[b])
        gt, classes = GT_BOXES[b][gt_valid], GT_CLASSES[b][gt_valid]
        real = _valid(rois[b])
        r, logits, deltas = rois[b][real], class_logits[b][real], box_deltas[b][real]
        iou = iou_matrix(r, gt)
        fg = iou.max(1) >= 0.5
        label = np.where(fg, classes[iou.argmax(1)] + 1, 0)
        logits = logits.astype(np.float64)
        logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) \
            + logits.max(1)
        ce_sum += (logz - logits[np.arange(len(label)), label]).sum()
        pred = deltas[np.flatnonzero(fg), label[fg] - 1]
        target = _np_encode(gt[iou.argmax(1)[fg]], r[fg], (10, 10, 5, 5))
        box_sum += _smooth_l1(pred - target, 1.0).sum()
        count += real.sum()
    return ce_sum / count, box_sum / count


def test_the_losses_equal_a_numpy_recomputation():
    """Samples as large as the candidates, all positives allowed: every
    labelled anchor and every real RoI has a loss, so no randomness."""
    from detection.proposals import generate_proposals

    model = _model(rpn_batch=ANCHORS_PER_IMAGE, rpn_positive_fraction=1.0,
                   roi_batch=POST_NMS + GT_BOXES.shape[1], roi_positive_fraction=1.0)
    pred, values = _losses(model)
    anchors = np_(pred["anchors"])
    objectness, deltas = np_(pred["objectness"]), np_(pred["deltas"])
    rpn_objectness, rpn_box = _np_rpn_losses(objectness, deltas, anchors)
    # The head's raw outputs on every candidate RoI: the proposals (the
    # proposal layer is tested on its own) and the ground-truth boxes.
    proposals, _, _ = generate_proposals(objectness, deltas, anchors, SIZES,
                                         model.proposal_config, training=True)
    rois = np.concatenate([np_(proposals), GT_BOXES], axis=1)
    safe = np.where(_valid(rois.reshape(-1, 4)).reshape(rois.shape[:2])[..., None], rois,
                    [0, 0, 16, 16])
    head = model.roi_head(model._pool(pred["c4"], safe.astype("float32")), training=True)
    n = rois.shape[1]
    class_logits = np_(head["class_logits"]).reshape(2, n, -1)
    box_deltas = np_(head["box_deltas"]).reshape(2, n, -1, 4)
    head_class, head_box = _np_head_losses(rois, class_logits, box_deltas)
    want = {"rpn_objectness": rpn_objectness, "rpn_box": rpn_box,
            "head_class": head_class, "head_box": head_box}
    for name in LOSS_NAMES:
        assert values[name] == pytest.approx(want[name], rel=1e-4, abs=1e-7), \
            (name, values, want)
    assert rpn_box > 0 and head_box > 0


if __name__ == "__main__":  # print the numbers to record in GOLDEN
    print(_losses(_model())[1])
