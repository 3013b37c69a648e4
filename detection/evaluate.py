"""Evaluate and predict with a detector directory."""

import logging

import numpy as np
import tensorflow as tf

from detection.data.annotations import missed_in_order
from detection.data.pipeline import make_detection_dataset, prepare_example
from detection.data.sources import open_detection_source
from detection.data.split import first_images
from detection.metrics.coco_map import evaluate_coco
from detection.metrics.voc_map import evaluate_voc
from detection.model_dir import load_detector
from resnet_tf.data.decode import SkipCounter, read_image_file
from resnet_tf.evaluate import inference_function, merged_reasons, unreadable_error

log = logging.getLogger("resnet_tf")


class DetectionCapCounter:
    """Counts, as detection runs, the images whose detections filled the
    model's ``max_detections`` (``num_detections == max_detections``): the
    per-class NMS may have had more to give, so detections may be lost.
    Raise ``max_detections`` (a model setting) if this is not 0.

    Attributes:
        limit: int, the cap; images: int, images that hit it; of: int,
            images detected; paths: the names of those that hit it.
    """

    def __init__(self, limit):
        self.limit, self.images, self.of, self.paths = int(limit), 0, 0, []

    def add(self, num_detections, names=None):
        """Count a batch: ``num_detections`` int [B]; ``names`` [B] (optional)."""
        n = np.asarray(num_detections).reshape(-1)
        full = n >= self.limit
        self.of += len(n)
        self.images += int(full.sum())
        if names is not None:
            self.paths += [str(p) for p, f in zip(names, full) if f]
        return full

    def to_dict(self):
        return {"limit": self.limit, "images": self.images, "of": self.of,
                "paths": list(self.paths)}


def detect_split(model, prep, split, batch_size=2, counter=None, capped=None):
    """Detections for every image of a split, in resized-image pixels.

    Returns a list aligned with ``split.annotations`` (one dict per
    annotation, in order) with ``boxes`` float32 [D, 4] (ymin, xmin, ymax,
    xmax), ``scores`` [D], ``classes`` [D] (0-based) and ``resized``
    (height, width) of the network's input; ``_to_original`` maps the boxes
    to original image pixels. An image that neither TF nor PIL can decode
    gets no detections and ``"unreadable": True``, so its ground-truth
    objects count as missed when scored (and is reported to ``counter``).

    Args:
        counter: a ``SkipCounter`` (default: a new one) that keeps every
            path (``max_paths=None``) or at least as many as there are
            unreadable images; raises ValueError otherwise.
        capped: a ``DetectionCapCounter`` told each batch's
            ``num_detections`` (images that filled ``max_detections``).
    """
    counter = counter if counter is not None else SkipCounter(max_paths=None)
    before = counter.count
    # prep.batching "grouped" batches images of one aspect-ratio canvas
    # together (a few static shapes, each traced once), in another order than
    # the split's: y["index"] puts them back.
    ds = make_detection_dataset(split.annotations, prep, training=False,
                                batch_size=batch_size, counter=counter, images=split.images,
                                image_bytes=split.image_bytes and split.image_bytes(),
                                stride=model.feature_stride, with_index=True)
    found = {}
    run = inference_function(model)
    for x, y in ds:
        det = run(x)
        n = det["num_detections"].numpy()
        if capped is not None:
            capped.add(n)
        for b, i in enumerate(y["index"].numpy()):
            found[int(i)] = {"boxes": det["boxes"].numpy()[b, :n[b]],
                             "scores": det["scores"].numpy()[b, :n[b]],
                             "classes": det["classes"].numpy()[b, :n[b]],
                             "resized": x["image_sizes"].numpy()[b]}
    found = [found[i] for i in sorted(found)]
    unreadable = counter.count - before
    return _align(found, split.annotations, counter.paths[-unreadable:] if unreadable else [],
                  unreadable)


def _align(found, annotations, bad_paths, unreadable):
    """Detections of the readable images (in order) -> one per annotation."""
    if len(bad_paths) < unreadable:
        raise ValueError(f"{unreadable} images could not be read, but the counter kept "
                         f"only the last {len(bad_paths)} paths; pass "
                         "SkipCounter(max_paths=None).")
    bad = set(bad_paths)
    out, readable = [], iter(found)
    for a in annotations:
        if a.path in bad:
            out.append({"boxes": np.zeros([0, 4], np.float32),
                        "scores": np.zeros([0], np.float32),
                        "classes": np.zeros([0], np.int32),
                        "resized": np.array([a.height, a.width], np.float32),
                        "unreadable": True})
        else:
            out.append(next(readable, None))
    if out.count(None) or next(readable, None) is not None:
        raise RuntimeError(f"{len(found)} images detected, {unreadable} unreadable, but "
                           f"the split has {len(annotations)}: the detections can't be "
                           "matched to their images.")
    return out


def _to_original(dets, annotations):
    for d, a in zip(dets, annotations):
        sy, sx = d["resized"][0] / a.height, d["resized"][1] / a.width
        d["boxes"] = d["boxes"] / np.array([sy, sx, sy, sx], np.float32)
    return dets


def unreadable_summary(annotations, dets, counter, missed=()):
    """What unreadable images took from a detection evaluation: ``{"images",
    "objects" (their ground-truth boxes, counted as missed; VOC ignores the
    difficult ones, as always), "paths", "by_reason", "at_load_images",
    "at_load_objects"}``: those the decoder skipped (``dets`` marked
    ``unreadable``, reasons in ``counter``) and those the annotation loader
    skipped (``missed``, ``MissedImage`` list; the ``at_load_*`` part)."""
    bad = [m.annotation for m in missed] + [
        a for a, d in zip(annotations, dets) if d.get("unreadable")]
    return {"images": len(bad), "objects": int(sum(len(a.boxes) for a in bad)),
            "paths": [a.path for a in bad], "by_reason": merged_reasons(counter, missed),
            "at_load_images": len(missed),
            "at_load_objects": int(sum(len(m.annotation.boxes) for m in missed))}


def with_missed(dets, annotations, missed):
    """``(dets, annotations)`` with each image the loader skipped as
    unreadable (``missed``) added: no detections, ``unreadable`` True, so
    its objects are scored as missed (VOC's recall denominators and COCO's
    ground truth keep them)."""
    none = [{"boxes": np.zeros([0, 4], np.float32), "scores": np.zeros([0], np.float32),
             "classes": np.zeros([0], np.int32), "unreadable": True} for _ in missed]
    return list(dets) + none, list(annotations) + [m.annotation for m in missed]


def evaluate_detector(directory, data, *, batch_size=2, strict=False, max_images=None,
                      **source_kwargs):
    """VOC mAP@0.5 (11-point and area) and COCO AP of a detector directory
    on the evaluation split of ``data``.

    Images that neither TF nor PIL can decode are named (logged as they are
    met) and counted, and the evaluation completes over the rest: each
    unreadable image is scored with no detections, so its ground-truth
    objects count as missed (false negatives: VOC's recall denominator and
    COCO's ground truth keep them). That is the conservative reading: the
    score can't rise by losing files. The same holds for the images the
    annotation loader skipped because their file is missing, refused,
    empty or has an unreadable header (``split.report.missed``): their
    objects, as the annotation gives them, are scored as missed too.
    ``unreadable_images`` and ``unreadable_objects`` say how much this
    affected (``unreadable_at_load_images`` / ``_objects``: the loader's
    part), ``unreadable_paths`` which files; ``voc_map50_readable`` is the
    VOC mAP over the readable images alone, for comparison. With
    ``strict``, any unreadable image is an error (ValueError naming them)
    instead. With ``max_images`` (int >= 1), only the first ``max_images``
    images of the split in the loader's order are evaluated (those the
    loader skipped among them still count as missed): a quick check, whose
    cut ``max_images: {"limit", "of"}`` reports.

    Returns a dict: data, split, images (all of the split's, unreadable
    ones included), readable_images, voc_map50, voc07_map50,
    per_class_ap50, coco (``evaluate_coco``; ``coco["max_dets"]`` the
    detections per image it scored, the model's ``max_detections``), the
    unreadable counts above, ``skipped_by_reason``, and
    ``detections_capped``: ``{"limit": max_detections, "images": n}``, the
    images whose detections filled the cap (some may have been cut).
    """
    if max_images is not None and int(max_images) < 1:
        raise ValueError(f"max_images must be a positive number of images, "
                         f"got {max_images!r}.")
    model, prep, meta = load_detector(directory)
    source = open_detection_source(data, class_names=meta["class_names"], **source_kwargs)
    split = source.split("eval")
    missed = missed_in_order(split.report, max_images)
    total = len(split.annotations) + len(missed_in_order(split.report))
    if max_images:
        split = first_images(split, max_images - len(missed))
    counter = SkipCounter(max_paths=None)
    capped = DetectionCapCounter(model.max_detections)
    dets = _to_original(detect_split(model, prep, split, batch_size, counter, capped),
                        split.annotations)
    lost = unreadable_summary(split.annotations, dets, counter, missed)
    dets, anns = with_missed(dets, split.annotations, missed)
    if strict and lost["images"]:
        raise unreadable_error("detector", data, counter, len(dets),
                               f"their {lost['objects']} objects count as missed", missed)
    gts = [{"boxes": a.boxes, "classes": a.classes, "difficult": a.difficult}
           for a in anns]
    names = meta["class_names"]
    voc = evaluate_voc(dets, gts, len(names), class_names=names)
    voc07 = evaluate_voc(dets, gts, len(names), class_names=names, use_07_metric=True)
    coco = evaluate_coco(dets, gts, names, [(a.height, a.width) for a in anns],
                         max_dets=model.max_detections)
    out = {"data": data, "split": split.name, "images": len(gts),
           "readable_images": len(gts) - lost["images"],
           "voc_map50": voc["mAP"], "voc07_map50": voc07["mAP"],
           "per_class_ap50": voc["per_class"], "coco": coco,
           "unreadable_images": lost["images"], "unreadable_objects": lost["objects"],
           "unreadable_at_load_images": lost["at_load_images"],
           "unreadable_at_load_objects": lost["at_load_objects"],
           "unreadable_paths": lost["paths"], "skipped_by_reason": lost["by_reason"],
           "skipped_images": lost["images"], "voc_map50_readable": voc["mAP"],
           "detections_capped": capped.to_dict(),
           "max_images": {"limit": max_images, "of": total}}
    if lost["images"]:
        keep = [i for i, d in enumerate(dets) if not d.get("unreadable")]
        out["voc_map50_readable"] = (evaluate_voc(
            [dets[i] for i in keep], [gts[i] for i in keep], len(names),
            class_names=names)["mAP"] if keep else float("nan"))
    return out


def predict_detector(directory, paths, score_threshold=None):
    """Detections for image files: one dict per file with ``boxes``
    (ymin, xmin, ymax, xmax pixels of the original image), ``names``,
    ``scores``, and ``capped``: True when its detections filled the model's
    ``max_detections`` (more may have been cut; a warning says so too);
    unreadable files get ``error``."""
    model, prep, meta = load_detector(directory)
    capped = DetectionCapCounter(model.max_detections)
    names = meta["class_names"]
    rows = []
    run = inference_function(model)
    for path in paths:
        image, error = read_image_file(path)
        if error:
            rows.append({"path": path, "error": error})
            continue
        x, _ = prepare_example(image, tf.fill([1, 4], -1.0), tf.constant([-1]), prep)
        det = run({k: v[None] for k, v in x.items()})
        n = int(det["num_detections"][0])
        if capped.add([n])[0]:
            log.warning("%s: its detections filled max_detections=%d; more may have been "
                        "cut (raise the model's max_detections).", path, capped.limit)
        h, w = image.shape[0], image.shape[1]
        sy, sx = float(x["image_sizes"][0]) / h, float(x["image_sizes"][1]) / w
        boxes = det["boxes"].numpy()[0, :n] / np.array([sy, sx, sy, sx])
        scores = det["scores"].numpy()[0, :n]
        classes = det["classes"].numpy()[0, :n]
        keep = scores >= (score_threshold or 0)
        rows.append({"path": path, "height": h, "width": w,
                     "boxes": boxes[keep].round(1).tolist(),
                     "classes": classes[keep].tolist(),
                     "names": [names[c] for c in classes[keep]],
                     "scores": scores[keep].round(4).tolist(),
                     "capped": n >= capped.limit})
    return rows


def draw_detections(image_path, row, out_path, min_score=0.3):
    """Write ``image_path`` with ``row``'s boxes scoring at least
    ``min_score`` drawn (``resnet_tf.plots.draw_boxes``: one colour per
    class, "name score" labels), as an image file (PNG by its extension).
    ``row`` is one of ``predict_detector``'s; raises ValueError naming an
    unreadable image."""
    from resnet_tf.plots import BOX_COLORS, draw_boxes

    # The pixels predict saw (EXIF orientation applied): the boxes' frame.
    image, error = read_image_file(image_path)
    if error:
        raise ValueError(f"{image_path}: {error}")
    keep = [j for j, s in enumerate(row["scores"]) if s >= min_score]
    draw_boxes(image.numpy(), [row["boxes"][j] for j in keep],
               [f"{row['names'][j]} {row['scores'][j]:.2f}" for j in keep],
               [BOX_COLORS[row["classes"][j] % len(BOX_COLORS)] for j in keep],
               label_inside=True).save(out_path)
    return out_path
