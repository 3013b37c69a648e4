"""ILSVRC localization error (numpy).

A guess is a (class, box) pair; an image gets up to 5, ranked. A guess is
correct when its class is one of the image's ground-truth classes and its
box has IoU >= 0.5 with at least one ground-truth box of that class. The
top-k localization error is the fraction of images none of whose first k
guesses is correct. The classification error of the same guesses ignores
the boxes. The "oracle" error (Table 13, first column) scores one guess
per image made with the ground-truth class.

Boxes are the internal format (ymin, xmin, ymax, xmax), continuous pixels;
ILSVRC's inclusive pixel boxes are converted by the loaders (see
``localization.data.ilsvrc``), so the IoU here equals the devkit's.

Unreadable images (files neither TF nor PIL can decode) stay in the
denominators as misses: their guesses are empty (``classes`` [0], ``boxes``
[0, 4]), which is wrong at every k, and their oracle box is None. The
errors are then upper bounds of what the readable files would have given;
they can't fall by losing files (``localization.evaluate``).
"""

import numpy as np

from detection.ops.boxes import pairwise_iou

IOU_THRESHOLD = 0.5


def guess_correct(classes, boxes, gt_classes, gt_boxes, iou_threshold=IOU_THRESHOLD):
    """bool [K]: which of one image's guesses are correct.

    Args:
        classes: int [K] guessed classes, ranked.
        boxes: float [K, 4] their boxes.
        gt_classes: int [G]; gt_boxes: float [G, 4].
    """
    classes = np.asarray(classes).reshape(-1)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    gt_classes = np.asarray(gt_classes).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    if len(classes) != len(boxes):
        raise ValueError(f"{len(classes)} guessed classes but {len(boxes)} boxes.")
    if not len(classes) or not len(gt_boxes):
        return np.zeros(len(classes), bool)
    iou = np.asarray(pairwise_iou(boxes, gt_boxes))  # [K, G]
    same = classes[:, None] == gt_classes[None, :]
    return ((iou >= iou_threshold) & same).any(axis=1)


def localization_errors(guesses, ground_truth, ks=(1, 5), iou_threshold=IOU_THRESHOLD):
    """Top-k localization and classification errors over images.

    Args:
        guesses: one ``(classes [K], boxes [K, 4])`` per image, ranked;
            K = 0 (an unreadable image) is a miss at every k.
        ground_truth: one ``(classes [G], boxes [G, 4])`` per image.
    Returns:
        ``{"images": N, "top{k}_loc_error": ..., "top{k}_cls_error": ...}``
        for each k in ``ks``.
    """
    if len(guesses) != len(ground_truth):
        raise ValueError(f"{len(guesses)} images guessed but {len(ground_truth)} have "
                         "ground truth.")
    if not guesses:
        raise ValueError("no images to score.")
    loc = {k: 0 for k in ks}
    cls = {k: 0 for k in ks}
    for (classes, boxes), (gt_classes, gt_boxes) in zip(guesses, ground_truth):
        ok = guess_correct(classes, boxes, gt_classes, gt_boxes, iou_threshold)
        right_class = np.isin(np.asarray(classes).reshape(-1),
                              np.asarray(gt_classes).reshape(-1))
        for k in ks:
            loc[k] += bool(ok[:k].any())
            cls[k] += bool(right_class[:k].any())
    n = len(guesses)
    out = {"images": n}
    for k in ks:
        out[f"top{k}_loc_error"] = 1.0 - loc[k] / n
        out[f"top{k}_cls_error"] = 1.0 - cls[k] / n
    return out


def oracle_error(boxes, ground_truth, iou_threshold=IOU_THRESHOLD):
    """The localization error with the ground-truth class given: ``boxes``
    is one box [4] per image, predicted for that image's (first) ground-truth
    class, or None (an unreadable image: a miss); ``ground_truth`` as in
    ``localization_errors``."""
    if len(boxes) != len(ground_truth):
        raise ValueError(f"{len(boxes)} oracle boxes for {len(ground_truth)} images.")
    if not len(boxes):
        raise ValueError("no images to score.")
    wrong = 0
    for box, (gt_classes, gt_boxes) in zip(boxes, ground_truth):
        if box is None:
            wrong += 1
            continue
        c = np.asarray(gt_classes).reshape(-1)[:1]
        wrong += not guess_correct(c, np.asarray(box).reshape(1, 4), gt_classes, gt_boxes,
                                   iou_threshold)[0]
    return wrong / len(boxes)
