"""ILSVRC localization error on constructed predictions."""

import numpy as np
import pytest

from localization.metrics import guess_correct, localization_errors, oracle_error

GT = [(np.array([3]), np.array([[10.0, 10.0, 110.0, 110.0]])),
      (np.array([7, 7]), np.array([[0.0, 0.0, 50.0, 50.0], [60.0, 60.0, 100.0, 160.0]]))]


def _guesses(first_classes, first_boxes, others=(900, 901, 902, 903)):
    out = []
    for c, b in zip(first_classes, first_boxes):
        classes = np.array([c, *others])
        boxes = np.array([b] + [[0, 0, 1, 1]] * len(others), np.float32)
        out.append((classes, boxes))
    return out


def test_ground_truth_boxes_as_guesses_give_zero_error():
    guesses = [(c[:1], b[:1]) for c, b in GT]
    r = localization_errors(guesses, GT)
    assert r == {"images": 2, "top1_loc_error": 0.0, "top5_loc_error": 0.0,
                 "top1_cls_error": 0.0, "top5_cls_error": 0.0}
    # Either box of a two-box image counts; the oracle error agrees.
    assert guess_correct([7], GT[1][1][1:], *GT[1])[0]
    assert oracle_error([GT[0][1][0], GT[1][1][1]], GT) == 0.0


def test_iou_just_under_half_is_wrong_and_at_half_is_right():
    # Ground truth 100 x 100; a box of the same height and width w overlapping
    # it by (w - shift): IoU = 100 * (100 - s) / (100 * (100 + s)).
    gt = [(np.array([3]), np.array([[0.0, 0.0, 100.0, 100.0]]))]
    s_half = 100 / 3  # IoU exactly 0.5
    at = [[0.0, s_half, 100.0, 100.0 + s_half]]
    under = [[0.0, s_half + 0.05, 100.0, 100.0 + s_half + 0.05]]
    assert localization_errors(_guesses([3], at), gt)["top1_loc_error"] == 0.0
    r = localization_errors(_guesses([3], under), gt)
    assert r["top1_loc_error"] == 1.0 and r["top5_loc_error"] == 1.0
    assert r["top1_cls_error"] == 0.0  # the class was right: only the box fails
    assert oracle_error([under[0]], gt) == 1.0 and oracle_error([at[0]], gt) == 0.0


def test_right_box_with_wrong_class_is_wrong():
    guesses = _guesses([4, 8], [GT[0][1][0], GT[1][1][0]])
    r = localization_errors(guesses, GT)
    assert r["top1_loc_error"] == 1.0 and r["top5_loc_error"] == 1.0
    assert r["top1_cls_error"] == 1.0
    # The right class whose box belongs to another image's object is wrong too.
    assert not guess_correct([3], [[60.0, 60.0, 100.0, 160.0]], *GT[0])[0]


def test_correct_guess_in_position_five_counts_for_top5_only():
    classes = np.array([1, 2, 4, 5, 3])
    boxes = np.array([GT[0][1][0]] * 4 + [GT[0][1][0]], np.float32)
    r = localization_errors([(classes, boxes)], GT[:1])
    assert r["top1_loc_error"] == 1.0 and r["top5_loc_error"] == 0.0
    assert r["top1_cls_error"] == 1.0 and r["top5_cls_error"] == 0.0
    # Position 5 with a wrong box does not count either.
    boxes[4] = [200, 200, 300, 300]
    assert localization_errors([(classes, boxes)], GT[:1])["top5_loc_error"] == 1.0


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="no images"):
        localization_errors([], [])
    with pytest.raises(ValueError, match="2 images guessed but 1"):
        localization_errors(_guesses([3, 3], GT[0][1].tolist() * 2), GT[:1])
    with pytest.raises(ValueError, match="guessed classes but"):
        guess_correct([1, 2], [[0, 0, 1, 1]], *GT[0])
