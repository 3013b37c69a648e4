"""COCO AP through pycocotools, the official evaluator."""

import contextlib
import io

import numpy as np


def to_coco(detections, ground_truths, class_names, sizes):
    """Build pycocotools' ground-truth dataset and detection list.

    Boxes are internal-format pixels, converted here (the dataset boundary)
    to COCO's (x, y, width, height). Difficult boxes become ``iscrowd``.
    """
    if not len(detections) == len(ground_truths) == len(sizes):
        raise ValueError(f"{len(detections)} detection lists and {len(sizes)} sizes for "
                         f"{len(ground_truths)} images; give every image one (an empty "
                         "list for an image that could not be read).")
    images, anns, dets = [], [], []
    for i, ((h, w), g) in enumerate(zip(sizes, ground_truths)):
        images.append({"id": i, "height": int(h), "width": int(w)})
        diff = np.asarray(g.get("difficult", np.zeros(len(g["classes"]), bool)), bool)
        for b, c, d in zip(np.asarray(g["boxes"]).reshape(-1, 4), g["classes"], diff):
            y0, x0, y1, x1 = (float(v) for v in b)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": (x1 - x0) * (y1 - y0), "iscrowd": int(d)})
    for i, d in enumerate(detections):
        for b, s, c in zip(np.asarray(d["boxes"]).reshape(-1, 4), d["scores"],
                           d["classes"]):
            y0, x0, y1, x1 = (float(v) for v in b)
            dets.append({"image_id": i, "category_id": int(c) + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)})
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def evaluate_coco(detections, ground_truths, class_names, sizes, iou_thresholds=None,
                  rec_thresholds=None, max_dets=100):
    """COCO mAP@[.5:.95], AP50, AP75 and small/medium/large AP.

    Args:
        detections, ground_truths: as for ``voc_map.evaluate_voc`` (aligned;
            an unreadable image has an empty detection list, and its
            objects are missed).
        sizes: per image (height, width).
        iou_thresholds, rec_thresholds: override pycocotools' defaults (the
            tests use IoU 0.5 and a fine recall grid to check VOC AP).
        max_dets: detections per image scored (COCOeval's largest
            ``params.maxDets``; COCO's own is 100). Give the detector's
            ``max_detections``, so that no detection it returned is left
            out; ``params.maxDets`` becomes ``[1, 10, max_dets]`` (the 1 and
            10 only where smaller).
    Returns:
        dict with AP, AP50, AP75, APs, APm, APl (what COCOeval.summarize
        reports as its first six numbers, here all at ``max_dets``; -1 where
        undefined), per-class AP at [.5:.95], and ``max_dets``, the value
        used.
    """
    max_dets = int(max_dets)
    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}.")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, dets = to_coco(detections, ground_truths, class_names, sizes)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        if not dets:
            dt.dataset = {"images": gt_dict["images"], "annotations": [],
                          "categories": gt_dict["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        if iou_thresholds is not None:
            ev.params.iouThrs = np.asarray(iou_thresholds, float)
        if rec_thresholds is not None:
            ev.params.recThrs = np.asarray(rec_thresholds, float)
        # COCOeval scores the top maxDets[-1] detections of an image (it
        # sorts the list). Not summarize(): its stats[0] is at maxDets=100
        # whatever the list says (pycocotools' own default), and it needs 3.
        ev.params.maxDets = [d for d in (1, 10) if d < max_dets] + [max_dets]
        ev.evaluate()
        ev.accumulate()
    stats = [_ap(ev, iou, area, max_dets) for iou, area in (
        (None, "all"), (0.5, "all"), (0.75, "all"), (None, "small"), (None, "medium"),
        (None, "large"))]
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, name in enumerate(class_names):
        p = prec[:, :, k, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if np.any(p > -1) else float("nan")
    return {"AP": stats[0], "AP50": stats[1], "AP75": stats[2], "APs": stats[3],
            "APm": stats[4], "APl": stats[5], "per_class": per_class, "max_dets": max_dets}


def _ap(ev, iou, area, max_dets):
    """``COCOeval.summarize``'s AP, at ``max_dets``: the mean accumulated
    precision over the IoU thresholds (``iou`` alone if given), the recall
    grid and the classes, in area range ``area``; -1 where undefined."""
    p = ev.params
    s = ev.eval["precision"][:, :, :, p.areaRngLbl.index(area),
                             list(p.maxDets).index(max_dets)]  # [T, R, K]
    if iou is not None:
        s = s[np.flatnonzero(np.isclose(p.iouThrs, iou))]
    s = s[s > -1]
    return float(s.mean()) if s.size else -1.0
