"""PASCAL VOC XML annotations (``voc:PATH``).

Layouts:
- VOCdevkit: ``PATH/Annotations/*.xml``, ``PATH/JPEGImages/``,
  ``PATH/ImageSets/Main/{split}.txt``;
- a plain folder: XML files and images side by side (or in ``annotations/``
  and ``images/``); every XML file is one image.

VOC coordinates are 1-based and inclusive: ``xmin=1`` is the first pixel
column. They become internal boxes ``(ymin - 1, xmin - 1, ymax, xmax)``. A box
with ``xmax <= xmin`` or ``ymax <= ymin`` as written is degenerate and is
dropped with a warning (BCCD has two); boxes reaching past the image are
clipped. Both are counted in the ``LoadReport``.

Image files are found as VOC's tools find them: ``<filename>`` in the
image folder (with a sub-folder if it names one), then beside the XML file
(labelImg saves them side by side); a ``<filename>`` without extension, or
one that is not there, is also tried as the devkit builds it, ``<XML
id>.jpg`` (and other image extensions). labelImg's absolute ``<path>`` (of
the annotator's machine) is not used.

Frames and sizes (``detection.data.annotations.fit_to_image``): images are
decoded as displayed (EXIF orientation applied), so ``<size>`` is compared
with the displayed size. Equal: the boxes are used as written (labelImg and
CVAT write the displayed frame). ``<size>`` missing or 0: the image's size.
``<size>`` equal to the stored size of an image whose EXIF orientation
swaps its sides: the boxes were drawn on the unturned pixels and are turned
with the image (counted as ``reoriented_images``). Any other size: the file
is skipped as ``size_mismatch``, naming both sizes.

An annotation file that can't be used is skipped (with a warning naming it,
counted by reason in the ``LoadReport``), and the others are read: malformed
XML, bytes that are not UTF-8, a missing or non-numeric field, a class name
outside ``class_names``, a ``<filename>`` that leaves the dataset folder or
does not exist, an image whose header can't be read, a ``<size>`` that
disagrees with the image. Where the fault is the image file's (missing,
outside the dataset folder, a header that can't be read), the file's
objects are kept in ``LoadReport.missed``, so that evaluation counts them as
missed (``detection.evaluate``). A dataset in which no file is usable is a
ValueError (with the counts by reason), as is a split list naming a file
that is not there.
"""

import os

import numpy as np

from detection.data.annotations import (DISPLAYED, ImageAnnotation, LoadReport, clean_boxes,
                                         fit_to_image, missed_annotation, parse_xml,
                                         resolve_image)
from detection.data import reasons
from resnet_tf.data.report import BadItem


def _find(root, *names):
    for n in names:
        p = os.path.join(root, n)
        if os.path.isdir(p):
            return p
    return root


def _text(node, tag, where, required=True):
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise BadItem(where, f"<{tag}> is missing from <{node.tag}>", reasons.MALFORMED)
        return None
    return child.text.strip()


def _number(node, tag, where):
    text = _text(node, tag, where)
    try:
        return float(text)
    except ValueError:
        raise BadItem(where, f"<{tag}> is {text!r}, not a number",
                      reasons.MALFORMED) from None


def parse_voc_xml(xml_path, image_dir, class_names=None, report=None, root=None):
    """One VOC XML file.

    Args:
        xml_path: the annotation file.
        image_dir: where ``<filename>`` is looked up (then beside the XML
            file, when that is inside ``root``; see the module docstring).
        root: the dataset folder no image may be read outside of (default
            ``image_dir``).
        class_names: the allowed names, or None to accept any (the caller
            then maps names to indices).
    Returns:
        ``(ImageAnnotation with classes still names (object array), report)``:
        boxes float32 [N, 4] (ymin, xmin, ymax, xmax), continuous pixels of
        the image as decoded (displayed frame, see the module docstring).
    Raises:
        ``resnet_tf.data.report.BadItem`` (a ValueError naming the file,
        with the reason ``read_voc`` counts it under) for a file that can't
        be used.
    """
    report = report or LoadReport()
    try:
        ann = parse_xml(xml_path)
    except BadItem as e:
        if e.reason == reasons.MALFORMED:
            e.detail = e.detail.replace("malformed XML", "malformed VOC XML")
            e.args = (f"{e.where}: {e.detail}",)
        raise
    filename = _text(ann, "filename", xml_path)
    try:
        image_path, image_error = resolve_image(
            xml_path, [image_dir, os.path.dirname(os.path.abspath(xml_path))], filename,
            "<filename>", root=root if root is not None else image_dir,
            stem=os.path.splitext(os.path.basename(xml_path))[0]), None
    except BadItem as e:  # raised below, once the objects are read (their GT is missed)
        image_path, image_error = xml_path, e
    size = ann.find("size")
    stated = None
    if size is not None and size.find("width") is not None:
        stated = (int(_number(size, "height", xml_path)),
                  int(_number(size, "width", xml_path)))
    names, raw, difficult = [], [], []
    for obj in ann.findall("object"):
        name = _text(obj, "name", xml_path)
        if class_names is not None and name not in class_names:
            raise BadItem(xml_path, f"unknown class name {name!r}; known classes are "
                          f"{list(class_names)}", reasons.UNKNOWN_CLASS)
        box = obj.find("bndbox")
        if box is None:
            raise BadItem(xml_path, f"an <object> ({name}) has no <bndbox>",
                          reasons.MALFORMED)
        x0, y0, x1, y1 = (_number(box, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
        # 1-based inclusive -> continuous; degenerate as written stays degenerate.
        raw.append([y0 - 1, x0 - 1, y1, x1] if (x1 > x0 and y1 > y0) else [y0, x0, y1, x1])
        names.append(name)
        difficult.append((_text(obj, "difficult", xml_path, required=False) or "0") == "1")
    try:
        if image_error is not None:
            raise image_error
        raw, height, width = fit_to_image(xml_path, image_path, raw, stated, report,
                                          DISPLAYED)
    except BadItem as e:
        # An image that can't be read: its objects (class names, as above)
        # travel with the error, for evaluation to count as missed.
        e.annotation = missed_annotation(image_path, raw, np.array(names, object),
                                         difficult, *(stated or (0, 0)))
        raise
    boxes, keep = clean_boxes(xml_path, raw, height, width, report)
    report.images += 1
    report.boxes += len(boxes)
    if not len(boxes):
        report.images_without_boxes += 1
    return ImageAnnotation(
        path=image_path, height=height, width=width, boxes=boxes,
        classes=np.array(names, object)[keep] if names else np.array([], object),
        difficult=np.array(difficult, bool)[keep] if names else np.zeros(0, bool)), report


def read_voc(root, split=None, class_names=None):
    """Read a VOC dataset.

    Args:
        root: the dataset folder (see the module docstring for layouts).
        split: an ImageSets/Main split name ("trainval", "test"...), or None
            for every XML file.
        class_names: fixes the classes and their order; None: the sorted
            names found.
    Returns:
        ``(annotations, class_names, report)``; ``classes`` are int32 indices.
    """
    if not os.path.isdir(root):
        raise ValueError(f"{root}: not a folder; voc:PATH needs a VOC dataset folder.")
    ann_dir = _find(root, "Annotations", "annotations")
    image_dir = _find(root, "JPEGImages", "images")
    if split:
        split_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(split_file):
            raise ValueError(f"{split_file}: split {split!r} not found.")
        with open(split_file) as f:
            ids = [line.split()[0] for line in f if line.strip()]
        xml_files = [os.path.join(ann_dir, f"{i}.xml") for i in ids]
        missing = [p for p in xml_files if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"{missing[0]}: listed in {split_file} but missing "
                             f"({len(missing)} missing in all).")
    else:
        xml_files = sorted(os.path.join(ann_dir, n) for n in os.listdir(ann_dir)
                           if n.endswith(".xml"))
        if not xml_files:
            raise ValueError(f"{ann_dir}: no .xml annotation files found.")
    report = LoadReport()
    anns = []
    for p in xml_files:
        try:
            anns.append(parse_voc_xml(p, image_dir, class_names, report, root=root)[0])
        except BadItem as e:
            report.skip_image(e)
    if not anns:
        raise ValueError(f"{ann_dir}: no usable annotation file ({report.summary()}); "
                         "the warnings above name each file and why.")
    if class_names is None:
        # The unreadable images' classes too: their objects are still the data's.
        class_names = sorted({n for a in anns + [m.annotation for m in report.missed]
                              for n in a.classes})
    index = {n: i for i, n in enumerate(class_names)}
    for a in anns + [m.annotation for m in report.missed]:
        a.classes = np.array([index[n] for n in a.classes], np.int32)
    return anns, list(class_names), report

