"""Detection data specs: ``voc:PATH[:SPLIT]``, ``coco:PATH[:SPLIT]``,
``tfds:NAME[:SPLIT]`` (``voc/2007``, ``voc/2012``, ``coco/2017``) and
``synthetic``.

A source has ``class_names`` and ``split("train" | "eval")`` returning a
``DetectionSplit``: the annotations (internal boxes, pixels of the image as
decoded) and, where the images are not files, either in-memory images
(synthetic) or a function returning a dataset of encoded images in
annotation order (TFDS).

Which files make each split:

- ``voc:PATH`` without a split: training uses ``trainval`` and evaluation
  ``test`` (``ImageSets/Main``); without an ImageSets folder, split folders
  as exported by Roboflow and others (``PATH/train/``, ``PATH/valid/``, the
  names of ``resnet_tf.data.sources``: ``train``/``training``; ``val``,
  ``valid``, ``validation``, ``dev``, ``test``), each a VOC folder; otherwise
  every XML file, for both. ``voc:PATH:NAME`` names an ImageSets list or a
  split folder.
- ``coco:PATH``: the ``train*`` and ``val*`` annotation files of a COCO
  release folder, the split folders' JSON files, or the one JSON file
  (``detection.data.coco.find_coco_json``).

Where evaluation has no split of its own it uses the training images: the
split says so (``training_images``, a name ending "(training images)") and
a warning says its numbers are training-set numbers.
"""

import logging
import os

from detection.data.coco import find_coco_json, read_coco
from detection.data.split import DetectionSplit  # re-exported: the name's old home
from detection.data.tfds import TfdsDetectionSource
from detection.data.voc import read_voc
from resnet_tf.data.sources import (EVAL_DIR_NAMES, TRAIN_DIR_NAMES, find_split_dirs,
                                    warn_training_images)

log = logging.getLogger("resnet_tf.data")


def _warn_training_images(spec, n):
    warn_training_images(spec, n, "no evaluation split of its own")


def _voc_split_folders(root):
    """``(train, evals)`` split folder names of a VOC ``root`` laid out as
    split folders (no ImageSets, no annotation folder or XML files of its
    own), or None."""
    if os.path.isdir(os.path.join(root, "ImageSets", "Main")) or any(
            os.path.isdir(os.path.join(root, d)) for d in ("Annotations", "annotations")) or \
            any(n.endswith(".xml") for n in os.listdir(root)):
        return None
    train, evals, others = find_split_dirs(root)
    if not (train or evals):
        return None
    if others:
        log.warning("%s: ignoring %s: not a split folder name resnet-tf knows (training: "
                    "%s; evaluation: %s).", root, ", ".join(f"{d}/" for d in others),
                    ", ".join(TRAIN_DIR_NAMES), ", ".join(EVAL_DIR_NAMES))
    return train, evals


class VocSource:
    def __init__(self, root, split=None, class_names=None):
        if not os.path.isdir(root):
            raise ValueError(f"{root}: not a folder; voc:PATH needs a VOC dataset folder.")
        self.root, self.requested = root, split
        self.spec = f"voc:{root}" + (f":{split}" if split else "")
        self.has_sets = os.path.isdir(os.path.join(root, "ImageSets", "Main"))
        self.folders = None if self.has_sets else _voc_split_folders(root)
        if self.folders:
            train, evals = self.folders
            first = split or train or evals[0]
            _, names, _ = read_voc(os.path.join(root, first), None, class_names)
        else:
            first = split or ("trainval" if self.has_sets else None)
            if self.has_sets and first and not os.path.exists(
                    os.path.join(root, "ImageSets", "Main", f"{first}.txt")):
                first = None
            _, names, _ = read_voc(root, first, class_names)
        self.class_names = list(class_names or names)

    def split(self, which):
        if self.folders:
            train, evals = self.folders
            name = self.requested or (train if which == "train" or not evals else evals[0])
            if name is None:
                raise ValueError(f"{self.root}: no training split folder (only "
                                 f"{', '.join(evals)}); name one: voc:PATH:FOLDER.")
            anns, _, report = read_voc(os.path.join(self.root, name), None, self.class_names)
            same = which != "train" and (bool(self.requested) or not evals)
            if same and not self.requested:
                _warn_training_images(self.spec, len(anns))
            return DetectionSplit(name + (" (training images)" if same and not self.requested
                                          else ""), anns, None, report, training_images=same)
        if self.requested:
            name = self.requested
        elif not self.has_sets:
            name = None
        else:
            name = "trainval" if which == "train" else "test"
        anns, _, report = read_voc(self.root, name, self.class_names)
        training_images = which != "train" and (name is None or bool(self.requested))
        if training_images and name is None:
            _warn_training_images(self.spec, len(anns))
        return DetectionSplit(f"{name or 'all'}" + (" (training images)" if name is None and
                                                    which != "train" else ""),
                              anns, None, report, training_images=training_images)


class CocoSource:
    def __init__(self, root, split=None, class_names=None):
        self.root, self.requested = root, split
        self.spec = f"coco:{root}" + (f":{split}" if split else "")
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
        self._train_json = path

    def split(self, which):
        path, images = find_coco_json(self.root, self.requested, which)
        anns, _, report = read_coco(path, images, self.class_names)
        folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
        if folder.lower() in TRAIN_DIR_NAMES + EVAL_DIR_NAMES:
            name = folder  # a split folder's _annotations.coco.json
        else:
            name = os.path.basename(path)[:-len(".json")].replace("instances_", "")
        same = which != "train" and os.path.abspath(path) == os.path.abspath(self._train_json)
        if same and not self.requested:
            _warn_training_images(self.spec, len(anns))
            name += " (training images)"
        return DetectionSplit(name, anns, None, report, training_images=same)


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
        name, _, split = rest.partition(":")
        if not name:
            raise ValueError("tfds: needs a dataset name, e.g. tfds:voc/2007.")
        return TfdsDetectionSource(name, split or None, data_dir, manual_dir, download,
                                   class_names)
    if kind == "synthetic":
        return SyntheticDetectionSource(synthetic_train, synthetic_eval, synthetic_size, seed)
    raise ValueError(f"Unknown detection data spec {spec!r}; use voc:PATH[:SPLIT], "
                     "coco:PATH[:SPLIT], tfds:NAME[:SPLIT] or synthetic.")
