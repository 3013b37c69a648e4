"""Skip-reason keys of annotations and boxes (the VOC, COCO and TFDS readers,
``detection.data.annotations``, ``detection.data.crops``).

Each layer names the reasons it skips for, beside the ones below it:
``resnet_tf.data.report`` holds the mechanism (``SkipReport``,
``BadItem``, ``format_reasons``) and the image-file keys of the decoder;
this module re-exports those keys and adds the annotation and box keys;
``localization.data.reasons`` adds the ILSVRC ones. A reader imports the
``reasons`` module of its own layer and finds every key it may count there.
A key is a plain string: counts and reports need no registration.
"""

from resnet_tf.data.report import (CORRUPT, EMPTY, NOT_AN_IMAGE, OTHER,  # noqa: F401
                                   TOO_LARGE, TRUNCATED_BMP, TRUNCATED_GIF,
                                   TRUNCATED_JPEG, TRUNCATED_PNG, UNREADABLE_IMAGE,
                                   UNSUPPORTED_BMP)

# --- annotations (the annotation file, row or image entry is skipped) -----------------
MALFORMED = "malformed_annotation"  # not parseable, a field missing or not a number
NOT_UTF8 = "not_utf8"  # annotation text that is not valid UTF-8
UNKNOWN_CLASS = "unknown_class"
OUTSIDE_ROOT = "path_outside_root"  # an image path that escapes the dataset folder
MISSING_IMAGE = "missing_image"
DUPLICATE = "duplicate_image"
# the size an annotation states is neither the image's displayed size nor,
# sides swapped by an EXIF orientation, its stored size (annotations.fit_to_image)
SIZE_MISMATCH = "size_mismatch"

# --- boxes (the image is kept, the box is not) ----------------------------------------
DEGENERATE_BOX = "degenerate_box"  # zero area or inverted (negative width/height)
BOX_OUTSIDE = "box_outside_image"

__all__ = sorted(name for name in list(globals()) if name.isupper())
