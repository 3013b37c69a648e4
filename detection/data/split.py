"""``DetectionSplit``: one split of a detection source (``voc:``, ``coco:``,
``tfds:``, ``synthetic``), built on ``resnet_tf.data.sources.SplitBase``.

A module of its own so that every source module (``detection.data.sources``,
``detection.data.tfds``) imports it from below, and none imports another
for it. ``localization.data.sources.LocSplit`` is the same structure.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np

from resnet_tf.data.sources import SplitBase


@dataclasses.dataclass
class DetectionSplit(SplitBase):
    """One split of annotated images (``SplitBase``'s ``name`` and
    keyword-only ``training_images``, and:)

    Attributes:
        annotations: ``detection.data.annotations.ImageAnnotation`` list,
            boxes float32 [n, 4] (ymin, xmin, ymax, xmax) pixels of the image
            as decoded.
        images: uint8 [N, H, W, 3] for in-memory sets (synthetic), in
            annotation order; None when the images are files.
        report: the loader's ``LoadReport`` (what it read and skipped, by
            reason), or None.
        image_bytes: ``() -> tf.data.Dataset`` of the encoded images (tf.string
            scalars) in annotation order, for sources whose images are not
            files (TFDS); None otherwise.
    """

    annotations: list
    images: Optional[np.ndarray] = None
    report: object = None
    image_bytes: Optional[Callable] = None


def first_images(split, n):
    """``split`` cut to its first ``n`` annotations (and, for in-memory or
    TFDS sources, their images), in the loader's order; the report is kept
    as it is. ``n`` >= 0 (int); ``n`` at least the split's size returns it
    unchanged. Used by evaluations limited to their first N images."""
    n = max(int(n), 0)
    if n >= len(split.annotations):
        return split
    make_bytes = split.image_bytes
    return dataclasses.replace(
        split, annotations=split.annotations[:n],
        images=split.images[:n] if split.images is not None else None,
        image_bytes=(lambda: make_bytes().take(n)) if make_bytes is not None else None)
