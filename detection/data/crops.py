"""Object crops of a detection (or localization) source, written as a
class-folder classification set that ``folder:OUT`` reads.

    OUT/<split>/<class>/<image>_<k>.jpg   box k of <image>'s kept boxes
    OUT/crops.json                         what was written and skipped (the marker)

Why: fine-tuning a detector or localizer needs a classifier's weights
(``init_from``). Where no ImageNet classifier is at hand (nothing is
downloaded), a small classifier trained on the dataset's own objects is a
stand-in from the same domain (``resnet_tf.train.train_classifier`` on
``folder:OUT``).

Each box is cut out at its pixel bounds (floor of the top-left, ceiling of
the bottom-right, inside the image) and, with ``size``, resized to
``size x size`` whatever its aspect ratio: R-CNN's "warped region"
(Girshick et al., 2014). Every class of the source gets a folder in every
split written, with or without crops, so a classifier trained on the folder
knows all the source's classes (a localizer needs that: see
``resnet_tf.data.labels.label_map_for``); ``folder:`` orders classes by name.

Nothing is lost silently: boxes the annotation reader dropped (zero-area,
inverted, outside the image: BCCD has two) are counted in that reader's
report, and boxes this writer can't crop (an unreadable image, a box with
no whole pixel inside the decoded image) in ``CropResult.skips``, a
``resnet_tf.data.report.SkipReport`` with a warning per box;
``CropResult.skipped_by_reason`` adds the two up. Boxes over
``max_per_class`` are not lost but not selected (``not_selected``).
"""

import dataclasses
import math
import os
import re

import numpy as np

from detection.data import reasons
from resnet_tf.data.report import SkipReport, skip_summary
from resnet_tf.folders import claim_folder, write_marker

MARKER = "crops.json"  # written first: the folders this function may replace
WRITTEN_BY = "detection.data.crops.write_object_crops"
DEFAULT_SPLITS = {"train": "train", "val": "eval"}  # output folder -> source split
SOURCE_SPLITS = ("train", "eval")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass
class CropResult:
    """What ``write_object_crops`` wrote.

    Attributes:
        out_dir: the folder (``folder:OUT_DIR`` reads it).
        class_names: the source's classes (one folder each, per split).
        counts: ``{split folder: {class: crops written}}``.
        boxes: ``{split folder: {class: boxes the reader kept}}``.
        not_selected: ``{split folder: {class: boxes over max_per_class}}``.
        skips: the boxes this writer could not crop, by reason.
        annotation_reports: ``{split folder: the reader's report}`` (its
            dropped boxes and skipped annotation files), or None per split
            for sources without one.
    """

    out_dir: str
    class_names: list
    counts: dict
    boxes: dict
    not_selected: dict
    skips: SkipReport = dataclasses.field(repr=False)
    annotation_reports: dict = dataclasses.field(repr=False)

    @property
    def total(self):
        """Crops written, all splits and classes."""
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def skipped_by_reason(self):
        """``{reason: boxes}``: dropped by the reader plus not cropped here."""
        out = dict(self.skips.by_reason)
        for r in self.annotation_reports.values():
            for reason, n in (r.by_reason if r is not None else {}).items():
                out[reason] = out.get(reason, 0) + n
        return out

    def summary(self):
        """One line per split, then the skips by reason."""
        lines = []
        for split, counts in self.counts.items():
            written = sum(counts.values())
            kept = sum(self.boxes[split].values())
            left = sum(self.not_selected[split].values())
            per_class = ", ".join(f"{c} {n}" for c, n in counts.items() if n)
            lines.append(f"{split}: {written} crops of {kept} boxes"
                         + (f" ({left} over max_per_class not selected)" if left else "")
                         + f": {per_class or 'none'}")
        lines.append(skip_summary({**{f"{s} annotations": r for s, r in
                                      self.annotation_reports.items()},
                                   "crops": self.skips}))
        return "\n".join(lines)

    def to_dict(self):
        return {"out_dir": self.out_dir, "class_names": self.class_names,
                "counts": self.counts, "boxes": self.boxes,
                "not_selected": self.not_selected,
                "skipped_by_reason": self.skipped_by_reason,
                "crop_skips_by_reason": self.skips.by_reason}


def _open(data, seed, source_kwargs):
    if isinstance(data, str):
        from detection.data.sources import open_detection_source

        return open_detection_source(data, seed=seed, **source_kwargs), data
    if hasattr(data, "class_names") and hasattr(data, "split"):
        if source_kwargs:
            raise ValueError(f"source options {sorted(source_kwargs)} apply to a data "
                             "spec, not to an opened source.")
        return data, getattr(data, "spec", type(data).__name__)
    raise ValueError(f"data must be a detection data spec (voc:PATH, coco:PATH, "
                     f"tfds:NAME, synthetic) or an opened source with class_names and "
                     f"split(), got {data!r}.")


def _plain_name(name):
    """A split folder name: letters, digits, '.', '_', '-', no leading '.'."""
    return (isinstance(name, str) and bool(name) and not name.startswith(".")
            and _UNSAFE.sub("", name) == name)


def _check_class_names(names):
    for n in names:
        if (not isinstance(n, str) or not n or n.startswith(".") or "/" in n
                or "\\" in n or os.sep in n or "\0" in n):
            raise ValueError(f"class name {n!r} can't be a folder name (empty, leading "
                             "'.', or a path separator); rename the class in the "
                             "annotations.")


def _prepare_out(out_dir, split_dirs):
    """Create ``out_dir`` or clear the splits a previous call wrote in it;
    refuse a non-empty folder this function did not write
    (``resnet_tf.folders.claim_folder``)."""
    claim_folder(out_dir, MARKER, owner="write_object_crops", listed_key="splits",
                 exclusive=True, record={"written_by": WRITTEN_BY,
                                         "splits": list(split_dirs), "complete": False})


def _decode(contents, where):
    """``(uint8 [H, W, 3], None, None)`` or ``(None, reason key, message)``,
    by the rule the training pipelines use: what TF or PIL decodes fully
    (``resnet_tf.data.decode.decode_bytes``)."""
    from resnet_tf.data import decode

    return decode.decode_bytes(contents)


def _read_file(path):
    import tensorflow as tf

    try:
        contents = tf.io.read_file(path)
    except tf.errors.NotFoundError:
        return None, reasons.MISSING_IMAGE, "the image file does not exist"
    except tf.errors.OpError as e:
        return None, reasons.UNREADABLE_IMAGE, f"cannot read the file ({e.message})"
    return _decode(contents, path)


def _images(split, wanted):
    """``(index, annotation, (image, reason, message))`` for the annotation
    indices in ``wanted`` (sorted), whatever holds the split's pixels."""
    anns = split.annotations
    if split.images is not None:
        for i in wanted:
            yield i, anns[i], (np.asarray(split.images[i]), None, None)
    elif getattr(split, "image_bytes", None) is not None:
        # Encoded images in annotation order (TFDS); read once, in order.
        todo = set(wanted)
        for i, contents in enumerate(split.image_bytes()):
            if i in todo:
                yield i, anns[i], _decode(contents, anns[i].path)
            if i >= wanted[-1]:
                break
    else:
        for i in wanted:
            yield i, anns[i], _read_file(anns[i].path)


def _pixel_bounds(box, height, width):
    """Integer (y0, x0, y1, x1) covering ``box``, inside the image."""
    y0, x0, y1, x1 = (float(v) for v in box)
    y0, x0 = max(0, math.floor(y0)), max(0, math.floor(x0))
    y1, x1 = min(height, math.ceil(y1)), min(width, math.ceil(x1))
    return y0, x0, y1, x1


def _stem(path, used):
    base = os.path.splitext(os.path.basename(str(path).rstrip("/")))[0] or str(path)
    stem = _UNSAFE.sub("_", base).strip("_") or "image"
    n = used.get(stem, 0)
    used[stem] = n + 1
    return stem if n == 0 else f"{stem}-{n + 1}"


def _sample(split, names, max_per_class, rng):
    """The boxes to crop: ``({image index: [box index]}, {class: boxes},
    {class: boxes not selected})``, a seeded sample over ``max_per_class``."""
    by_class = [[] for _ in names]
    for i, a in enumerate(split.annotations):
        for j, c in enumerate(np.asarray(a.classes).reshape(-1)):
            by_class[int(c)].append((i, j))
    per_image, boxes, left = {}, {}, {}
    for c, items in zip(names, by_class):
        boxes[c] = len(items)
        if max_per_class is not None and len(items) > max_per_class:
            pick = rng.choice(len(items), int(max_per_class), replace=False)
            items = [items[p] for p in sorted(pick)]
        left[c] = boxes[c] - len(items)
        for i, j in items:
            per_image.setdefault(i, []).append(j)
    return per_image, boxes, left


def _write_split(split, per_image, names, folder, size, quality, skips, key):
    """Crop the chosen boxes into ``folder/<class>/``; ``{class: written}``.
    Boxes that can't be cropped are added to ``skips``."""
    from PIL import Image

    written = {c: 0 for c in names}
    used_stems = {}
    wanted = sorted(per_image)
    for i, a, (image, reason, message) in (_images(split, wanted) if wanted else ()):
        stem = _stem(a.path, used_stems)
        for j in sorted(per_image[i]):
            cls = names[int(a.classes[j])]
            box = np.asarray(a.boxes[j], np.float64)
            where, item = a.path, (key, a.path, j)
            if image is None:
                skips.add(where, f"box {j} ({cls}) not cropped: {message}", reason, key=item)
                continue
            if not np.all(np.isfinite(box)):
                skips.add(where, f"box {j} ({cls}) {box.tolist()} has a non-finite "
                          "coordinate; not cropped", reasons.MALFORMED, key=item)
                continue
            h, w = image.shape[:2]
            y0, x0, y1, x1 = _pixel_bounds(box, h, w)
            if y1 <= y0 or x1 <= x0:
                outside = y0 >= h or x0 >= w or y1 <= 0 or x1 <= 0
                skips.add(where, f"box {j} ({cls}) {box.tolist()} has no whole pixel "
                          f"inside the decoded {w}x{h} image; not cropped",
                          reasons.BOX_OUTSIDE if outside else reasons.DEGENERATE_BOX,
                          key=item)
                continue
            crop = Image.fromarray(image[y0:y1, x0:x1])
            if size is not None:
                crop = crop.resize((int(size), int(size)), Image.BILINEAR)
            crop.save(os.path.join(folder, cls, f"{stem}_{j}.jpg"), quality=int(quality))
            written[cls] += 1
    return written


def write_object_crops(data, out_dir, *, size=64, splits=None, max_per_class=None,
                       seed=0, quality=95, verbose=True, **source_kwargs):
    """Write the objects of a detection source as class-folder image crops.

    Args:
        data: a detection data spec (``voc:PATH[:SPLIT]``, ``coco:PATH``,
            ``tfds:NAME``, ``synthetic``; opened with
            ``detection.data.sources.open_detection_source``), or an opened
            source with ``class_names`` and ``split(which)`` returning
            annotations (``localization.data.sources.open_localization_source``
            for ``ilsvrc-loc:PATH``).
        out_dir: a new or empty folder, or one this function wrote (its
            split folders are replaced).
        size: crops are resized to ``size x size`` pixels; None keeps each
            crop's own size.
        splits: ``{output folder: source split ("train" or "eval")}``;
            default ``{"train": "train", "val": "eval"}`` (``folder:OUT``
            then trains on ``train/`` and validates on ``val/``).
        max_per_class: at most this many crops per class and split, a seeded
            sample (``seed``) over all the split's boxes of the class; None:
            every box.
        quality: JPEG quality.
        verbose: print the summary.
        **source_kwargs: for ``open_detection_source`` (``synthetic_train``...).
    Returns:
        ``CropResult``; ``counts[split][class]`` is the number of crops written.
    Raises:
        ValueError: a bad spec or argument, a class name that can't be a
        folder, two splits holding the same image, or ``out_dir`` not empty
        and not written here.
    """
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    if not splits:
        raise ValueError("splits is empty; give {output folder: 'train' or 'eval'}.")
    for name, which in splits.items():
        if which not in SOURCE_SPLITS:
            raise ValueError(f"splits[{name!r}] is {which!r}; use 'train' or 'eval'.")
        if not _plain_name(name) or name == MARKER:
            raise ValueError(f"split folder name {name!r} must be a plain name "
                             "(letters, digits, '.', '_', '-').")
    if size is not None and int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels or None, got {size}.")
    if max_per_class is not None and int(max_per_class) < 1:
        raise ValueError(f"max_per_class must be >= 1 or None, got {max_per_class}.")
    source, what = _open(data, seed, source_kwargs)
    names = list(source.class_names)
    _check_class_names(names)
    read = {name: source.split(which) for name, which in splits.items()}
    seen = {}
    for name, split in read.items():
        if split.images is not None or getattr(split, "image_bytes", None) is not None:
            continue  # in-memory or TFDS: the splits' names are not shared files
        for a in split.annotations:
            other = seen.setdefault(a.path, name)
            if other != name:
                raise ValueError(f"{what}: image {a.path} is in both the {other!r} and "
                                 f"the {name!r} splits; a classifier validated on these "
                                 "crops would be scored on its training images. Write "
                                 "one split, or use a source whose splits differ.")
    out_dir = os.path.abspath(out_dir)
    _prepare_out(out_dir, splits)

    skips = SkipReport()
    counts, boxes, not_selected, reports = {}, {}, {}, {}
    for k, (name, split) in enumerate(read.items()):
        reports[name] = split.report
        for c in names:
            os.makedirs(os.path.join(out_dir, name, c), exist_ok=True)
        per_image, boxes[name], not_selected[name] = _sample(
            split, names, max_per_class, np.random.default_rng([seed, k]))
        counts[name] = _write_split(split, per_image, names, os.path.join(out_dir, name),
                                    size, quality, skips, key=name)
    result = CropResult(out_dir, names, counts, boxes, not_selected, skips, reports)
    write_marker(out_dir, MARKER, {
        "written_by": WRITTEN_BY, "splits": list(splits), "complete": True, "data": what,
        "size": size, "max_per_class": max_per_class, "seed": seed,
        **{k: v for k, v in result.to_dict().items() if k != "out_dir"}}, indent=1)
    if verbose:
        print(f"Object crops of {what} -> {out_dir}\n{result.summary()}", flush=True)
    return result
