"""PASCAL VOC average precision, as the VOC devkit computes it.

Per class: detections of all images sorted by score; each is a true positive
if its best-overlapping ground-truth box of that class (IoU >= threshold) is
not yet taken, else a false positive. Detections whose best match is a
``difficult`` box count as neither, and difficult boxes are not in the
recall denominator. AP is the VOC2007 11-point interpolated precision
(``use_07_metric=True``) or the area under the monotone precision envelope
(VOC2010+ "all points"). Boxes are internal-format pixels in continuous
coordinates (no devkit "+1" on widths).

An image whose file could not be decoded is scored with an empty detection
list: its (non-difficult) ground-truth boxes stay in each class's recall
denominator and are all missed, so losing a file can only lower the AP
(``detection.evaluate``; the same for an image the annotation loader
skipped because its file can't be read). ``coco_map`` does the same: the image stays in
the ground truth with no detections.
"""

import numpy as np


def voc_ap(recall, precision, use_07_metric=False):
    """AP from a recall/precision curve (arrays in detection order)."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = precision[recall >= t].max() if np.any(recall >= t) else 0.0
            ap += p / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # monotone envelope
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou(box, gts):
    ih = np.clip(np.minimum(box[2], gts[:, 2]) - np.maximum(box[0], gts[:, 0]), 0, None)
    iw = np.clip(np.minimum(box[3], gts[:, 3]) - np.maximum(box[1], gts[:, 1]), 0, None)
    inter = ih * iw
    union = ((box[2] - box[0]) * (box[3] - box[1])
             + (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]) - inter)
    return inter / np.maximum(union, 1e-12)


def evaluate_voc(detections, ground_truths, num_classes, iou_threshold=0.5,
                 use_07_metric=False, class_names=None):
    """VOC mAP.

    Args:
        detections: per image, a dict with ``boxes`` [D, 4], ``scores`` [D],
            ``classes`` [D] (0-based foreground class indices); aligned
            with ``ground_truths`` (D = 0 for an unreadable image: every
            object of it is missed).
        ground_truths: per image, a dict with ``boxes`` [G, 4], ``classes``
            [G] and optionally ``difficult`` [G] bool.
        num_classes: K.
    Returns:
        ``{"mAP": float, "per_class": {name: AP}, "num_ground_truth":
        {name: n}}``; classes without any (non-difficult) ground truth are
        left out of the mean and reported as NaN.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection lists for "
                         f"{len(ground_truths)} images; give every image one (empty "
                         "for an image that could not be read, so its objects count "
                         "as missed).")
    names = list(class_names or [str(k) for k in range(num_classes)])
    aps, counts = {}, {}
    for k in range(num_classes):
        gts, npos = {}, 0
        for i, g in enumerate(ground_truths):
            m = np.asarray(g["classes"]) == k
            diff = np.asarray(g.get("difficult", np.zeros(len(m), bool)), bool)[m]
            gts[i] = (np.asarray(g["boxes"], float).reshape(-1, 4)[m], diff,
                      np.zeros(m.sum(), bool))
            npos += int((~diff).sum())
        dets = [(float(s), i, np.asarray(b, float))
                for i, d in enumerate(detections)
                for b, s, c in zip(np.asarray(d["boxes"]).reshape(-1, 4), d["scores"],
                                   d["classes"]) if int(c) == k]
        dets.sort(key=lambda t: -t[0])
        tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
        for j, (_, i, box) in enumerate(dets):
            gboxes, diff, taken = gts[i]
            if len(gboxes):
                ious = _iou(box, gboxes)
                best = int(np.argmax(ious))
                if ious[best] >= iou_threshold:
                    if diff[best]:
                        continue
                    if not taken[best]:
                        tp[j], taken[best] = 1, True
                    else:
                        fp[j] = 1
                    continue
            fp[j] = 1
        counts[names[k]] = npos
        if npos == 0:
            aps[names[k]] = float("nan")
            continue
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        recall = ctp / npos
        precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
        aps[names[k]] = voc_ap(recall, precision, use_07_metric)
    valid = [v for v in aps.values() if not np.isnan(v)]
    return {"mAP": float(np.mean(valid)) if valid else float("nan"),
            "per_class": aps, "num_ground_truth": counts}
