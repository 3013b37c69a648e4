"""Detection data specs: ``voc:PATH[:SPLIT]`` and ``synthetic``.

A source has ``class_names`` and ``split("train" | "eval")`` returning a
``DetectionSplit`` (annotations, and in-memory images for the synthetic
set). For ``voc:PATH`` without a split, training uses ``trainval`` (or every
file when there is no ImageSets folder) and evaluation ``test``.
"""

import dataclasses
import os
from typing import Optional

import numpy as np

from detection.data.voc import read_voc


@dataclasses.dataclass
class DetectionSplit:
    name: str
    annotations: list
    images: Optional[np.ndarray] = None  # uint8 [N, H, W, 3] for in-memory sets
    report: object = None


class VocSource:
    def __init__(self, root, split=None, class_names=None):
        self.root, self.requested = root, split
        self.has_sets = os.path.isdir(os.path.join(root, "ImageSets", "Main"))
        first = split or ("trainval" if self.has_sets else None)
        if self.has_sets and first and not os.path.exists(
                os.path.join(root, "ImageSets", "Main", f"{first}.txt")):
            first = None
        _, names, _ = read_voc(root, first, class_names)
        self.class_names = list(class_names or names)

    def split(self, which):
        if self.requested:
            name = self.requested
        elif not self.has_sets:
            name = None
        else:
            name = "trainval" if which == "train" else "test"
        anns, _, report = read_voc(self.root, name, self.class_names)
        return DetectionSplit(name or "all", anns, None, report)


class SyntheticDetectionSource:
    def __init__(self, num_train=64, num_eval=16, size=128, seed=0, max_objects=4):
        from detection.data.pipeline import synthetic_annotations

        self._splits = {}
        for which, n, s in (("train", num_train, seed * 2), ("eval", num_eval, seed * 2 + 1)):
            images, anns, names = synthetic_annotations(n, size, s, max_objects)
            self._splits[which] = DetectionSplit(f"synthetic-{which}", anns, images)
        self.class_names = names

    def split(self, which):
        return self._splits["eval" if which != "train" else "train"]


def open_detection_source(spec, seed=0, class_names=None, synthetic_train=64,
                          synthetic_eval=16, synthetic_size=128):
    kind, _, rest = spec.partition(":")
    if kind == "voc":
        root, split = rest, None
        if ":" in rest and os.path.isdir(rest.rsplit(":", 1)[0]):
            root, split = rest.rsplit(":", 1)
        return VocSource(root, split or None, class_names)
    if kind == "synthetic":
        return SyntheticDetectionSource(synthetic_train, synthetic_eval, synthetic_size, seed)
    raise ValueError(f"Unknown detection data spec {spec!r}; use voc:PATH[:SPLIT] or "
                     "synthetic (coco:PATH and tfds:voc/2007 are planned).")
