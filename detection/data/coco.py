"""COCO JSON annotations (``coco:PATH[:SPLIT]``).

Layouts:
- the COCO release: ``PATH/annotations/instances_{SPLIT}.json`` with images
  in ``PATH/{SPLIT}/`` (``SPLIT`` e.g. ``train2017``, ``val2017``); without
  a split, training uses the ``train*`` file and evaluation the ``val*`` one;
- one JSON file (``coco:PATH/to/file.json``): images are looked up beside it,
  or in an ``images/`` folder beside it.

COCO boxes are ``[x, y, width, height]`` in continuous pixels; they become
internal ``(ymin, xmin, ymax, xmax)`` here, the dataset boundary. Classes are
the ``categories`` in ascending ``id`` order (COCO's ids have gaps; class
index k is the k-th category). ``iscrowd`` regions become ``difficult``:
ignored by the VOC metric and treated as crowd by pycocotools. Zero-area
boxes are dropped with a warning and counted; boxes past the image are
clipped (``LoadReport``).

An image entry that can't be used is skipped with a warning and counted by
reason (its annotations with it): a ``file_name`` that leaves the image
folder or does not exist, an annotation with a ``category_id`` that is not
among the categories. A file that is not UTF-8 JSON, lacks a required key,
has a ``bbox`` that is not four numbers, repeats an image id, has
annotations of images it does not list, or has a category outside
``class_names`` is a ValueError: the file as a whole is wrong.
"""

import glob
import json
import os

import numpy as np

from detection.data.annotations import (ImageAnnotation, LoadReport, clean_boxes,
                                         resolve_image)
from detection.ops.boxes import to_internal
from resnet_tf.data import report as reasons
from resnet_tf.data.report import BadItem


def find_coco_json(root, split=None, which="train"):
    """``(json_path, image_dir)`` for a ``coco:`` spec (see the module docstring)."""
    if os.path.isfile(root):
        if split:
            raise ValueError(f"coco:{root}:{split}: a split is only meaningful with a "
                             "COCO folder (annotations/instances_SPLIT.json).")
        folder = os.path.dirname(os.path.abspath(root))
        images = os.path.join(folder, "images")
        return root, images if os.path.isdir(images) else folder
    if not os.path.isdir(root):
        raise ValueError(f"{root}: no such file or folder; coco:PATH needs a COCO "
                         "annotation JSON file or a folder with annotations/"
                         "instances_SPLIT.json.")
    ann_dir = os.path.join(root, "annotations")
    if split is None:
        found = sorted(glob.glob(os.path.join(ann_dir, "instances_*.json")))
        stems = [os.path.basename(p)[len("instances_"):-len(".json")] for p in found]
        prefix = "train" if which == "train" else "val"
        matches = [s for s in stems if s.startswith(prefix)]
        if not matches:
            raise ValueError(f"{ann_dir}: no instances_{prefix}*.json for the "
                             f"{which} split (found {stems or 'none'}); name the split: "
                             f"coco:{root}:SPLIT.")
        split = matches[0]
    path = os.path.join(ann_dir, f"instances_{split}.json")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not found; coco:{root}:{split} expects it.")
    images = os.path.join(root, split)
    return path, images if os.path.isdir(images) else os.path.join(root, "images")


def _require(obj, key, where):
    if not isinstance(obj, dict) or key not in obj:
        raise ValueError(f"{where}: missing key {key!r} in {str(obj)[:120]}.")
    return obj[key]


def read_coco(json_path, image_dir, class_names=None):
    """Read a COCO instances file.

    Args:
        json_path: the annotation file.
        image_dir: where each image's ``file_name`` is looked up.
        class_names: fixes the classes and their order (e.g. a trained
            detector's); every category name must be among them. None: the
            categories in ascending id order.
    Returns:
        ``(annotations, class_names, report)`` with one ``ImageAnnotation``
        per image entry (images without boxes included).
    """
    try:
        with open(json_path, encoding="utf-8") as f:  # JSON is UTF-8 (RFC 8259)
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise ValueError(f"{json_path}: not UTF-8 (byte {e.object[e.start]:#04x} at "
                         f"offset {e.start}); COCO JSON must be UTF-8: re-save it as "
                         "UTF-8.") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{json_path}: malformed COCO JSON ({e}).") from e
    where = json_path
    categories = sorted(_require(data, "categories", where),
                        key=lambda c: _require(c, "id", where))
    cat_names = [str(_require(c, "name", where)) for c in categories]
    if class_names is None:
        class_names = cat_names
    unknown = [n for n in cat_names if n not in class_names]
    if unknown:
        raise ValueError(f"{json_path}: unknown class name {unknown[0]!r}; known classes "
                         f"are {list(class_names)}.")
    index = {n: i for i, n in enumerate(class_names)}
    cat_index = {c["id"]: index[str(c["name"])] for c in categories}

    entries = _require(data, "images", where)
    by_image = {}
    for a in _require(data, "annotations", where):
        by_image.setdefault(_require(a, "image_id", where), []).append(a)
    report = LoadReport()
    out, seen = [], set()
    for img in entries:
        image_id = _require(img, "id", where)
        if image_id in seen:
            raise ValueError(f"{json_path}: image id {image_id} appears twice.")
        seen.add(image_id)
        name = str(_require(img, "file_name", where))
        height, width = int(_require(img, "height", where)), int(_require(img, "width", where))
        anns = by_image.pop(image_id, [])
        xywh, classes, crowd = [], [], []
        for a in anns:
            bbox = _require(a, "bbox", where)
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                    and all(isinstance(v, (int, float)) for v in bbox)):
                raise ValueError(f"{json_path}: annotation {a.get('id')} has bbox "
                                 f"{bbox!r}; COCO boxes are [x, y, width, height].")
            _require(a, "category_id", where)
            xywh.append([float(v) for v in bbox])
            classes.append(cat_index.get(a["category_id"]))
            crowd.append(bool(a.get("iscrowd", 0)))
        try:
            path = resolve_image(json_path, image_dir, name,
                                 f"file_name of image id {image_id}")
            unknown = [a for a, c in zip(anns, classes) if c is None]
            if unknown:
                raise BadItem(json_path, f"image id {image_id} ({name}): annotation "
                              f"{unknown[0].get('id')} has unknown category_id "
                              f"{unknown[0]['category_id']}; categories are "
                              f"{sorted(cat_index)}", reasons.UNKNOWN_CLASS)
        except BadItem as e:
            report.skip_image(e)
            continue
        raw = (np.asarray(to_internal(np.asarray(xywh, np.float32), "xywh"))
               if xywh else np.zeros((0, 4), np.float32))
        boxes, keep = clean_boxes(f"{json_path} (image {name})", raw, height, width,
                                  report)
        report.images += 1
        report.boxes += len(boxes)
        if not len(boxes):
            report.images_without_boxes += 1
        out.append(ImageAnnotation(path=path, height=height, width=width, boxes=boxes,
                                   classes=np.asarray(classes, np.int32)[keep],
                                   difficult=np.asarray(crowd, bool)[keep]))
    if by_image:
        orphan = next(iter(by_image))
        raise ValueError(f"{json_path}: {sum(map(len, by_image.values()))} annotations "
                         f"refer to image ids not in 'images' (e.g. {orphan}).")
    return out, list(class_names), report
