"""Skip-reason keys of ILSVRC localization data (``localization.data.ilsvrc``).

Every key of the layers below (``detection.data.reasons``: image files,
annotations, boxes) plus the two only ILSVRC's localization task has. See
``detection.data.reasons`` for how the keys are layered.
"""

from detection.data.reasons import *  # noqa: F401,F403
from detection.data.reasons import __all__ as _below

NO_BOXES = "no_boxes"  # localization trains only on images with a box
SECOND_CLASS_BOX = "second_class_box"  # ILSVRC LOC: one class per image

__all__ = [*_below, "NO_BOXES", "SECOND_CLASS_BOX"]
