"""TFDS detection datasets (``tfds:voc/2007``, ``tfds:voc/2012``,
``tfds:coco/2017``, any builder with ``image`` and ``objects/bbox`` +
``objects/label`` features).

TFDS stores boxes as relative ``(ymin, xmin, ymax, xmax)``; they become
internal pixels here, with the image size read from the image's header (no
full decode for the annotation pass). Images stay encoded bytes until the
training pipeline, which decodes them by the one accept/reject rule of
every source (``resnet_tf.data.decode``: a file TF or PIL decodes fully is
accepted). The annotation pass uses that rule too, never a stricter one:

- an image the decoder's checks (``decode.check_image_bytes``) find
  nothing wrong with, and whose header gives its size, keeps its
  annotation; the pipeline's decoder judges it as it judges a file (corrupt
  data inside an intact-looking JPEG is found there, named and counted,
  and evaluation scores its objects as missed);
- any other (the checks doubt it, or no size in the header) goes through
  the rule itself (``decode.decode_bytes``): accepted, it is kept with its
  decoded size (a TIFF, WebP or long-trailer JPEG that PIL or TF reads);
  rejected, it is skipped, counted by the rule's reason, its ground truth
  kept in ``LoadReport.missed`` (evaluation counts its objects as missed),
  and it is left out of the image stream too (by ``tfds_id``), so both stay
  in step.

VOC's ``is_difficult`` and COCO's ``is_crowd`` become ``difficult``.

Box origin: TFDS's ``voc`` builder divides the XML's 1-based, inclusive
coordinates by the image size as they are written (``xmin / width``), so
its boxes are those numbers, not continuous pixels; they get the shift the
``voc:`` reader applies, ``(ymin - 1, xmin - 1, ymax, xmax)`` (a box
degenerate as written is left as written, then dropped), and an image and
box read through ``tfds:voc/...`` and ``voc:`` give the same internal box
(up to TFDS's float32 rounding). Other builders (``coco``, whose boxes come
from 0-based ``[x, y, width, height]``) are taken as continuous pixels.

Default splits: VOC trains on ``train+validation`` (trainval) and evaluates
on ``test``; others train on ``train`` and evaluate on
``validation``. Downloading is off unless asked for.
"""

import numpy as np
import tensorflow as tf

from detection.data.annotations import (ImageAnnotation, LoadReport, clean_boxes,
                                         missed_annotation)
from detection.data.split import DetectionSplit
from resnet_tf.data import decode
from resnet_tf.data.decode import graph_fn
from resnet_tf.data.report import BadItem
from resnet_tf.data.sources import open_tfds_builder, tfds_as_dataset


def image_size(image_bytes):
    """``(size, check, header)``: the annotation pass's look at an encoded
    image, in-graph and without decoding it.

    ``size``: int32 [2] (height, width) as displayed (EXIF orientation
    applied, as the decoder does), from the header, when the decoder's
    checks (``decode.check_image_bytes``) find nothing wrong and the header
    gives a size; zeros otherwise, and then ``check`` (bool) is True: the
    image must go through the decode rule itself (``decode.decode_bytes``,
    in ``TfdsDetectionSource.split``) before its boxes can be placed.
    ``header``: int32 [2], the header's displayed size even where the
    checks fail (zeros where unknown), for the boxes of an image the rule
    rejects.

    An image that passes the checks keeps its annotation; the pipeline's
    decoder applies the rule to it as to a file (``decode.decode_and_filter``:
    corrupt data inside an intact-looking JPEG is found there, named and
    counted), exactly as for the ``voc:`` and ``coco:`` readers.
    """
    fmt, reason = decode.check_image_bytes(image_bytes)
    header = tf.cast(decode.display_size(image_bytes, fmt), tf.int32)
    known = tf.logical_and(tf.equal(reason, decode.OK), tf.reduce_all(header > 0))
    size = tf.where(known, header, tf.zeros([2], tf.int32))
    return size, tf.logical_not(known), header


# TFDS builders whose relative boxes are 1-based inclusive coordinates / size.
ONE_BASED_BUILDERS = ("voc",)


def to_pixels(rel, height, width, one_based):
    """float32 [N, 4] internal pixels from TFDS's relative (ymin, xmin,
    ymax, xmax) boxes ``rel`` [N, 4] of a ``height`` x ``width`` image;
    ``one_based``: the builder stored 1-based inclusive coordinates (VOC),
    shifted as ``detection.data.voc`` does, (ymin - 1, xmin - 1, ymax, xmax),
    except boxes degenerate as written (left for ``clean_boxes`` to drop)."""
    boxes = np.asarray(rel, np.float32).reshape(-1, 4) * np.array(
        [height, width, height, width], np.float32)
    if one_based:
        proper = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes[proper, :2] -= 1
    return boxes


class TfdsDetectionSource:
    def __init__(self, name, split=None, data_dir=None, manual_dir=None,
                 download=False, class_names=None):
        self.name, self.requested = name, split
        self.builder, self._hint = open_tfds_builder(name, data_dir, manual_dir, download)
        features = self.builder.info.features
        try:
            objects = features["objects"]
            label = objects["label"]
            objects["bbox"]
        except KeyError:
            raise ValueError(f"tfds:{name} is not a detection dataset: it needs "
                             "'objects/bbox' and 'objects/label' features "
                             f"(it has {list(features.keys())}).") from None
        names = list(getattr(label, "names", None) or
                     [str(i) for i in range(label.num_classes)])
        if class_names is not None and list(class_names) != names:
            raise ValueError(f"tfds:{name} has classes {names[:5]}..., not the "
                             f"detector's {list(class_names)[:5]}...; a detector "
                             "evaluates only on data with its own classes.")
        self.class_names = names
        self._flag = next((k for k in ("is_difficult", "is_crowd")
                           if k in objects.keys()), None)
        self.one_based = self.builder.name in ONE_BASED_BUILDERS

    def _split_name(self, which):
        if self.requested:
            return self.requested
        if self.name.startswith("voc"):
            return "train+validation" if which == "train" else "test"
        return "train" if which == "train" else "validation"

    def split(self, which):
        split = self._split_name(which)
        name, flag = self.name, self._flag

        def read(shuffle_seed=None):
            return tfds_as_dataset(self.builder, split, self._hint, "image", shuffle_seed)

        def meta(ex):
            obj = ex["objects"]
            size, check, header = image_size(ex["image"])
            out = {"size": size, "header": header, "bbox": obj["bbox"],
                   "label": tf.cast(obj["label"], tf.int32), "id": ex["tfds_id"],
                   # only the images the checks doubt come back to Python
                   "bytes": tf.where(check, ex["image"], tf.constant(b""))}
            out["check"] = check
            out["flag"] = obj[flag] if flag else tf.zeros_like(obj["label"], tf.bool)
            return out

        report = LoadReport()
        annotations, rejected = [], []
        for ex in read().map(graph_fn(meta), num_parallel_calls=tf.data.AUTOTUNE) \
                .as_numpy_iterator():
            where = f"tfds:{name}:{split}:{ex['id'].decode()}"
            rel, labels, flags = ex["bbox"], ex["label"], ex["flag"]
            n = len(rel)
            if not (len(labels) == n and len(flags) == n):
                # Real TFDS data has one label per box; say so if not.
                n = min(n, len(labels))
                report.warn(where, f"objects/bbox, label and {flag} have lengths "
                            f"{len(rel)}, {len(labels)}, {len(flags)}; using the "
                            f"first {n} boxes")
                flags = np.resize(np.asarray(flags, bool), n) if len(flags) else \
                    np.zeros(n, bool)
                rel, labels, flags = rel[:n], labels[:n], flags[:n]
            h, w = (int(v) for v in ex["size"])
            if ex["check"]:
                # The decode rule itself (what every reader and the pipeline
                # apply): accepted if TF or PIL decodes it fully.
                image, key, message = decode.decode_bytes(ex["bytes"])
                if image is None:
                    # Its objects are counted as missed when evaluated; where
                    # the header gives no size, in a 1 x 1 frame (relative).
                    hh, hw = (int(v) for v in ex["header"])
                    known = hh > 0 and hw > 0
                    report.skip_image(BadItem(where, message, key), missed_annotation(
                        where, to_pixels(rel, hh if known else 1, hw if known else 1,
                                         self.one_based and known),
                        labels, flags, hh, hw))
                    rejected.append(ex["id"])
                    continue
                h, w = image.shape[:2]
            boxes, keep = clean_boxes(where, to_pixels(rel, h, w, self.one_based),
                                      h, w, report)
            report.images += 1
            report.boxes += len(boxes)
            if not len(boxes):
                report.images_without_boxes += 1
            annotations.append(ImageAnnotation(
                path=where, height=h, width=w, boxes=boxes,
                classes=np.asarray(labels, np.int32)[keep],
                difficult=np.asarray(flags, bool)[keep]))

        def image_bytes():  # the images of the annotations kept, in their order
            images = read()
            if rejected:
                bad = tf.constant(rejected, tf.string)
                images = images.filter(graph_fn(
                    lambda ex: tf.logical_not(tf.reduce_any(tf.equal(ex["tfds_id"], bad)))))
            return images.map(lambda ex: ex["image"])

        return DetectionSplit(split, annotations, None, report, image_bytes=image_bytes)
