"""TFDS detection datasets (``tfds:voc/2007``, ``tfds:voc/2012``,
``tfds:coco/2017``, any builder with ``image`` and ``objects/bbox`` +
``objects/label`` features).

TFDS stores boxes as relative ``(ymin, xmin, ymax, xmax)``; they become
internal pixels here, with the image size read from the JPEG header (no
full decode for the annotation pass). Images stay encoded bytes until the
training pipeline, which decodes them with the same tolerant decoder as
every other source. VOC's ``is_difficult`` and COCO's ``is_crowd`` become
``difficult``. Default splits: VOC trains on ``train+validation`` (trainval)
and evaluates on ``test``; others train on ``train`` and evaluate on
``validation``. Downloading is off unless asked for.
"""

import numpy as np
import tensorflow as tf

from detection.data.annotations import ImageAnnotation, LoadReport, clean_boxes
from resnet_tf.data.decode import graph_fn
from resnet_tf.data.sources import open_tfds_builder, tfds_as_dataset


def image_size(image_bytes):
    """int32 [2] (height, width) of an encoded image: from the header for
    JPEG, by decoding otherwise (PNG, BMP, GIF)."""
    is_jpeg = tf.strings.substr(image_bytes, 0, 2) == b"\xff\xd8"
    return tf.cond(
        is_jpeg,
        lambda: tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int32),
        lambda: tf.shape(tf.io.decode_image(image_bytes, channels=3,
                                            expand_animations=False))[:2])


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

    def _split_name(self, which):
        if self.requested:
            return self.requested
        if self.name.startswith("voc"):
            return "train+validation" if which == "train" else "test"
        return "train" if which == "train" else "validation"

    def split(self, which):
        from detection.data.sources import DetectionSplit

        split = self._split_name(which)
        name, flag = self.name, self._flag

        def read(shuffle_seed=None):
            return tfds_as_dataset(self.builder, split, self._hint, "image", shuffle_seed)

        def meta(ex):
            obj = ex["objects"]
            out = {"size": image_size(ex["image"]), "bbox": obj["bbox"],
                   "label": tf.cast(obj["label"], tf.int32), "id": ex["tfds_id"]}
            out["flag"] = obj[flag] if flag else tf.zeros_like(obj["label"], tf.bool)
            return out

        report = LoadReport()
        annotations = []
        for ex in read().map(graph_fn(meta), num_parallel_calls=tf.data.AUTOTUNE) \
                .as_numpy_iterator():
            where = f"tfds:{name}:{split}:{ex['id'].decode()}"
            h, w = (int(v) for v in ex["size"])
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
            boxes, keep = clean_boxes(where, rel * np.array([h, w, h, w], np.float32),
                                      h, w, report)
            report.images += 1
            report.boxes += len(boxes)
            if not len(boxes):
                report.images_without_boxes += 1
            annotations.append(ImageAnnotation(
                path=where, height=h, width=w, boxes=boxes,
                classes=np.asarray(labels, np.int32)[keep],
                difficult=np.asarray(flags, bool)[keep]))

        def image_bytes():
            return read().map(lambda ex: ex["image"])

        return DetectionSplit(split, annotations, None, report, image_bytes=image_bytes)
