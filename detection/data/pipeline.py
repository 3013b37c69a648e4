"""tf.data pipeline for detection: decode, resize, flip, normalise, pad.

Images are resized so the shorter side is ``shorter_side`` (600) unless the
longer side would exceed ``max_side`` (1000) (Faster R-CNN's single-scale
setting, which the paper used), flipped horizontally at random when
training, mean-subtracted (per channel), and zero-padded to a fixed
``pad_size`` square; boxes are scaled with the image and padded to
``max_boxes`` rows of -1. Fixed sizes keep one traced graph for the run.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from detection.data.annotations import ImageAnnotation
from detection.ops.boxes import PAD
from resnet_tf.data.decode import SkipCounter, decode_and_filter, graph_fn

IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)  # used when no classifier mean is given


@dataclasses.dataclass
class DetectionPreprocessing:
    shorter_side: int = 600
    max_side: int = 1000
    flip: bool = True
    max_boxes: int = 100
    mean_rgb: tuple = IMAGENET_MEAN_RGB

    @property
    def pad_size(self):
        """The padded square side: ``max_side`` rounded up to the stride 16."""
        return int(math.ceil(self.max_side / 16) * 16)

    def scale_for(self, height, width):
        """The resize factor for an image of this size (tensors or numbers)."""
        short = tf.cast(tf.minimum(height, width), tf.float32)
        long = tf.cast(tf.maximum(height, width), tf.float32)
        return tf.minimum(self.shorter_side / short, self.max_side / long)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["mean_rgb"] = [float(v) for v in self.mean_rgb]
        return d


def _pad_targets(annotations, max_boxes):
    n = len(annotations)
    g = max(1, min(max_boxes, max((len(a.boxes) for a in annotations), default=1)))
    boxes = np.full((n, g, 4), PAD, np.float32)
    classes = np.full((n, g), -1, np.int32)
    for i, a in enumerate(annotations):
        k = min(len(a.boxes), g)
        boxes[i, :k] = a.boxes[:k]
        classes[i, :k] = a.classes[:k]
    return boxes, classes


def prepare_example(image, boxes, classes, prep, seed=None):
    """One example: uint8 image [H, W, 3], internal boxes [G, 4] -> the
    model's ``(x, y)`` with fixed shapes. ``seed`` (int [2]) enables the
    random flip."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    scale = prep.scale_for(h, w)
    nh = tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32)
    nw = tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32)
    img = tf.image.resize(image, tf.stack([nh, nw]), method="bilinear")
    valid = tf.reduce_any(tf.not_equal(boxes, PAD), axis=-1, keepdims=True)
    sy = tf.cast(nh, tf.float32) / tf.cast(h, tf.float32)
    sx = tf.cast(nw, tf.float32) / tf.cast(w, tf.float32)
    boxes = boxes * tf.stack([sy, sx, sy, sx])
    if seed is not None and prep.flip:
        do = tf.random.stateless_uniform([], seed) < 0.5
        img = tf.cond(do, lambda: tf.image.flip_left_right(img), lambda: img)
        wf = tf.cast(nw, tf.float32)
        flipped = tf.stack([boxes[:, 0], wf - boxes[:, 3], boxes[:, 2], wf - boxes[:, 1]], -1)
        boxes = tf.where(do, flipped, boxes)
    boxes = tf.where(valid, boxes, PAD)
    img = img - tf.constant(prep.mean_rgb, tf.float32)
    p = prep.pad_size
    img = tf.image.pad_to_bounding_box(img, 0, 0, p, p)
    x = {"images": tf.ensure_shape(img, [p, p, 3]),
         "image_sizes": tf.cast(tf.stack([nh, nw]), tf.float32)}
    return x, {"boxes": boxes, "classes": classes}


def make_detection_dataset(annotations, prep, *, training, batch_size, seed=0,
                           counter=None, images=None, image_bytes=None):
    """Batched ``(x, y)`` for ``FasterRCNN.fit``/prediction.

    Args:
        annotations: list of ``ImageAnnotation`` (files are read and decoded
            with the classifier's tolerant decoder; unreadable ones skipped
            and counted in ``counter``), or None with ``images`` given.
        images: uint8 [N, H, W, 3] in memory (the synthetic set), with
            ``annotations`` giving their boxes.
        image_bytes: a ``tf.data.Dataset`` of encoded images in the order of
            ``annotations`` (TFDS), decoded like files.
    """
    boxes, classes = _pad_targets(annotations, prep.max_boxes)
    if images is not None:
        ds = tf.data.Dataset.from_tensor_slices(
            {"image": images, "boxes": boxes, "classes": classes})
    else:
        paths = np.array([a.path for a in annotations])
        ds = tf.data.Dataset.from_tensor_slices(
            {"path": paths, "boxes": boxes, "classes": classes})
        if image_bytes is not None:
            ds = tf.data.Dataset.zip(ds, image_bytes).map(
                lambda e, b: {**e, "image_bytes": b})
        else:
            ds = ds.map(graph_fn(lambda e: {**e, "image_bytes": tf.io.read_file(e["path"])}),
                        num_parallel_calls=tf.data.AUTOTUNE)
        ds = decode_and_filter(ds, counter if counter is not None else SkipCounter())
    if training:
        # Paths are cheap to hold; encoded images (TFDS) get a bounded buffer.
        buffer = len(annotations) if image_bytes is None else min(len(annotations), 1024)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            graph_fn(lambda e, s: prepare_example(e["image"], e["boxes"], e["classes"],
                                                  prep, s)),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(graph_fn(lambda e: prepare_example(e["image"], e["boxes"],
                                                       e["classes"], prep)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def synthetic_annotations(num_images, size=128, seed=0, max_objects=4):
    """The synthetic detection set as ``(images, annotations, class_names)``."""
    from resnet_tf.data import synthetic

    images, boxes, classes = synthetic.make_detection(num_images, size, seed, max_objects)
    anns = [ImageAnnotation(path=f"synthetic:{i}", height=size, width=size, boxes=b,
                            classes=c, difficult=np.zeros(len(c), bool))
            for i, (b, c) in enumerate(zip(boxes, classes))]
    return images, anns, list(synthetic.SHAPES)
