"""The loaded form of a detection dataset, whatever its source format.

Also the rules every annotation reader (VOC, COCO, ILSVRC) shares:

- **Frames.** Images are decoded as displayed: EXIF orientation applied
  (``resnet_tf.data.decode``). Boxes are therefore kept in the displayed
  frame. ``fit_to_image`` compares the size an annotation states with the
  image's real size and decides, by one rule:

  1. the stated size is missing or 0: the image's displayed size is used,
     and the boxes are taken to be in the reader's default frame;
  2. it equals the displayed size: the boxes are in the displayed frame
     (what labelImg, CVAT, Label Studio and browsers show) - or, where the
     stored and displayed sizes are equal too (orientations 1-4, square
     images), in the reader's default frame;
  3. it equals only the stored size (orientations 5-8, the sides swapped):
     the boxes were drawn on the unturned pixels; they are turned with the
     image (``orient_boxes``) and counted in ``LoadReport.reoriented_images``;
  4. anything else: the image is skipped, counted as ``size_mismatch``,
     naming both sizes. Boxes are never trained in another frame.

  The default frame is "displayed" for VOC and COCO (the tools that write
  them show EXIF-turned images; detectron2 reads COCO the same way) and
  "stored" for ILSVRC (its boxes and sizes are of the stored pixels, the
  devkit's convention). For an image without EXIF orientation the frames
  are the same and rules 1-2 keep the boxes as written.
- **File names** (``resolve_image``): looked up in each of the reader's
  folders in order (e.g. a COCO JSON's image folder, then the JSON's own
  folder, where Label Studio's ``images/0.jpg`` is relative to); a name with
  Windows separators is also tried with ``/``; nothing outside the dataset
  folder is read.
"""

import dataclasses
import logging
import os
import re
import xml.etree.ElementTree as ET

import numpy as np

from detection.data import reasons
from resnet_tf.data.report import BadItem, SkipReport, format_reasons

log = logging.getLogger("resnet_tf.data")

# Extensions tried for an image named without one (``resolve_image``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".JPG", ".JPEG", ".png", ".PNG", ".bmp", ".gif")
# The frame an annotation's boxes are taken to be in when its stated size
# can't tell (``fit_to_image``).
DISPLAYED, STORED = "displayed", "stored"
# EXIF orientations that swap height and width (resnet_tf.data.decode).
SWAPS_SIDES = (5, 6, 7, 8)


@dataclasses.dataclass
class ImageAnnotation:
    """One image's ground truth.

    Attributes:
        path: the image file.
        height, width: the image size in pixels.
        boxes: float32 [N, 4], internal format (ymin, xmin, ymax, xmax) pixels.
        classes: int32 [N], indices into the dataset's class names.
        difficult: bool [N] (VOC's flag; ignored in evaluation).
    """

    path: str
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray


# Skip reasons that mean "the image file could not be read" (missing, refused,
# or its bytes undecodable), as opposed to a fault of the annotation itself:
# the skipped image's ground truth is kept (``LoadReport.missed``) and
# evaluation counts its objects as missed.
IMAGE_FAULTS = frozenset({
    reasons.MISSING_IMAGE, reasons.OUTSIDE_ROOT, reasons.EMPTY, reasons.NOT_AN_IMAGE,
    reasons.TRUNCATED_JPEG, reasons.TRUNCATED_PNG, reasons.TRUNCATED_GIF,
    reasons.TRUNCATED_BMP, reasons.UNSUPPORTED_BMP, reasons.TOO_LARGE,
    reasons.UNREADABLE_IMAGE, reasons.CORRUPT})


@dataclasses.dataclass
class MissedImage:
    """An image a loader skipped because its file could not be read, with
    the ground truth its annotation gives, so that evaluation can count its
    objects as missed (the score can't rise by losing files).

    Attributes:
        annotation: ``ImageAnnotation``: ``path`` the image file (or the
            annotation naming it, where no file was found); ``height``,
            ``width`` the stated size (0 where unknown); ``boxes`` float32
            [N, 4] (ymin, xmin, ymax, xmax) pixels as written (the frame
            can't be checked without the image; degenerate and non-finite
            boxes left out); ``classes`` int32 [N]; ``difficult`` bool [N].
        reason: the skip reason key (one of ``IMAGE_FAULTS``).
        message: why, as warned.
        name: the image's name in its annotation (e.g. an ILSVRC ImageId).
        position: how many of the split's kept annotations came before it
            in the loader's order (-1: not recorded), for evaluations cut
            to their first N images.
    """

    annotation: ImageAnnotation
    reason: str
    message: str
    name: str = ""
    position: int = -1


def missed_annotation(path, boxes, classes, difficult=None, height=0, width=0):
    """The ``ImageAnnotation`` of a ``MissedImage``: ``boxes`` float [N, 4]
    internal pixels as written; those with a non-finite coordinate or no
    area are left out (they would be dropped for a readable image too)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    difficult = (np.zeros(len(boxes), bool) if difficult is None
                 else np.asarray(difficult, bool).reshape(-1))
    keep = (np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1]))
    return ImageAnnotation(path=str(path), height=int(height or 0), width=int(width or 0),
                           boxes=boxes[keep], classes=classes[keep],
                           difficult=difficult[keep])


def missed_in_order(report, max_images=None):
    """The ``MissedImage``s of a split's ``report`` (images the loader
    skipped as unreadable) that an evaluation of its first ``max_images``
    images covers: those whose ``position`` (kept annotations before them)
    leaves them among the first ``max_images`` of the loader's order; all
    without ``max_images``."""
    missed = list(getattr(report, "missed", None) or [])
    if not max_images:
        return missed
    out = []
    for m in sorted(missed, key=lambda m: m.position):
        if max(m.position, 0) + len(out) < max_images:
            out.append(m)
    return out


@dataclasses.dataclass
class LoadReport:
    """What a loader did: nothing is dropped silently.

    Every skipped image (annotation file) and dropped box is also counted
    by reason in ``skips`` (a ``resnet_tf.data.report.SkipReport``, the
    structure the image decoder's ``SkipCounter`` uses too); ``by_reason``
    gives those counts.
    """

    images: int = 0
    boxes: int = 0
    clipped_boxes: int = 0
    dropped_boxes: int = 0
    images_without_boxes: int = 0
    reoriented_images: int = 0  # boxes turned from the stored to the displayed frame
    warnings: int = 0
    skipped_images: int = 0  # annotation files or image entries not used
    dropped: list = dataclasses.field(default_factory=list)  # (file, index, reason)
    # skipped images whose file could not be read, with their ground truth
    # (``MissedImage``): evaluation counts their objects as missed
    missed: list = dataclasses.field(default_factory=list, repr=False, compare=False)
    skips: SkipReport = dataclasses.field(default_factory=SkipReport, repr=False,
                                          compare=False)

    @property
    def by_reason(self):
        """``{reason key: count}`` of skipped items and dropped boxes."""
        return self.skips.by_reason

    def drop(self, where, index, message, reason=reasons.DEGENERATE_BOX):
        """Drop box ``index`` of ``where`` (the image is kept)."""
        self.dropped_boxes += 1
        self.dropped.append((where, index, message))
        self.skips.add(where, f"box {index} dropped: {message}", reason, key=(where, index))

    def skip_image(self, error, missed=None):
        """Skip the image that ``error`` (a ``BadItem``) is about.

        ``missed``: the image's ground truth (``ImageAnnotation``, see
        ``MissedImage``), kept in ``missed`` when ``error.reason`` says the
        image file could not be read (``IMAGE_FAULTS``); default: the
        ``annotation`` attribute a reader attached to ``error``.
        """
        self.skipped_images += 1
        self.skips.add(error.where, f"skipped: {error.detail}", error.reason,
                       key=(error.where, error.detail))
        self.keep_missed(error, missed)

    def keep_missed(self, error, missed=None, name="", position=-1):
        """Keep ``missed`` (or ``error.annotation``) as a ``MissedImage`` if
        ``error.reason`` is one of ``IMAGE_FAULTS``."""
        missed = missed if missed is not None else getattr(error, "annotation", None)
        if missed is not None and error.reason in IMAGE_FAULTS:
            self.missed.append(MissedImage(missed, error.reason, error.detail, name,
                                           position))

    @property
    def missed_objects(self):
        """Ground-truth boxes of the ``missed`` images."""
        return int(sum(len(m.annotation.boxes) for m in self.missed))

    def warn(self, where, message):
        """A problem that changed what was loaded without dropping a box."""
        self.warnings += 1
        log.warning("%s: %s", where, message)

    def summary(self):
        return (f"{self.images} images, {self.boxes} boxes kept, "
                f"{self.clipped_boxes} clipped to the image, {self.dropped_boxes} "
                f"dropped (zero-area, inverted or outside), {self.images_without_boxes} "
                "images without boxes"
                + (f", {self.skipped_images} images skipped" if self.skipped_images else "")
                + (f" ({len(self.missed)} unreadable, their {self.missed_objects} objects "
                   "counted as missed when evaluated)" if self.missed else "")
                + (f", {self.reoriented_images} images' boxes turned by their EXIF "
                   "orientation" if self.reoriented_images else "")
                + (f", {self.warnings} other warnings" if self.warnings else "")
                + f"; skipped by reason: {format_reasons(self.by_reason)}")

    def to_dict(self):
        return {"images": self.images, "boxes": self.boxes,
                "clipped_boxes": self.clipped_boxes, "dropped_boxes": self.dropped_boxes,
                "images_without_boxes": self.images_without_boxes,
                "skipped_images": self.skipped_images, "warnings": self.warnings,
                "reoriented_images": self.reoriented_images,
                "missed_images": len(self.missed), "missed_objects": self.missed_objects,
                "skipped_by_reason": self.by_reason}


_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)""")


def parse_xml(path):
    """The root element of XML file ``path``.

    Raises ``BadItem`` (a ValueError naming the file) with reason
    ``not_utf8`` for bytes that are not UTF-8 where no other encoding is
    declared, ``malformed_annotation`` for anything else expat rejects.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadItem(path, f"unreadable annotation file ({e})", reasons.MALFORMED) from e
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        declared = _XML_ENCODING.match(data)
        if declared is None or declared.group(1).lower() in (b"utf-8", b"utf8"):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as u:
                raise BadItem(path, f"not UTF-8 (byte {data[u.start]:#04x} at offset "
                              f"{u.start}); save the file as UTF-8 or declare its "
                              "encoding in <?xml ... encoding=...?>",
                              reasons.NOT_UTF8) from None
        raise BadItem(path, f"malformed XML ({e})", reasons.MALFORMED) from None


def resolve_image(where, image_dirs, name, field, root=None, stem=None):
    """The path of image ``name``, looked up in ``image_dirs`` in order.

    Args:
        where: the annotation file, for messages.
        image_dirs: a folder or a list of folders; the first that holds the
            file wins.
        name: the annotation's file name (may hold sub-folders, and
            Windows ``\\`` separators, tried as ``/`` too).
        field: the annotation's key, for messages (``"<filename>"``).
        root: the dataset folder nothing may be read outside of (default:
            the first of ``image_dirs``).
        stem: an id to try as ``<stem>.<ext>`` in each folder when ``name``
            is not found (VOC's devkit builds ``JPEGImages/<id>.jpg`` from
            the annotation file's id, whatever ``<filename>`` says).

    Raises ``BadItem`` (a ValueError naming ``where`` and ``field``) for a
    name that points outside ``root`` (reason ``path_outside_root``) or a
    file found in none of the folders (``missing_image``, naming each place
    looked). abspath, not realpath: a symlinked image folder is fine, "../x"
    is not.
    """
    dirs = [image_dirs] if isinstance(image_dirs, (str, os.PathLike)) else list(image_dirs)
    root = os.path.abspath(root if root is not None else dirs[0])
    dirs = [d for d in dirs if os.path.commonpath([root, os.path.abspath(d)]) == root]
    written = [name]
    if "\\" in name and os.sep != "\\":
        written.append(name.replace("\\", "/"))
    guesses = []
    if not os.path.splitext(name)[1]:  # "000005": the id without its extension
        guesses += [name + ext for ext in IMAGE_EXTENSIONS]
    if stem:
        guesses += [stem + ext for ext in IMAGE_EXTENSIONS]
    for n in written + guesses:
        for d in dirs:
            path = os.path.abspath(os.path.join(d, n))
            if os.path.commonpath([root, path]) != root:
                if n in written:
                    raise BadItem(where, f"{field} {name!r} points outside the dataset "
                                  f"folder {root}; refusing to read it. Write it "
                                  "relative to the image folder.", reasons.OUTSIDE_ROOT)
                continue
            if os.path.isfile(path):
                return path
    looked = " and ".join(os.path.abspath(os.path.join(d, name)) for d in dirs)
    also = " (also with / for \\ and with image extensions)" if written[1:] or guesses else ""
    raise BadItem(where, f"image file {name!r} (from {field}) does not exist: looked for "
                  f"{looked}{also}", reasons.MISSING_IMAGE)


def clean_boxes(where, boxes, height, width, report):
    """Clip boxes to the image and drop degenerate ones.

    Args:
        where: the annotation file, for messages.
        boxes: float [N, 4] internal format, before clipping.
    Returns:
        ``(kept_boxes [K, 4], keep_mask [N])``.
    """
    boxes = np.array(boxes, np.float32).reshape(-1, 4)  # a copy: clipped in place
    keep = np.ones(len(boxes), bool)
    limits = np.array([height, width, height, width], np.float32)
    for i, b in enumerate(boxes):
        if not np.all(np.isfinite(b)):
            report.drop(where, i, f"box {b.tolist()} has a non-finite coordinate",
                        reasons.MALFORMED)
            keep[i] = False
            continue
        if b[2] <= b[0] or b[3] <= b[1]:
            report.drop(where, i, f"zero-area or inverted box {b.tolist()} "
                        "(ymin, xmin, ymax, xmax); fix or delete it in the annotation",
                        reasons.DEGENERATE_BOX)
            keep[i] = False
            continue
        clipped = np.clip(b, 0, limits)
        if not np.array_equal(clipped, b):
            report.clipped_boxes += 1
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                report.drop(where, i, f"box {b.tolist()} lies outside the "
                            f"{width}x{height} image", reasons.BOX_OUTSIDE)
                keep[i] = False
                continue
        boxes[i] = clipped
    return boxes[keep], keep


def image_header_info(image_path, where):
    """``((width, height), orientation)`` of an image file as stored, read
    from its header (PIL reads no pixels); ``orientation`` is the EXIF
    Orientation (1..8; 1 where absent or out of range), read from the same
    place the decoder reads it (``resnet_tf.data.decode.exif_orientation``:
    a JPEG's APP1 Exif segment, a PNG's eXIf chunk before the image data).

    Raises ``BadItem`` with the reason the decoder would skip the file for.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as im:
            size, raw = im.size, im.info.get("exif")
    except Image.DecompressionBombError as e:
        raise BadItem(where, f"image {image_path} is too large ({e})",
                      reasons.TOO_LARGE) from None
    except UnidentifiedImageError:
        empty = os.path.getsize(image_path) == 0
        raise BadItem(where, f"image {image_path} is {'empty' if empty else 'not an image'}",
                      reasons.EMPTY if empty else reasons.NOT_AN_IMAGE) from None
    except Exception as e:  # noqa: BLE001 (PIL raises many kinds)
        raise BadItem(where, f"image {image_path}: unreadable header ({e})",
                      reasons.UNREADABLE_IMAGE) from None
    orientation = 1
    if raw:
        try:
            exif = Image.Exif()
            exif.load(raw)
            orientation = exif.get(0x0112, 1)
        except Exception:  # noqa: BLE001 (a malformed EXIF block: as stored, like the decoder)
            orientation = 1
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    return size, orientation


def image_header_size(image_path, where):
    """``(width, height)`` of an image file as displayed (EXIF orientation
    applied, as the decoder does), from its header; ``BadItem`` as
    ``image_header_info``."""
    (width, height), orientation = image_header_info(image_path, where)
    return (height, width) if orientation in SWAPS_SIDES else (width, height)


def orient_boxes(boxes, stored_size, orientation):
    """Boxes drawn on the stored pixels -> the same boxes on the image turned
    by its EXIF ``orientation`` (what the decoder returns).

    Args:
        boxes: float [N, 4], (ymin, xmin, ymax, xmax) continuous pixels of
            the stored image.
        stored_size: (height, width) of the stored image.
        orientation: 1..8.
    Returns:
        float32 [N, 4], (ymin, xmin, ymax, xmax) in the displayed image,
        whose size is (width, height) for orientations 5..8.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = (np.float32(v) for v in stored_size)
    y0, x0, y1, x1 = boxes.T
    # Each corner's image under the turn, in continuous coordinates; written
    # out (no min/max) so that an inverted box stays inverted and is dropped.
    turned = {
        1: (y0, x0, y1, x1), 2: (y0, w - x1, y1, w - x0),
        3: (h - y1, w - x1, h - y0, w - x0), 4: (h - y1, x0, h - y0, x1),
        5: (x0, y0, x1, y1), 6: (x0, h - y1, x1, h - y0),
        7: (w - x1, h - y1, w - x0, h - y0), 8: (w - x1, y0, w - x0, y1),
    }
    return np.stack(turned.get(int(orientation), turned[1]), -1).astype(np.float32)


def fit_to_image(where, image_path, boxes, stated, report, frame=DISPLAYED, info=None):
    """An annotation's boxes in the frame of the decoded image, by the rule in
    the module docstring.

    Args:
        where: the annotation (file, "file:line"), for messages.
        image_path: the image file.
        boxes: float [N, 4], (ymin, xmin, ymax, xmax) pixels as written.
        stated: (height, width) the annotation states, or None.
        report: the ``LoadReport`` counting turned boxes.
        frame: ``DISPLAYED`` or ``STORED``: the reader's default frame.
        info: ``image_header_info``'s result (or the ``BadItem`` it
            raised), if already read.
    Returns:
        ``(boxes float32 [N, 4], height, width)``: displayed frame and size.
        An image whose header can't be read keeps the stated size and boxes
        as written: the decoder skips and counts it (by the same reason).
    Raises:
        ``BadItem`` with reason ``size_mismatch`` (the stated size is
        neither the displayed nor the stored size), or the header's reason
        when no size is stated.
    """
    if info is None:
        try:
            info = image_header_info(image_path, where)
        except BadItem as e:
            info = e
    valid_stated = stated is not None and min(int(v) for v in stated) > 0
    if isinstance(info, BadItem):
        if not valid_stated:
            raise info
        return np.asarray(boxes, np.float32).reshape(-1, 4), int(stated[0]), int(stated[1])
    (sw, sh), orientation = info
    stored = (sh, sw)
    displayed = (sw, sh) if orientation in SWAPS_SIDES else stored
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if stated is not None:
        stated = tuple(int(v) for v in stated)
    if stated is None or min(stated) <= 0:
        if stated is not None:
            report.warn(where, f"states size {stated[1]}x{stated[0]} (width x height); "
                        f"using the image's {displayed[1]}x{displayed[0]}")
        in_frame = frame
    elif stated == displayed and stated == stored:
        in_frame = frame
    elif stated == displayed:
        in_frame = DISPLAYED
    elif stated == stored:
        in_frame = STORED
    else:
        turned = (f" (stored {sw}x{sh}, EXIF orientation {orientation})"
                  if orientation != 1 else "")
        raise BadItem(where, f"states the image size {stated[1]}x{stated[0]} (width x "
                      f"height) but {image_path} is {displayed[1]}x{displayed[0]}"
                      f"{turned}; its boxes would land in the wrong place. Fix the "
                      "size (and the boxes) in the annotation, or annotate the image "
                      "again", reasons.SIZE_MISMATCH)
    if in_frame == STORED and orientation != 1:
        boxes = orient_boxes(boxes, stored, orientation)
        report.reoriented_images += 1
        log.info("%s: boxes drawn on the stored %dx%d pixels, turned by EXIF orientation "
                 "%d to the displayed %dx%d image", where, sw, sh, orientation,
                 displayed[1], displayed[0])
    return boxes, displayed[0], displayed[1]
