"""Localization data specs: ``ilsvrc-loc:PATH[:SPLIT]`` and ``synthetic``.

``ilsvrc-loc:PATH`` reads, from PATH:
- the synset list ``LOC_synset_mapping.txt`` (class order; without it, the
  model's class names or the sorted wnids found);
- annotations: Kaggle CSVs ``LOC_train_solution.csv`` (split "train") and
  ``LOC_val_solution.csv`` (split "val"), or, when PATH has a single
  ``LOC_*solution*.csv`` (such as ``LOC_val_solution_subset.csv``), that one
  for every split; without CSVs, the ILSVRC XML files under
  ``[ILSVRC/]Annotations/CLS-LOC/<split>/``;
- images from ``[ILSVRC/]Data/CLS-LOC/<split>/`` (train: ``<wnid>/ID.JPEG``),
  ``<split>/``, ``images/`` or PATH itself.

Training uses only images with boxes: the split's report says how many rows
and images were used and skipped (and why, in warnings).

``val_fraction`` holds out that fraction of one split's images for
evaluation (``split("eval")``), the rest for training: for a folder whose
one CSV serves every split, such as a 100-image subset of the validation
set. The held-out images are those with the lowest CRC-32 of their ImageId:
a fixed choice, the same in training and evaluation whatever the seed or the
row order.
"""

import dataclasses
import glob
import os
import zlib

import numpy as np

from detection.data.annotations import ImageAnnotation
from detection.data.split import DetectionSplit
from localization.data import ilsvrc
from localization.data.synthetic import make_localization
from resnet_tf.data.synthetic import SHAPES

SPLIT_NAMES = ("train", "val")


@dataclasses.dataclass
class LocSplit(DetectionSplit):
    """One split of a localization source: a ``DetectionSplit`` whose
    annotations' ``classes`` hold the image's one class index for every box,
    and whose ``report`` is an ``ilsvrc.LocReport`` (None when nothing was
    read)."""


class IlsvrcLocSource:
    """Args:
        root: the dataset folder (see the module docstring).
        split: "train", "val" or None (train: "train", eval: "val").
        class_names: wnids in class order when there is no synset list.
        val_fraction: hold out this fraction of the images of one split
            (``split``, or "train") for evaluation (see the module docstring).
    """

    def __init__(self, root, split=None, class_names=None, val_fraction=None):
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
        self.val_fraction = val_fraction
        if not os.path.isdir(root):
            raise ValueError(f"{root}: not a folder; ilsvrc-loc:PATH needs the folder "
                             "with LOC_synset_mapping.txt and the LOC_*_solution.csv "
                             "files (or Annotations/CLS-LOC/).")
        if split is not None and split not in SPLIT_NAMES:
            raise ValueError(f"Unknown ILSVRC split {split!r}; use train or val.")
        self.root, self.requested = root, split
        self.spec = f"ilsvrc-loc:{root}" + (f":{split}" if split else "")
        synsets = os.path.join(root, ilsvrc.SYNSETS)
        self.display_names = None
        if os.path.isfile(synsets):
            self.class_names, self.display_names = ilsvrc.read_synsets(synsets)
        elif class_names is not None:
            self.class_names = list(class_names)
        else:
            self.class_names = None  # the sorted wnids found, after reading
        self._cache = {}

    def _csv(self, split):
        exact = os.path.join(self.root, f"LOC_{split}_solution.csv")
        if os.path.isfile(exact):
            return exact
        found = sorted(glob.glob(os.path.join(self.root, "LOC_*solution*.csv")))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(f"{self.root}: several annotation CSVs {found} and no "
                             f"LOC_{split}_solution.csv; name the split "
                             "(ilsvrc-loc:PATH:train or :val).")
        return None

    def _xml_dir(self, split):
        for base in (os.path.join(self.root, "ILSVRC"), self.root):
            d = os.path.join(base, "Annotations", "CLS-LOC", split)
            if os.path.isdir(d):
                return d
        return None

    def _image_roots(self, split):
        return [os.path.join(self.root, "ILSVRC", "Data", "CLS-LOC", split),
                os.path.join(self.root, "Data", "CLS-LOC", split),
                os.path.join(self.root, split), os.path.join(self.root, "images"),
                self.root]

    def split(self, which):
        if self.val_fraction:
            return self._held_out(which)
        return self._read(self.requested or ("train" if which == "train" else "val"))

    def _read(self, name):
        if name in self._cache:
            return self._cache[name]
        report = ilsvrc.LocReport()
        csv_path, sizes = self._csv(name), None
        if csv_path:
            wnids = self.class_names or self._wnids_of_csv(csv_path)
            rows, _ = ilsvrc.read_loc_csv(csv_path, wnids, report)
            what = csv_path
        else:
            xml_dir = self._xml_dir(name)
            if xml_dir is None:
                raise ValueError(f"{self.root}: no LOC_{name}_solution.csv (or single "
                                 f"LOC_*solution*.csv) and no Annotations/CLS-LOC/{name}/ "
                                 "folder of XML files.")
            files = sorted(glob.glob(os.path.join(xml_dir, "**", "*.xml"), recursive=True))
            if not files:
                raise ValueError(f"{xml_dir}: no .xml annotation files found.")
            wnids = self.class_names or self._wnids_of_xml(files)
            rows, sizes = [], {}
            for f in files:
                row, size = ilsvrc.read_loc_xml(f, wnids, report)
                if row is not None:
                    rows.append(row)
                    if size:
                        sizes[row.image_id] = size
            what = xml_dir
        self.class_names = list(wnids)
        roots = self._image_roots(name)
        anns = ilsvrc.attach_images(rows, roots, report, sizes)
        if not anns:
            raise ValueError(f"{what}: no usable image ({report.summary()}); check that "
                             f"the images are under one of {roots}.")
        report.unannotated_images = ilsvrc.count_unannotated(
            roots[:3], {r.image_id for r in rows})
        split = LocSplit(name, anns, None, report)
        self._cache[name] = split
        return split

    def _held_out(self, which):
        """The train or eval part of one split under ``val_fraction``."""
        base = self.requested or "train"
        key = (base, which == "train")
        if key in self._cache:
            return self._cache[key]
        whole, fraction = self._read(base), self.val_fraction
        n = len(whole.annotations)
        n_out = int(round(n * fraction))
        if not 0 < n_out < n:
            raise ValueError(f"{self.root}: val_fraction {fraction} of {n} images holds "
                             f"out {n_out}; both parts need at least one image.")
        ids = [os.path.splitext(os.path.basename(a.path))[0] for a in whole.annotations]
        order = sorted(range(n), key=lambda i: (zlib.crc32(ids[i].encode()), ids[i]))
        held = set(order[:n_out])
        for train in (True, False):
            anns = [a for i, a in enumerate(whole.annotations) if (i in held) != train]
            name = (f"{base} less the held-out {fraction:.0%}" if train
                    else f"held-out {fraction:.0%} of {base}")
            # The report covers the whole file read, both parts, but for the
            # unreadable images (``missed``), held out by the same rule.
            self._cache[(base, train)] = LocSplit(f"{name}: {len(anns)} of {n} images",
                                                  anns, None, ilsvrc.held_out_missed(
                                                      whole.report, held, ids, order,
                                                      n_out, train))
        return self._cache[key]

    @staticmethod
    def _wnids_of_csv(path):
        import csv

        found = set()
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            for fields in list(csv.reader(f))[1:]:
                if len(fields) == 2:
                    found |= set(fields[1].split()[::5])
        return sorted(found)

    @staticmethod
    def _wnids_of_xml(files):
        import xml.etree.ElementTree as ET

        found = set()
        for f in files:
            try:
                found |= {(o.findtext("name") or "").strip()
                          for o in ET.parse(f).getroot().findall("object")}
            except (ET.ParseError, OSError):
                pass  # reported when the file is read for real
        return sorted(found - {""})


class SyntheticLocSource:
    """The embedded synthetic set (``localization.data.synthetic``)."""

    def __init__(self, num_train=600, num_eval=200, size=32, seed=0, max_objects=2):
        self.spec = "synthetic"
        self.class_names = list(SHAPES)
        self.display_names = None
        self._splits = {}
        for which, n, s in (("train", num_train, seed * 2 + 100),
                            ("eval", num_eval, seed * 2 + 101)):
            images, labels, boxes = make_localization(n, size, s, max_objects)
            anns = [ImageAnnotation(path=f"synthetic-{which}:{i}", height=size, width=size,
                                    boxes=b, classes=np.full(len(b), y, np.int32),
                                    difficult=np.zeros(len(b), bool))
                    for i, (y, b) in enumerate(zip(labels, boxes))]
            report = ilsvrc.LocReport(rows=n, images=n, boxes=sum(len(b) for b in boxes))
            for y, b in zip(labels, boxes):
                report.count(SHAPES[y], len(b))
            self._splits[which] = LocSplit(f"synthetic-{which}", anns, images, report)

    def split(self, which):
        return self._splits["train" if which == "train" else "eval"]


def open_localization_source(spec, seed=0, class_names=None, synthetic_train=600,
                             synthetic_eval=200, synthetic_size=32, val_fraction=None):
    """Open ``ilsvrc-loc:PATH[:SPLIT]`` or ``synthetic``; ``val_fraction``
    (ILSVRC only) holds out images for evaluation (module docstring)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data spec must be a non-empty string, got {spec!r}.")
    kind, _, rest = spec.partition(":")
    if kind == "ilsvrc-loc":
        root, split = rest, None
        head, _, tail = rest.rpartition(":")
        if head and tail in SPLIT_NAMES:
            root, split = head, tail
        return IlsvrcLocSource(root, split, class_names, val_fraction)
    if kind == "synthetic":
        if val_fraction is not None:
            raise ValueError("val_fraction holds out ILSVRC images; the synthetic set "
                             "has its own evaluation split (synthetic_eval).")
        return SyntheticLocSource(synthetic_train, synthetic_eval, synthetic_size, seed)
    raise ValueError(f"Unknown localization data spec {spec!r}; use ilsvrc-loc:PATH[:SPLIT] "
                     "or synthetic.")
