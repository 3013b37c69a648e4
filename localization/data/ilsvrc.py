"""ILSVRC localization annotations, in both published forms.

- Kaggle CSV ("ImageNet Object Localization Challenge"):
  ``LOC_train_solution.csv`` / ``LOC_val_solution.csv``, header
  ``ImageId,PredictionString``, each row ``ImageId,"wnid xmin ymin xmax ymax
  [wnid xmin ymin xmax ymax ...]"``, with ``LOC_synset_mapping.txt`` (line i:
  ``wnid names``, class index i).
- ILSVRC XML (``Annotations/CLS-LOC/{train/<wnid>,val}/<ImageId>.xml``):
  ``<size><width>``/``<height>``, and per ``<object>`` a ``<name>`` (wnid)
  and a ``<bndbox>``.

Both give 0-based, inclusive pixel indices (the devkit's IoU adds 1 to
widths and heights; no box of the 50,000 validation rows has xmax equal to
the image width). They become internal boxes (ymin, xmin, ymax + 1, xmax +
1): continuous pixels, so IoU on them equals the devkit's.

Every image has one class (ILSVRC CLS-LOC; all 50,000 validation rows do).

Frames and sizes (``detection.data.annotations.fit_to_image``, frame
"stored"): ILSVRC's boxes and ``<size>`` are of the image as stored (they
were drawn before browsers turned images by EXIF orientation, and the
devkit reads the stored pixels), while images are decoded as displayed
(EXIF orientation applied). So the boxes of an image with an EXIF
orientation are turned with it (counted as ``reoriented_images``); an XML
``<size>`` that is the displayed size instead keeps the boxes as written; a
``<size>`` that is neither skips the file as ``size_mismatch``, naming both.
The CSV states no size: the image header's is used.

Nothing is dropped silently. Each of these is a warning naming the file and
row, and is counted in the ``LocReport`` (by reason, see
``resnet_tf.data.report``): a malformed row or XML file (wrong number of
columns or fields, a coordinate that is not a number), a row or XML file
that is not UTF-8, a wnid not in the synset list, boxes of a second class
in one row, a duplicated ImageId, an ImageId that is not a plain file name
(it would leave the image folder), an image file that is missing or whose
header can't be read (empty, not an image, too large), a box outside the
image (dropped) or reaching past it (clipped), a zero-area or inverted box,
an XML ``<size>`` that disagrees with the image (``size_mismatch``).
A row skipped for its image file (missing, not a plain name, a header that
can't be read) keeps its boxes in ``LocReport.missed``: evaluation counts
the image as a miss (``localization.evaluate``).
A missing or wrong file (no CSV header, no synset list) is a ValueError.
"""

import concurrent.futures
import csv
import dataclasses
import os
import zlib

import numpy as np

from detection.data.annotations import (STORED, ImageAnnotation, LoadReport, clean_boxes,
                                         fit_to_image, image_header_info, missed_annotation,
                                         parse_xml)
from localization.data import reasons
from resnet_tf.data.report import BadItem, format_reasons

SYNSETS = "LOC_synset_mapping.txt"
CSV_HEADER = ["ImageId", "PredictionString"]
IMAGE_EXTENSIONS = (".JPEG", ".jpg", ".jpeg", ".png", ".JPG")


@dataclasses.dataclass
class LocReport(LoadReport):
    """``LoadReport`` plus what the localization loaders skip and count."""

    rows: int = 0
    skipped_rows: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # (where, reason)
    unannotated_images: int = 0  # image files with no annotation (not used)
    images_per_class: dict = dataclasses.field(default_factory=dict)
    boxes_per_class: dict = dataclasses.field(default_factory=dict)

    def skip(self, where, message, reason=reasons.MALFORMED, missed=None, name="",
             position=-1):
        """Skip an annotation row or file, counted under ``reason``;
        ``missed``: the row's ground truth (``ImageAnnotation``), kept in
        ``missed`` when its image file can't be read (``LoadReport``)."""
        self.skipped_rows += 1
        self.skipped.append((where, message))
        self.skips.add(where, f"skipped: {message}", reason)
        self.keep_missed(BadItem(where, message, reason), missed, name, position)

    def count(self, wnid, boxes):
        self.images_per_class[wnid] = self.images_per_class.get(wnid, 0) + 1
        self.boxes_per_class[wnid] = self.boxes_per_class.get(wnid, 0) + boxes

    def summary(self):
        return (f"{self.rows} annotation rows: {self.images} images with "
                f"{self.boxes} boxes kept, {self.skipped_rows} rows skipped "
                f"(named in warnings), {self.clipped_boxes} boxes clipped to the image, "
                f"{self.dropped_boxes} boxes dropped, {self.images_without_boxes} "
                f"images left without boxes, {self.unannotated_images} image files "
                "without annotations (not used); skipped by reason: "
                f"{format_reasons(self.by_reason)}")

    def to_dict(self):
        return {"rows": self.rows, "images": self.images, "boxes": self.boxes,
                "skipped_rows": self.skipped_rows, "clipped_boxes": self.clipped_boxes,
                "dropped_boxes": self.dropped_boxes,
                "images_without_boxes": self.images_without_boxes,
                "unannotated_images": self.unannotated_images,
                "missed_images": len(self.missed), "missed_objects": self.missed_objects,
                "skipped_by_reason": self.by_reason}


@dataclasses.dataclass
class LocRow:
    """One parsed annotation row, before the image is looked at."""

    image_id: str
    wnid: str
    label: int
    boxes: np.ndarray  # float32 [N, 4] internal format, not yet clipped
    where: str  # "file:line" for messages


def read_synsets(path):
    """``(wnids, names)`` from ``LOC_synset_mapping.txt``, in class order."""
    from resnet_tf.data.labels import read_class_index

    if not os.path.isfile(path):
        raise ValueError(f"{path}: synset list not found. ILSVRC localization data "
                         f"needs {SYNSETS} (line i: 'wnid names', class i) beside the "
                         "annotations.")
    names, wnids = read_class_index(path)
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{path}: a wnid is listed twice; each line must name a "
                         "different synset.")
    return wnids, names


def _inclusive_to_internal(x0, y0, x1, y1):
    # 0-based inclusive pixel indices -> continuous (see the module docstring).
    return [y0, x0, y1 + 1, x1 + 1]


def parse_prediction_string(text):
    """``[(wnid, [xmin, ymin, xmax, ymax]), ...]`` or a ValueError saying what
    is wrong with the string."""
    fields = text.split()
    if not fields:
        raise ValueError("empty PredictionString (no boxes)")
    if len(fields) % 5:
        raise ValueError(f"PredictionString has {len(fields)} fields, not a multiple "
                         "of 5 (wnid xmin ymin xmax ymax)")
    out = []
    for i in range(0, len(fields), 5):
        try:
            coords = [float(v) for v in fields[i + 1:i + 5]]
        except ValueError:
            raise ValueError(f"box {i // 5} has a coordinate that is not a number: "
                             f"{fields[i + 1:i + 5]}") from None
        if not all(np.isfinite(coords)):
            raise ValueError(f"box {i // 5} has a non-finite coordinate: {coords}")
        out.append((fields[i], coords))
    return out


def _row_from_objects(objects, image_id, index, where, report):
    """A ``LocRow`` from [(wnid, [x0, y0, x1, y1])], or None (skipped)."""
    unknown = sorted({w for w, _ in objects if w not in index})
    if unknown:
        report.skip(where, f"wnid {unknown[0]} is not in the synset list; add it to "
                    f"{SYNSETS} or remove the row", reasons.UNKNOWN_CLASS)
        return None
    wnid = objects[0][0]
    boxes = []
    for i, (w, coords) in enumerate(objects):
        if w != wnid:
            report.drop(where, i, f"a box of a second class {w} (the row's class is "
                        f"{wnid}; ILSVRC localization has one class per image)",
                        reasons.SECOND_CLASS_BOX)
            continue
        boxes.append(_inclusive_to_internal(*coords))
    return LocRow(image_id, wnid, index[wnid], np.asarray(boxes, np.float32).reshape(-1, 4),
                  where)


def read_loc_csv(csv_path, wnids, report=None):
    """Parse a Kaggle ``LOC_*_solution.csv``.

    Args:
        csv_path: the CSV file.
        wnids: the synset list (class order).
        report: a ``LocReport`` to add to (a new one if None).
    Returns:
        ``(rows, report)``: a list of ``LocRow`` (boxes not yet checked
        against the image), and the report with per-class image and box
        counts of the rows kept.
    """
    report = report if report is not None else LocReport()
    index = {w: i for i, w in enumerate(wnids)}
    if not os.path.isfile(csv_path):
        raise ValueError(f"{csv_path}: annotation CSV not found.")
    rows, seen = [], set()
    # Bytes that are not UTF-8 become lone surrogates, found row by row below.
    with open(csv_path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lstrip("\ufeff") for h in header] != CSV_HEADER:
            raise ValueError(f"{csv_path}: expected the header 'ImageId,PredictionString' "
                             f"(a Kaggle LOC_*_solution.csv), got {header!r}.")
        for line, fields in enumerate(reader, 2):
            where = f"{csv_path}:{line}"
            if not fields:
                continue
            report.rows += 1
            if not all(map(_is_utf8, fields)):
                report.skip(where, "the row is not valid UTF-8; save the file as UTF-8",
                            reasons.NOT_UTF8)
                continue
            if len(fields) != 2 or not fields[0].strip():
                report.skip(where, f"malformed row {fields!r}: expected 2 columns "
                            "ImageId,PredictionString")
                continue
            image_id = fields[0].strip()
            try:
                objects = parse_prediction_string(fields[1])
            except ValueError as e:
                report.skip(where, f"malformed row for {image_id}: {e}")
                continue
            if image_id in seen:
                report.skip(where, f"ImageId {image_id} appears again (kept its first row)",
                            reasons.DUPLICATE)
                continue
            row = _row_from_objects(objects, image_id, index, where, report)
            if row is not None:
                seen.add(image_id)
                rows.append(row)
                report.count(row.wnid, len(row.boxes))
    return rows, report


def read_loc_xml(xml_path, wnids, report=None):
    """One ILSVRC XML file: ``(LocRow or None, (height, width) or None)``."""
    report = report if report is not None else LocReport()
    index = {w: i for i, w in enumerate(wnids)}
    report.rows += 1
    try:
        root = parse_xml(xml_path)
    except BadItem as e:
        report.skip(xml_path, e.detail, e.reason)
        return None, None
    image_id = (root.findtext("filename") or "").strip()
    if not image_id:
        image_id = os.path.splitext(os.path.basename(xml_path))[0]
    image_id = os.path.splitext(image_id)[0] if image_id.endswith(IMAGE_EXTENSIONS) \
        else image_id
    try:
        size = (int(float(root.findtext("size/height"))),
                int(float(root.findtext("size/width"))))
    except (TypeError, ValueError):
        size = None
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        try:
            coords = [float(obj.findtext(f"bndbox/{t}"))
                      for t in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            report.skip(xml_path, f"<object> {i} ({name or 'no name'}) has a missing or "
                        "non-numeric <bndbox> coordinate")
            return None, None
        objects.append((name, coords))
    if not objects:
        report.skip(xml_path, "no <object> with a box", reasons.NO_BOXES)
        return None, None
    row = _row_from_objects(objects, image_id, index, xml_path, report)
    if row is not None:
        report.count(row.wnid, len(row.boxes))
    return row, size


def _is_utf8(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate from surrogateescape
        return False


def _image_header(path):
    """``image_header_info`` of ``path``, or the ``BadItem`` saying why not."""
    try:
        return image_header_info(path, path)
    except BadItem as e:
        return e


def plain_image_id(image_id):
    """Whether ``image_id`` is a plain file name (no folder, no "..").
    ILSVRC ImageIds are; anything else could read outside the dataset."""
    return (image_id not in (".", "..") and "/" not in image_id and "\\" not in image_id
            and os.sep not in image_id and "\0" not in image_id)


def find_image(roots, image_id):
    """The file of ``image_id`` under one of ``roots`` (``ROOT/ID.JPEG`` or
    the train layout ``ROOT/<wnid>/ID.JPEG``), or None."""
    wnid = image_id.split("_")[0]
    for root in roots:
        for ext in IMAGE_EXTENSIONS:
            for p in (os.path.join(root, image_id + ext),
                      os.path.join(root, wnid, image_id + ext)):
                if os.path.isfile(p):
                    return p
    return None


def attach_images(rows, image_roots, report, sizes=None, workers=8):
    """Find each row's image, check its boxes against the image size.

    Args:
        rows: ``LocRow`` list.
        image_roots: folders to look in (see ``find_image``).
        sizes: optional {image_id: (height, width)} stated by XML files,
            checked against the image headers (module docstring, "Frames
            and sizes"); every header is read (size, EXIF orientation).
    Returns:
        A list of ``ImageAnnotation`` (classes int32, all the row's label;
        boxes float32 [N, 4] (ymin, xmin, ymax, xmax) pixels of the image as
        decoded), images without a box left out (counted as
        ``images_without_boxes``).
    """
    sizes = sizes or {}
    paths = [find_image(image_roots, r.image_id) if plain_image_id(r.image_id) else None
             for r in rows]
    todo = list(dict.fromkeys(p for p in paths if p))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        read = dict(zip(todo, pool.map(_image_header, todo)))
    anns = []
    for row, path in zip(rows, paths):
        # The row's ground truth, should its image be unreadable (counted as
        # missed when evaluated): boxes as written, in the stated frame.
        missed = missed_annotation(path or f"{row.where} (ImageId {row.image_id})", row.boxes,
                                   np.full(len(row.boxes), row.label, np.int32), None,
                                   *sizes.get(row.image_id, (0, 0)))
        missed = missed if len(missed.boxes) else None  # no box: not used even if read
        if not plain_image_id(row.image_id):
            report.skip(row.where, f"ImageId {row.image_id!r} is not a plain file name; "
                        "refusing a path that leaves the dataset's image folders",
                        reasons.OUTSIDE_ROOT, missed, row.image_id, len(anns))
            continue
        if path is None:
            report.skip(row.where, f"image {row.image_id} not found under "
                        f"{', '.join(image_roots)}", reasons.MISSING_IMAGE, missed,
                        row.image_id, len(anns))
            continue
        try:
            raw, h, w = fit_to_image(row.where, path, row.boxes, sizes.get(row.image_id),
                                     report, STORED, read[path])
        except BadItem as e:
            report.skip(row.where, e.detail, e.reason, missed, row.image_id, len(anns))
            continue
        boxes, _ = clean_boxes(row.where, raw, h, w, report)
        report.images += 1
        report.boxes += len(boxes)
        if not len(boxes):
            report.images_without_boxes += 1
            report.skips.add(row.where, f"{row.image_id} has no usable box left; not used.",
                             reasons.NO_BOXES)
            continue
        anns.append(ImageAnnotation(path=path, height=h, width=w, boxes=boxes,
                                    classes=np.full(len(boxes), row.label, np.int32),
                                    difficult=np.zeros(len(boxes), bool)))
    return anns


def count_unannotated(image_roots, annotated_ids, limit_dirs=2000):
    """Image files under the first existing root with no annotation row."""
    for root in image_roots:
        if not os.path.isdir(root):
            continue
        n = 0
        stack, dirs = [root], 0
        while stack and dirs < limit_dirs:
            folder = stack.pop()
            dirs += 1
            with os.scandir(folder) as it:
                for e in it:
                    if e.is_dir():
                        stack.append(e.path)
                    elif e.name.endswith(IMAGE_EXTENSIONS):
                        if os.path.splitext(e.name)[0] not in annotated_ids:
                            n += 1
        return n
    return 0


def held_out_missed(report, held, ids, order, n_out, train):
    """``report`` with ``missed`` cut to one part of a held-out split
    (``IlsvrcLocSource``'s ``val_fraction``): an unreadable image belongs to
    the held-out part when its ImageId's (CRC-32, id) key sorts among the
    held-out images' (at most the ``n_out``-th of ``order``), and its
    ``position`` is recounted within the part. ``held``: indices of the
    held-out annotations, ``ids``: their ImageIds."""
    if report is None or not report.missed:
        return report

    def key(image_id):
        return zlib.crc32(image_id.encode()), image_id
    cut = key(ids[order[n_out - 1]])
    part = [i for i in range(len(ids)) if (i in held) != train]
    kept = []
    for m in report.missed:
        if (key(m.name) <= cut) != train:
            kept.append(dataclasses.replace(
                m, position=sum(1 for i in part if i < m.position) if m.position >= 0 else -1))
    return dataclasses.replace(report, missed=kept)
