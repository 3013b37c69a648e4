"""Where classification images come from: TFDS, folders, or the synthetic set.

A data spec string picks the source:

- ``tfds:NAME[:SPLIT]``: a prepared TensorFlow Datasets dataset
  (``tfds:imagenet2012``, ``tfds:cifar10:test``). Nothing is downloaded
  unless ``download=True``.
- ``folder:PATH``: one sub-folder per class. If PATH holds a training
  folder (``train/`` or ``training/``), that and an evaluation folder are
  the splits: the first of ``val/``, ``valid/`` (Roboflow's name),
  ``validation/``, ``dev/``, ``test/`` present (names matched without regard
  to case). Other sub-folders beside them are ignored with a warning naming
  them, as are further evaluation folders (evaluate on one with
  ``folder:PATH/test``). A PATH with evaluation folders only (``val/``,
  ``test/``) can be evaluated on, not trained on. Without any split folder
  every image is in one pool. ``val_fraction`` holds out a stratified,
  seeded fraction of the training images for validation instead (the
  paper's 45k/5k CIFAR split: ``val_fraction=0.1``), even when PATH has a
  validation or test folder (evaluate on that one afterwards).

  Without an evaluation folder or ``val_fraction``, the evaluation split is
  the training images: it is named so (``"all"``, or ``"train (no
  validation folder)"``), has ``Split.training_images`` set (training then
  reports no validation numbers) and logs a warning saying its numbers are
  training-set numbers.
- ``synthetic``: the embedded shapes set (``resnet_tf.data.synthetic``).

``open_source(spec)`` returns a ``Source`` with ``class_names`` and
``split("train" | "eval")``. A ``Split`` makes a ``tf.data.Dataset`` of
dicts with ``"label"`` (int32, an index into ``class_names``), ``"path"``
(a string naming the example for messages) and either ``"image_bytes"``
(encoded file contents, decoded later by ``decode.decode_and_filter``) or
``"image"`` (uint8 [H, W, 3], already decoded).
"""

import dataclasses
import logging
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from resnet_tf.data import synthetic
from resnet_tf.data.decode import graph_fn

log = logging.getLogger("resnet_tf.data")

# Split folder names in common use (lower case; matched without regard to
# case). Evaluation folders in order of preference: a validation folder
# before a test folder, which is left for the final evaluation.
TRAIN_DIR_NAMES = ("train", "training")
EVAL_DIR_NAMES = ("val", "valid", "validation", "dev", "test")


@dataclasses.dataclass
class SplitBase:
    """What a split of every source has, whatever it holds: the base of
    ``Split`` (classification, here), ``detection.data.split.DetectionSplit``
    and ``localization.data.sources.LocSplit``.

    Attributes:
        name: e.g. "train", "validation", "train[90%:]", "test".
        training_images: True for an evaluation split that is the source's
            training images (no validation folder or split of its own): its
            numbers are training-set numbers, not validation ones (the source
            says so with ``warn_training_images``). Keyword-only.
    """

    name: str
    training_images: bool = dataclasses.field(default=False, kw_only=True)


def warn_training_images(spec, count, why):
    """Log that evaluation on ``spec`` uses its ``count`` training images
    (``why``: what the source lacks, e.g. "no evaluation split of its own"),
    so its numbers are training-set numbers: what a source does when it
    returns a split with ``training_images=True`` that the user did not ask
    for by name."""
    log.warning("%s: %s: the evaluation split is the %d training images, so its "
                "numbers are training-set numbers, not validation.", spec, why, count)


@dataclasses.dataclass
class Split(SplitBase):
    """One split of a classification source (``SplitBase``'s ``name`` and
    ``training_images``, and:)

    Attributes:
        num_examples: number of examples (files, for folders).
        make: builds the element dataset (see module docstring), unshuffled
            unless ``shuffle_seed`` is given.
        encoded: True if elements carry "image_bytes", False for "image".
        approx_decoded_bytes: estimate of the decoded size, for caching.
    """

    num_examples: int
    make: Callable[..., tf.data.Dataset]
    encoded: bool
    approx_decoded_bytes: Optional[int] = None


class Source:
    spec: str
    class_names: list

    def split(self, which):
        raise NotImplementedError


def open_source(spec, *, val_fraction=None, seed=0, data_dir=None, manual_dir=None,
                download=False, synthetic_size=32, synthetic_train=2000,
                synthetic_eval=500):
    """Open a data spec (see module docstring) as a ``Source``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data spec must be a non-empty string, got {spec!r}.")
    kind, _, rest = spec.partition(":")
    if kind == "folder":
        return FolderSource(rest, val_fraction=val_fraction, seed=seed)
    if kind == "tfds":
        name, _, split = rest.partition(":")
        return TfdsSource(name, split=split or None, data_dir=data_dir,
                          manual_dir=manual_dir, download=download,
                          val_fraction=val_fraction)
    if kind == "synthetic":
        return SyntheticSource(size=synthetic_size, num_train=synthetic_train,
                               num_eval=synthetic_eval, seed=seed)
    raise ValueError(
        f"Unknown data spec {spec!r}; use tfds:NAME[:SPLIT], folder:PATH or "
        "synthetic."
    )


# --- folders -----------------------------------------------------------------


def _list_images(class_dir):
    files = []
    for root, dirs, names in os.walk(class_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
    return files


def _class_dirs(root):
    if not os.path.isdir(root):
        raise ValueError(f"{root}: not a folder. folder:PATH needs a folder with "
                         "one sub-folder of images per class.")
    names = sorted(d for d in os.listdir(root)
                   if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not names:
        raise ValueError(f"{root}: no class sub-folders found. Put the images of "
                         "each class in their own sub-folder, e.g. "
                         f"{root}/cat/1.jpg, {root}/dog/2.jpg.")
    return names


def find_split_dirs(root, top=None):
    """``(train, evals, others)``: the sub-folder names of ``root`` that are a
    training folder (``TRAIN_DIR_NAMES``; None if none), the evaluation
    folders present in order of preference (``EVAL_DIR_NAMES``), and the
    rest; names are matched without regard to case."""
    top = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                 and not d.startswith(".")) if top is None else top
    by_name = {}
    for d in top:
        by_name.setdefault(d.lower(), d)
    train = next((by_name[n] for n in TRAIN_DIR_NAMES if n in by_name), None)
    evals = [by_name[n] for n in EVAL_DIR_NAMES if n in by_name]
    others = [d for d in top if d != train and d not in evals]
    return train, evals, others


class FolderSource(Source):
    """Images in ``PATH/<class>/...`` or ``PATH/{train,val}/<class>/...``
    (the split folder names: module docstring)."""

    def __init__(self, root, val_fraction=None, seed=0):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.spec = f"folder:{root}"
        self.seed = seed
        self.val_fraction = val_fraction
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
        top = _class_dirs(self.root)
        train, evals, others = find_split_dirs(self.root, top)
        self.eval_dir = evals[0] if evals and (train or not others) else None
        if train is not None:
            self.train_dir = os.path.join(self.root, train)
            self.class_names = _class_dirs(self.train_dir)
            if others:
                log.warning("%s: ignoring %s: not a split folder name resnet-tf knows "
                            "(training: %s; evaluation: %s). Rename it to one of these, or "
                            "move it out of PATH.", self.root,
                            ", ".join(f"{d}/" for d in others), ", ".join(TRAIN_DIR_NAMES),
                            ", ".join(EVAL_DIR_NAMES))
        elif self.eval_dir:
            # Only evaluation folders (e.g. val/ and test/): data to evaluate on.
            self.train_dir = None
            self.class_names = _class_dirs(os.path.join(self.root, self.eval_dir))
        else:
            if evals:
                log.warning("%s: %s look%s like split folders, but there is no train/ "
                            "folder: they are read as classes, beside %s.", self.root,
                            ", ".join(f"{d}/" for d in evals),
                            "s" if len(evals) == 1 else "", ", ".join(others))
            self.train_dir = self.root
            self.class_names = top
        if self.eval_dir and evals[1:]:
            log.warning("%s: evaluating on %s/; %s not used (evaluate on it with "
                        "folder:%s).", self.root, self.eval_dir,
                        ", ".join(f"{d}/" for d in evals[1:]),
                        os.path.join(self.root, evals[1]))
        self._files = {}

    def _files_of(self, folder, check_known):
        if folder in self._files:
            return self._files[folder]
        paths, labels = [], []
        index = {name: i for i, name in enumerate(self.class_names)}
        for name in _class_dirs(folder):
            if name not in index:
                if check_known:
                    raise ValueError(
                        f"{os.path.join(folder, name)}: class {name!r} is not among "
                        f"the training classes {self.class_names}.")
                continue
            files = _list_images(os.path.join(folder, name))
            paths += files
            labels += [index[name]] * len(files)
        if not paths:
            raise ValueError(f"{folder}: no files found in its {len(_class_dirs(folder))} "
                             "class sub-folders (0 images); put the images of each class "
                             "in its folder.")
        self._files[folder] = (np.array(paths), np.array(labels, np.int32))
        return self._files[folder]

    def _holdout_mask(self, labels):
        rng = np.random.default_rng(self.seed)
        mask = np.zeros(len(labels), bool)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            n_val = int(round(len(idx) * self.val_fraction))
            mask[rng.permutation(idx)[:n_val]] = True
        n_val = int(mask.sum())
        if n_val == 0 or n_val == len(labels):
            raise ValueError(
                f"{self.train_dir}: val_fraction {self.val_fraction} of {len(labels)} images "
                f"({len(np.unique(labels))} classes) holds out {n_val} and leaves "
                f"{len(labels) - n_val} for training (rounded per class); both splits "
                "need an image. Choose another val_fraction or add images.")
        return mask

    def split(self, which):
        which = _check_which(which)
        training_images = False
        if self.train_dir is None and (which == "train" or self.val_fraction):
            raise ValueError(
                f"{self.root}: no training folder ({' or '.join(TRAIN_DIR_NAMES)}/), only "
                f"{self.eval_dir}/: it can be evaluated on, not trained on (nor split by "
                "val_fraction). Add a train/ folder, or point folder: at a folder of "
                "class folders.")
        if self.eval_dir and which == "eval" and not self.val_fraction:
            paths, labels = self._files_of(os.path.join(self.root, self.eval_dir), True)
            name = self.eval_dir
        else:
            paths, labels = self._files_of(self.train_dir, False)
            train = os.path.basename(self.train_dir)
            name = train if self.train_dir != self.root else "all"
            if which == "eval" and not self.val_fraction:
                training_images = True
                if self.train_dir != self.root:
                    name = f"{train} (no validation folder)"
                warn_training_images(
                    self.spec, len(paths),
                    f"no evaluation folder ({'/'.join(EVAL_DIR_NAMES)}) and no val_fraction")
            if self.val_fraction:
                mask = self._holdout_mask(labels)
                keep = mask if which == "eval" else ~mask
                paths, labels = paths[keep], labels[keep]
                name = f"{'held-out' if which == 'eval' else 'train'} " \
                       f"({self.val_fraction:.0%} held out, seed {self.seed})"
        size = int(sum(os.path.getsize(p) for p in paths[:2000]) *
                   max(1, len(paths) / 2000))
        return Split(
            name=name,
            num_examples=len(paths),
            make=lambda shuffle_seed=None: _file_dataset(paths, labels, shuffle_seed),
            encoded=True,
            # JPEGs expand roughly 10x when decoded.
            approx_decoded_bytes=10 * size,
            training_images=training_images,
        )


def _file_dataset(paths, labels, shuffle_seed=None):
    # File names as the file system's bytes: a name that is not UTF-8 (from
    # another system's encoding) is a fine file, not a reason to fail.
    paths = tf.constant([os.fsencode(p) for p in paths], tf.string, shape=[len(paths)])
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle_seed is not None:
        # Shuffling file names is cheap: the whole list, every epoch.
        ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.map(
        graph_fn(lambda p, y: {"image_bytes": tf.io.read_file(p), "label": y, "path": p}),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _check_which(which):
    aliases = {"train": "train", "training": "train", "eval": "eval",
               **{name: "eval" for name in EVAL_DIR_NAMES}}
    if which not in aliases:
        raise ValueError(f"split must be 'train' or 'eval', got {which!r}.")
    return aliases[which]


# --- TFDS ----------------------------------------------------------------------


def open_tfds_builder(name, data_dir=None, manual_dir=None, download=False):
    """``(builder, not_prepared_hint)`` for a TFDS dataset name.

    Downloading is off unless ``download``; the hint says where TFDS looked
    and how to prepare the dataset (shared by every ``tfds:`` source).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises DatasetNotFoundError and others
        raise ValueError(f"tfds:{name}: unknown TFDS dataset ({e}).") from e
    if download:
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=config)
    hint = (f"tfds:{name} is not prepared in {builder.data_dir}. "
            "Downloading is off: prepare it with "
            f"`tfds build {name} --data_dir DIR` and pass --data-dir DIR, or "
            "allow downloads with --download.")
    if manual_dir or name.startswith("imagenet"):
        hint += (" ImageNet is prepared from archives you obtain yourself: put "
                 "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in a "
                 "manual dir and pass --manual-dir DIR --download (or run "
                 f"`tfds build {name} --manual_dir DIR --data_dir DIR`).")
    return builder, hint


def tfds_as_dataset(builder, split, not_prepared_hint, image_key, shuffle_seed=None):
    """The split with images as encoded bytes (``SkipDecoding``) and a
    ``tfds_id``; a clear error when the dataset is not prepared."""
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(add_tfds_id=True, shuffle_seed=shuffle_seed)
    try:
        return builder.as_dataset(
            split=split, shuffle_files=shuffle_seed is not None,
            decoders={image_key: tfds.decode.SkipDecoding()},
            read_config=read_config)
    except (AssertionError, FileNotFoundError) as e:
        # TFDS asserts that the data directory exists ("could not find data").
        raise ValueError(f"{not_prepared_hint} (TFDS: {e})") from e


class TfdsSource(Source):
    """A TensorFlow Datasets image-classification dataset.

    Images are read as encoded bytes (``tfds.decode.SkipDecoding``) so that
    every source goes through the same tolerant decoder.
    """

    def __init__(self, name, split=None, data_dir=None, manual_dir=None,
                 download=False, val_fraction=None):
        if not name:
            raise ValueError("tfds: needs a dataset name, e.g. tfds:cifar10.")
        self.spec = f"tfds:{name}" + (f":{split}" if split else "")
        self.name = name
        self.requested_split = split
        self.val_fraction = val_fraction
        self.builder, self._not_prepared_hint = open_tfds_builder(
            name, data_dir, manual_dir, download)
        self.download = download
        info = self.builder.info
        keys = info.supervised_keys or ("image", "label")
        self.image_key, self.label_key = keys[0], keys[1]
        feature = info.features[self.label_key]
        self.class_names = list(getattr(feature, "names", None) or
                                [str(i) for i in range(feature.num_classes)])

    def _as_dataset(self, split, shuffle_seed=None):
        return tfds_as_dataset(self.builder, split, self._not_prepared_hint,
                               self.image_key, shuffle_seed)

    def _split_name(self, which):
        splits = list(self.builder.info.splits)
        if self.requested_split:
            return self.requested_split
        if which == "train":
            if self.val_fraction:
                return f"train[:{100 - round(self.val_fraction * 100)}%]"
            return "train"
        if self.val_fraction:
            return f"train[{100 - round(self.val_fraction * 100)}%:]"
        for name in ("validation", "test"):
            if name in splits:
                return name
        if not splits:  # split sizes unknown: TFDS will say if it is absent
            return "validation"
        raise ValueError(f"tfds:{self.name} has no validation or test split "
                         f"(splits: {splits}); pass val_fraction to hold out part "
                         "of train, or name a split: tfds:NAME:SPLIT.")

    def split(self, which):
        split = self._split_name(_check_which(which))
        probe = self._as_dataset(split)  # fails early, clearly, if not prepared
        splits = self.builder.info.splits
        if split in splits:
            num = splits[split].num_examples
            size = splits[split].num_bytes or 0
        else:  # sliced splits ("train[:90%]") or an info without split sizes
            num = int(probe.cardinality())
            if num < 0:
                num = int(probe.reduce(0, lambda n, _: n + 1))
            size = 0
        image_key, label_key, name = self.image_key, self.label_key, self.name

        def make(shuffle_seed=None):
            ds = self._as_dataset(split, shuffle_seed)
            if shuffle_seed is not None:
                ds = ds.shuffle(min(num, 10_000), seed=shuffle_seed,
                                reshuffle_each_iteration=True)
            return ds.map(graph_fn(lambda ex: {
                "image_bytes": ex[image_key],
                "label": tf.cast(ex[label_key], tf.int32),
                "path": tf.strings.join([f"tfds:{name}:{split}:", ex["tfds_id"]]),
            }), num_parallel_calls=tf.data.AUTOTUNE)

        # tfds:NAME:SPLIT trains and evaluates on the one split it names.
        return Split(name=split, num_examples=num, make=make, encoded=True,
                     approx_decoded_bytes=10 * size if size else None,
                     training_images=bool(self.requested_split) and
                     _check_which(which) == "eval")


# --- synthetic -------------------------------------------------------------------


class SyntheticSource(Source):
    """The embedded shapes set: ``synthetic.SHAPES`` are the classes."""

    def __init__(self, size=32, num_train=2000, num_eval=500, seed=0):
        self.spec = "synthetic"
        self.size, self.seed = size, seed
        self.counts = {"train": num_train, "eval": num_eval}
        self.class_names = list(synthetic.SHAPES)
        self._cache = {}

    def arrays(self, which):
        which = _check_which(which)
        if which not in self._cache:
            # Different seeds for train and eval: disjoint images.
            seed = self.seed * 2 + (which == "eval")
            images, labels, _ = synthetic.make_classification(
                self.counts[which], size=self.size, seed=seed)
            self._cache[which] = (images, labels)
        return self._cache[which]

    def split(self, which):
        which = _check_which(which)
        images, labels = self.arrays(which)

        def make(shuffle_seed=None):
            paths = np.array([f"synthetic:{which}:{i}" for i in range(len(labels))])
            ds = tf.data.Dataset.from_tensor_slices(
                {"image": images, "label": labels, "path": paths})
            if shuffle_seed is not None:
                ds = ds.shuffle(len(labels), seed=shuffle_seed,
                                reshuffle_each_iteration=True)
            return ds

        return Split(name=f"synthetic-{which}", num_examples=len(labels), make=make,
                     encoded=False, approx_decoded_bytes=images.nbytes)
