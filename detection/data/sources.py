"""Detection data specs: ``voc:PATH[:SPLIT]``, ``coco:PATH[:SPLIT]``,
``tfds:NAME[:SPLIT]`` (``voc/2007``, ``voc/2012``, ``coco/2017``) and
``synthetic``.

A source has ``class_names`` and ``split("train" | "eval")`` returning a
``DetectionSplit``: the annotations (internal boxes, original pixels) and,
where the images are not files, either in-memory images (synthetic) or a
function returning a dataset of encoded images in annotation order (TFDS).
For ``voc:PATH`` without a split, training uses ``trainval`` (or every file
when there is no ImageSets folder) and evaluation ``test``; for ``coco:PATH``
the ``train*`` and ``val*`` annotation files.
"""

import dataclasses
import os
from typing import Callable, Optional

import numpy as np

from detection.data.coco import find_coco_json, read_coco
from detection.data.voc import read_voc


@dataclasses.dataclass
class DetectionSplit:
    name: str
    annotations: list
    images: Optional[np.ndarray] = None  # uint8 [N, H, W, 3] for in-memory sets
    report: object = None
    image_bytes: Optional[Callable] = None  # () -> tf.data of encoded images (TFDS)


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


class CocoSource:
    def __init__(self, root, split=None, class_names=None):
        self.root, self.requested = root, split
        try:
            path, images = find_coco_json(root, split, "train")
        except ValueError:  # e.g. only val2017 present, for evaluation
            try:
                path, images = find_coco_json(root, split, "eval")
            except ValueError:
                path = None
            if path is None:
                raise
        _, names, _ = read_coco(path, images, class_names)
        self.class_names = list(names)

    def split(self, which):
        path, images = find_coco_json(self.root, self.requested, which)
        anns, _, report = read_coco(path, images, self.class_names)
        name = os.path.basename(path)[:-len(".json")].replace("instances_", "")
        return DetectionSplit(name, anns, None, report)


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


def _path_and_split(rest):
    if ":" in rest and os.path.exists(rest.rsplit(":", 1)[0]):
        root, split = rest.rsplit(":", 1)
        return root, split or None
    return rest, None


def open_detection_source(spec, seed=0, class_names=None, synthetic_train=64,
                          synthetic_eval=16, synthetic_size=128, data_dir=None,
                          manual_dir=None, download=False):
    """A detection source from a data spec (see the module docstring).

    ``class_names`` (a trained detector's) fixes the class order; data with
    a class outside it is an error naming the file.
    """
    kind, _, rest = spec.partition(":")
    if kind == "voc":
        return VocSource(*_path_and_split(rest), class_names)
    if kind == "coco":
        return CocoSource(*_path_and_split(rest), class_names)
    if kind == "tfds":
        from detection.data.tfds import TfdsDetectionSource

        name, _, split = rest.partition(":")
        if not name:
            raise ValueError("tfds: needs a dataset name, e.g. tfds:voc/2007.")
        return TfdsDetectionSource(name, split or None, data_dir, manual_dir, download,
                                   class_names)
    if kind == "synthetic":
        return SyntheticDetectionSource(synthetic_train, synthetic_eval, synthetic_size, seed)
    raise ValueError(f"Unknown detection data spec {spec!r}; use voc:PATH[:SPLIT], "
                     "coco:PATH[:SPLIT], tfds:NAME[:SPLIT] or synthetic.")
