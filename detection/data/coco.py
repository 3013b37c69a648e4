"""COCO JSON annotations (``coco:PATH[:SPLIT]``).

Layouts:
- the COCO release: ``PATH/annotations/instances_{SPLIT}.json`` with images
  in ``PATH/{SPLIT}/`` (``SPLIT`` e.g. ``train2017``, ``val2017``); without
  a split, training uses the ``train*`` file and evaluation the ``val*`` one;
- one JSON file (``coco:PATH/to/file.json``, or a folder holding exactly
  one ``.json`` file): images are looked up in an ``images/`` folder beside
  it, then beside it;
- split folders (Roboflow's COCO export): ``PATH/train/``, ``PATH/valid/``
  (or another name of ``resnet_tf.data.sources.EVAL_DIR_NAMES``), each
  holding one JSON file (``_annotations.coco.json``) and its images;
  training uses the training folder, evaluation the first evaluation
  folder, and ``coco:PATH:NAME`` names a folder.

``file_name`` is resolved the way COCO's own tools do (detectron2's
``image_root`` + ``file_name``), in each image folder in turn: the split's
folder (or ``images/``), then the JSON's folder, then (release layout) the
dataset folder. So the COCO release's ``000000000139.jpg``, Label Studio's
``images/0.jpg`` (relative to ``result.json``), Roboflow's and CVAT's bare
names all resolve; a name with Windows ``\\`` separators is tried with
``/``. Nothing outside the dataset folder is read.

Frames and sizes: images are decoded as displayed (EXIF orientation
applied; detectron2 reads COCO the same way), and each image entry's
``width``/``height`` is compared with the image file's displayed size
(``detection.data.annotations.fit_to_image``): equal, the boxes are used as
written; equal to the stored size of an image whose EXIF orientation swaps
its sides, the boxes are turned with the image (``reoriented_images``); 0,
the image's size is used; anything else, the image is skipped as
``size_mismatch``, naming both sizes.

COCO boxes are ``[x, y, width, height]`` in continuous pixels; they become
internal ``(ymin, xmin, ymax, xmax)`` here, the dataset boundary. Classes are
the ``categories`` in ascending ``id`` order (COCO's ids have gaps; class
index k is the k-th category). ``iscrowd`` regions become ``difficult``:
ignored by the VOC metric and treated as crowd by pycocotools. Zero-area
boxes are dropped with a warning and counted; boxes past the image are
clipped (``LoadReport``).

An image entry that can't be used is skipped with a warning and counted by
reason (its annotations with it): a ``file_name`` that leaves the dataset
folder or does not exist, an annotation with a ``category_id`` that is not
among the categories, a size that disagrees with the image. Where the
fault is the image file's (missing, outside the dataset folder, a header
that can't be read), its objects are kept in ``LoadReport.missed``, so that
evaluation counts them as missed (``detection.evaluate``). A file that
lists no image, or no usable one, is a ValueError with the counts by reason.
A file that is not UTF-8 JSON, lacks a required key,
has a ``bbox`` that is not four numbers, repeats an image id, has
annotations of images it does not list, or has a category outside
``class_names`` is a ValueError: the file as a whole is wrong.
"""

import concurrent.futures
import glob
import json
import os

import numpy as np

from detection.data.annotations import (DISPLAYED, ImageAnnotation, LoadReport, clean_boxes,
                                         fit_to_image, image_header_info, missed_annotation,
                                         resolve_image)
from detection.ops.boxes import to_internal
from detection.data import reasons
from resnet_tf.data.report import BadItem


def find_coco_json(root, split=None, which="train"):
    """``(json_path, image_dirs)`` for a ``coco:`` spec: the folders
    ``file_name`` is looked up in, in order (see the module docstring)."""
    if os.path.isfile(root):
        if split:
            raise ValueError(f"coco:{root}:{split}: a split is only meaningful with a "
                             "COCO folder (annotations/instances_SPLIT.json).")
        folder = os.path.dirname(os.path.abspath(root))
        images = os.path.join(folder, "images")
        return root, ([images] if os.path.isdir(images) else []) + [folder]
    if not os.path.isdir(root):
        raise ValueError(f"{root}: no such file or folder; coco:PATH needs a COCO "
                         "annotation JSON file or a folder with annotations/"
                         "instances_SPLIT.json.")
    ann_dir = os.path.join(root, "annotations")
    if not os.path.isdir(ann_dir):
        jsons = sorted(glob.glob(os.path.join(root, "*.json")))
        if len(jsons) == 1 and not split:
            return find_coco_json(jsons[0])
        from resnet_tf.data.sources import find_split_dirs

        train, evals, _ = find_split_dirs(root)
        if train or evals:
            # No evaluation folder: the training one (CocoSource says so).
            folder = split or (train if which == "train" or not evals else evals[0])
            if folder is None or not os.path.isdir(os.path.join(root, folder)):
                have = ", ".join(f"{d}/" for d in [train, *evals] if d)
                raise ValueError(f"{root}: no {'training' if which == 'train' else 'evaluation'}"
                                 f" folder among its split folders ({have}); name one: "
                                 f"coco:{root}:FOLDER.")
            found = sorted(glob.glob(os.path.join(root, folder, "*.json")))
            if len(found) != 1:
                raise ValueError(f"{os.path.join(root, folder)}: {len(found)} .json files; "
                                 "a split folder needs exactly one COCO annotation file.")
            return find_coco_json(found[0])
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
    return path, [images if os.path.isdir(images) else os.path.join(root, "images"),
                  ann_dir, root]


def _require(obj, key, where):
    if not isinstance(obj, dict) or key not in obj:
        raise ValueError(f"{where}: missing key {key!r} in {str(obj)[:120]}.")
    return obj[key]


def _missed(path, xywh, classes, crowd, height, width):
    """The ground truth of an image entry whose file can't be read
    (``annotations.MissedImage``); None where a category is unknown."""
    if any(c is None for c in classes):
        return None
    boxes = (np.asarray(to_internal(np.asarray(xywh, np.float32), "xywh"))
             if xywh else np.zeros((0, 4), np.float32))
    return missed_annotation(path, boxes, np.asarray(classes, np.int32), crowd,
                             height, width)


def read_coco(json_path, image_dir, class_names=None, root=None, workers=8):
    """Read a COCO instances file.

    Args:
        json_path: the annotation file.
        image_dir: a folder, or folders in order, where each image's
            ``file_name`` is looked up; the JSON's own folder is tried last.
        class_names: fixes the classes and their order (e.g. a trained
            detector's); every category name must be among them. None: the
            categories in ascending id order.
        root: the dataset folder no image may be read outside of (default:
            the folder holding both the JSON file and the image folders).
        workers: threads reading image headers (sizes, EXIF orientation).
    Returns:
        ``(annotations, class_names, report)`` with one ``ImageAnnotation``
        per usable image entry (images without boxes included); boxes
        float32 [N, 4] (ymin, xmin, ymax, xmax), continuous pixels of the
        image as decoded (displayed frame).
    Raises:
        ValueError naming the file: see the module docstring, including a
        file with no usable image (with the counts by reason).
    """
    dirs = [image_dir] if isinstance(image_dir, (str, os.PathLike)) else list(image_dir)
    json_dir = os.path.dirname(os.path.abspath(json_path))
    dirs = list(dict.fromkeys(os.path.abspath(d) for d in [*dirs, json_dir]))
    if root is None:
        root = os.path.commonpath(dirs)
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
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{json_path}: 'images' lists no image; a COCO file needs one "
                         "entry per image (id, file_name, width, height).")
    report = LoadReport()
    found, seen = [], set()
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
            # The annotation's own fault first: an image with an unknown
            # category has no ground truth to count as missed.
            unknown = [a for a, c in zip(anns, classes) if c is None]
            if unknown:
                raise BadItem(json_path, f"image id {image_id} ({name}): annotation "
                              f"{unknown[0].get('id')} has unknown category_id "
                              f"{unknown[0]['category_id']}; categories are "
                              f"{sorted(cat_index)}", reasons.UNKNOWN_CLASS)
            path = resolve_image(json_path, dirs, name,
                                 f"file_name of image id {image_id}", root=root)
        except BadItem as e:
            report.skip_image(e, _missed(f"{json_path} (image id {image_id}, {name})",
                                         xywh, classes, crowd, height, width))
            continue
        found.append((image_id, name, path, height, width, xywh, classes, crowd))

    def header(path):
        try:
            return image_header_info(path, path)
        except BadItem as e:
            return e

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        headers = list(pool.map(header, [f[2] for f in found]))
    out = []
    for (image_id, name, path, height, width, xywh, classes, crowd), info in zip(found,
                                                                                  headers):
        raw = (np.asarray(to_internal(np.asarray(xywh, np.float32), "xywh"))
               if xywh else np.zeros((0, 4), np.float32))
        where = f"{json_path} (image id {image_id}, {name})"
        try:
            raw, height, width = fit_to_image(where, path, raw, (height, width), report,
                                              DISPLAYED, info)
        except BadItem as e:
            report.skip_image(e, _missed(path, xywh, classes, crowd, height, width))
            continue
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
    if not out:
        raise ValueError(f"{json_path}: no usable image of {len(entries)} listed "
                         f"({report.summary()}); the warnings above name each image and "
                         "why.")
    return out, list(class_names), report
