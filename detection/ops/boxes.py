"""Box utilities in the detector's one internal format.

Internal format: float32 ``[..., 4]`` as ``(ymin, xmin, ymax, xmax)`` in
absolute pixels of the (resized) image, continuous coordinates (pixel k spans
[k, k + 1)). Padded rows (fixed-size tensors after the data pipeline) are
all -1. Other formats are converted only at the dataset and export
boundaries, with ``to_internal`` / ``from_internal``.
"""

from keras import ops
from keras.utils import bounding_boxes

PAD = -1.0  # the value of every coordinate of a padded box row

# Our names -> keras.utils.bounding_boxes' format names.
FORMATS = {"yxyx": "yxyx", "xyxy": "xyxy", "xywh": "xywh",
           "rel_yxyx": "rel_yxyx", "rel_xyxy": "rel_xyxy"}


def to_internal(boxes, source, height=None, width=None):
    """Convert ``boxes`` [..., 4] from ``source`` to (ymin, xmin, ymax, xmax)
    pixels. Relative formats need ``height`` and ``width``."""
    if source not in FORMATS:
        raise ValueError(f"Unknown box format {source!r}; use one of {sorted(FORMATS)}.")
    if source == "yxyx":
        return ops.cast(boxes, "float32")
    return bounding_boxes.convert_format(boxes, FORMATS[source], "yxyx",
                                         height=height, width=width)


def from_internal(boxes, target, height=None, width=None):
    """Convert internal boxes to ``target`` (e.g. "rel_yxyx" for export)."""
    if target not in FORMATS:
        raise ValueError(f"Unknown box format {target!r}; use one of {sorted(FORMATS)}.")
    if target == "yxyx":
        return ops.cast(boxes, "float32")
    return bounding_boxes.convert_format(boxes, "yxyx", FORMATS[target],
                                         height=height, width=width)


def area(boxes):
    """float32 [...]: area of [..., 4] boxes (0 for inverted ones)."""
    h = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    w = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return h * w


def is_valid(boxes):
    """bool [...]: rows that are real boxes (not padding, positive area)."""
    return ops.logical_and(ops.any(ops.not_equal(boxes, PAD), axis=-1),
                           area(boxes) > 0)


def clip(boxes, height, width):
    """Clip [..., 4] boxes to the image [0, height] x [0, width]."""
    limits = ops.stack([height, width, height, width])
    return ops.clip(boxes, 0.0, ops.cast(limits, boxes.dtype))


def pairwise_iou(boxes1, boxes2):
    """IoU of every pair: [..., N, 4] x [..., M, 4] -> [..., N, M].

    ``keras.utils.bounding_boxes.compute_iou`` (Keras core) on internal boxes.
    """
    return bounding_boxes.compute_iou(boxes1, boxes2, "yxyx")
