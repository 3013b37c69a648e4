"""The loaded form of a detection dataset, whatever its source format."""

import dataclasses
import logging
import os

import numpy as np

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
    """What a loader did: nothing is dropped silently."""

    images: int = 0
    boxes: int = 0
    clipped_boxes: int = 0
    dropped_boxes: int = 0
    images_without_boxes: int = 0
    warnings: int = 0
    dropped: list = dataclasses.field(default_factory=list)  # (file, index, reason)

    def drop(self, where, index, reason):
        self.dropped_boxes += 1
        self.dropped.append((where, index, reason))
        log.warning("%s: box %d dropped: %s", where, index, reason)

    def warn(self, where, message):
        """A problem that changed what was loaded without dropping a box."""
        self.warnings += 1
        log.warning("%s: %s", where, message)

    def summary(self):
        return (f"{self.images} images, {self.boxes} boxes kept, "
                f"{self.clipped_boxes} clipped to the image, {self.dropped_boxes} "
                f"dropped (zero-area or inverted), {self.images_without_boxes} images "
                "without boxes" + (f", {self.warnings} other warnings" if self.warnings else ""))


def resolve_image(where, image_dir, name, field):
    """The path of image ``name`` inside ``image_dir``.

    Raises ValueError (naming ``where``, the annotation file, and ``field``,
    the annotation's key) for a name that points outside ``image_dir`` or a
    file that does not exist. abspath, not realpath: a symlinked image folder
    is fine, "../x" is not.
    """
    root = os.path.abspath(image_dir)
    path = os.path.abspath(os.path.join(image_dir, name))
    if os.path.commonpath([root, path]) != root:
        raise ValueError(f"{where}: {field} {name!r} points outside the dataset's "
                         f"image folder {image_dir}; refusing to read it.")
    if not os.path.isfile(path):
        raise ValueError(f"{where}: image file {path} (from {field}) does not exist.")
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
        if b[2] <= b[0] or b[3] <= b[1]:
            report.drop(where, i, f"zero-area or inverted box {b.tolist()} "
                        "(ymin, xmin, ymax, xmax); fix or delete it in the annotation")
            keep[i] = False
            continue
        clipped = np.clip(b, 0, limits)
        if not np.array_equal(clipped, b):
            report.clipped_boxes += 1
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                report.drop(where, i, f"box {b.tolist()} lies outside the "
                            f"{width}x{height} image")
                keep[i] = False
                continue
        boxes[i] = clipped
    return boxes[keep], keep
