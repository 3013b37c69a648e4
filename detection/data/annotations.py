"""The loaded form of a detection dataset, whatever its source format."""

import dataclasses
import logging
import os
import re
import xml.etree.ElementTree as ET

import numpy as np

from resnet_tf.data import report as reasons
from resnet_tf.data.report import BadItem, SkipReport, format_reasons

log = logging.getLogger("resnet_tf.data")


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
    warnings: int = 0
    skipped_images: int = 0  # annotation files or image entries not used
    dropped: list = dataclasses.field(default_factory=list)  # (file, index, reason)
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

    def skip_image(self, error):
        """Skip the image that ``error`` (a ``BadItem``) is about."""
        self.skipped_images += 1
        self.skips.add(error.where, f"skipped: {error.detail}", error.reason,
                       key=(error.where, error.detail))

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
                + (f", {self.warnings} other warnings" if self.warnings else "")
                + f"; skipped by reason: {format_reasons(self.by_reason)}")

    def to_dict(self):
        return {"images": self.images, "boxes": self.boxes,
                "clipped_boxes": self.clipped_boxes, "dropped_boxes": self.dropped_boxes,
                "images_without_boxes": self.images_without_boxes,
                "skipped_images": self.skipped_images, "warnings": self.warnings,
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


def resolve_image(where, image_dir, name, field):
    """The path of image ``name`` inside ``image_dir``.

    Raises ``BadItem`` (a ValueError naming ``where``, the annotation file,
    and ``field``, the annotation's key) for a name that points outside
    ``image_dir`` (reason ``path_outside_root``) or a file that does not
    exist (``missing_image``). abspath, not realpath: a symlinked image
    folder is fine, "../x" is not.
    """
    root = os.path.abspath(image_dir)
    path = os.path.abspath(os.path.join(image_dir, name))
    if os.path.commonpath([root, path]) != root:
        raise BadItem(where, f"{field} {name!r} points outside the dataset's image "
                      f"folder {image_dir}; refusing to read it", reasons.OUTSIDE_ROOT)
    if not os.path.isfile(path):
        raise BadItem(where, f"image file {path} (from {field}) does not exist",
                      reasons.MISSING_IMAGE)
    return path


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


def image_header_size(image_path, where):
    """``(width, height)`` from an image file's header (PIL reads no pixels),
    or ``BadItem`` with the reason the decoder would skip the file for."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as im:
            return im.size
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
