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
