"""tf.data for the localizer: the classifier's training crops, with boxes.

Training (Appendix C: "as in our ImageNet classification training, we
randomly sample 224x224 crops"): the classifier's own ``Preprocessing``
decides the view, and the boxes follow the pixels.

- ImageNet style: shorter side to a random s in ``scale_range`` (or
  ``eval_resize`` without scale augmentation), a random ``crop_size`` crop
  (``augment.random_scale_crop``; the boxes use the same draws through
  ``augment.scale_crop_geometry``), PCA colour noise, the per-pixel mean,
  a horizontal flip.
- CIFAR style: the per-pixel mean, ``pad`` pixels of zero padding, a random
  ``crop_size`` crop and a flip.

A box is kept when its centre lies inside the crop, clipped to it; the
others become padding (-1). An image whose crop holds no box centre
trains ``cls`` with negatives only. Elements: ``(float32 [S, S, 3],
{"labels": int32, "boxes": float32 [G, 4]})``, G the most boxes of any
image of the split.

Testing works on whole images (``test_views``): the shorter side resized to
each test scale, the mean image resized to the view and subtracted.

Any image size (H, W >= 1: 20 x 20, 33 x 500 ...) goes through every view
with shapes unknown until run time. The training crop's work and memory are
bounded by the crop (only the source window it needs is resampled:
``augment.random_scale_crop``, ``Preprocessing.mean_view``); a test view is
the whole image at one scale and costs its own size, nothing larger.
"""

import numpy as np
import tensorflow as tf

from detection.data.pipeline import CAP_MAX_BOXES
from detection.ops.boxes import PAD
from resnet_tf.data import augment
from resnet_tf.data.decode import SkipCounter, decode_and_filter, graph_fn

# Training shuffle buffer: elements (images) mixed at once (shuffled_repeated).
SHUFFLE_BUFFER = 20_000


def pad_boxes(annotations, label_map=None):
    """``(labels int32 [N], boxes float32 [N, G, 4] padded -1)``; labels are
    the images' classes, through ``label_map`` (source -> model index). G is
    the split's largest box count: no box is ever cut (``count_caps``)."""
    g = max(1, max((len(a.boxes) for a in annotations), default=1))
    boxes = np.full((len(annotations), g, 4), PAD, np.float32)
    labels = np.zeros(len(annotations), np.int32)
    for i, a in enumerate(annotations):
        boxes[i, :len(a.boxes)] = a.boxes
        label = int(a.classes[0])
        labels[i] = label if label_map is None else label_map[label]
    return labels, boxes


def count_caps(annotations):
    """The localizer's limits on a split, counted as the detector's are
    (``detection.data.pipeline.count_caps``; print with its ``format_caps``).

    Boxes per image adapt to the data (``pad_boxes``), so ``CAP_MAX_BOXES``
    reports 0 images and the largest count. (A training crop leaves out the
    boxes whose centre it does not hold, a new draw each step: augmentation,
    not a cap. Multi-class ILSVRC images are counted by the loader as
    ``second_class_box``; the export's aspect cap is in its ``caps`` info.)

    Returns:
        ``{CAP_MAX_BOXES: {"limit": None, "images": 0, "of": N, "boxes": 0,
        "largest": int}}``.
    """
    largest = max((len(a.boxes) for a in annotations), default=0)
    return {CAP_MAX_BOXES: {"limit": None, "images": 0, "of": len(annotations),
                            "boxes": 0, "largest": int(largest)}}


def _crop_boxes(boxes, scale, offset, size):
    """Source boxes [G, 4] -> crop boxes: scaled, shifted, kept if the centre
    is inside, clipped; padding stays padding."""
    valid = tf.reduce_any(tf.not_equal(boxes, PAD), axis=-1)
    b = boxes * tf.tile(scale, [2]) - tf.tile(offset, [2])
    cy, cx = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    inside = (cy >= 0) & (cy < size) & (cx >= 0) & (cx < size) & valid
    b = tf.clip_by_value(b, 0.0, float(size))
    return tf.where(inside[:, None], b, PAD)


def _flip(image, boxes, seed, size):
    do = tf.random.stateless_uniform([], seed) < 0.5
    valid = tf.reduce_any(tf.not_equal(boxes, PAD), axis=-1, keepdims=True)
    flipped = tf.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], -1)
    boxes = tf.where(do & valid, flipped, boxes)
    image = tf.cond(do, lambda: tf.reverse(image, axis=[1]), lambda: image)
    return image, boxes


def train_view(image, boxes, seed, prep, mean_image):
    """One training crop and its boxes.

    Args:
        image: uint8 [H, W, 3].
        boxes: float32 [G, 4] internal format, padded -1.
        seed: int [2].
        prep: the classifier's ``Preprocessing``.
        mean_image: float32 [S, S, 3] or None.
    Returns:
        ``(float32 [S, S, 3], float32 [G, 4])``.
    """
    size = prep.crop_size
    s_scale, s_crop, s_flip, s_color = augment.split_seed(seed, 4)
    if prep.style == "imagenet":
        lo, hi = prep.scale_range if prep.scale_augmentation else (prep.eval_resize,) * 2
        x = augment.random_scale_crop(image, s_scale, s_crop, size, lo, hi)
        scale, offset = augment.scale_crop_geometry(tf.shape(image)[:2], s_scale, s_crop,
                                                    size, lo, hi)
        boxes = _crop_boxes(boxes, scale, offset, size)
        if prep.pca_std:
            x = augment.pca_color(x, s_color, std=prep.pca_std)
        if prep.mean_subtraction and mean_image is not None:
            x = augment.subtract_mean(x, mean_image)
    else:
        # The classifier's base view: the image itself at crop_size (others are
        # resized to a shorter side of crop_size and centre-cropped).
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        resized = tf.cast(augment.shorter_side_size(tf.shape(image), size), tf.float32)
        base_offset = tf.floor((resized - size) / 2)
        x = prep.mean_view(image)
        if prep.mean_subtraction and mean_image is not None:
            x = augment.subtract_mean(x, mean_image)
        p = prep.pad
        oy, ox = tf.unstack(tf.random.stateless_uniform([2], s_crop, 0, 2 * p + 1, tf.int32))
        x = tf.pad(x, [[p, p], [p, p], [0, 0]])[oy:oy + size, ox:ox + size]
        crop_offset = base_offset + tf.cast(tf.stack([oy, ox]), tf.float32) - p
        boxes = _crop_boxes(boxes, resized / shape, crop_offset, size)
    if prep.flip:
        x, boxes = _flip(x, boxes, s_flip, float(size))
    return tf.ensure_shape(x, [size, size, 3]), boxes


def _elements(annotations, labels, boxes, images, counter):
    """Decoded elements {"image", "label", "boxes", "path"}."""
    if images is not None:
        return tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": labels, "boxes": boxes,
             "path": np.array([a.path for a in annotations])})
    ds = tf.data.Dataset.from_tensor_slices(
        {"path": np.array([a.path for a in annotations]), "label": labels, "boxes": boxes})
    ds = ds.map(graph_fn(lambda e: {**e, "image_bytes": tf.io.read_file(e["path"])}),
                num_parallel_calls=tf.data.AUTOTUNE)
    return decode_and_filter(ds, counter if counter is not None else SkipCounter())


def shuffled_repeated(ds, n, seed, *, cache=False, repeat=True):
    """A training order for a dataset of ``n`` elements, each element paired
    with its own stateless seed: optionally cached (decoded images kept in
    memory), shuffled through a buffer of ``min(n, SHUFFLE_BUFFER)``
    (reshuffled each pass), optionally repeated forever, then zipped with
    ``tf.data.Dataset.random(seed)`` two at a time (re-drawn each pass), so
    a run is reproducible from ``seed`` while every pass draws new
    augmentations. Used by the localizer's stages (``make_training_dataset``,
    ``localization.data.rcnn.make_rcnn_dataset``).

    Args:
        ds: a ``tf.data.Dataset`` of n elements.
        n: int, its length (for the buffer).
        seed: int, the shuffle's and the seed stream's seed.
        cache: ``ds.cache()`` before shuffling.
        repeat: ``repeat()`` after shuffling (then pass ``steps_per_epoch``).
    Returns:
        a ``tf.data.Dataset`` of ``(element, int64 [2] seed)``.
    """
    if cache:
        ds = ds.cache()
    ds = ds.shuffle(min(n, SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(ds, seeds)


def make_training_dataset(annotations, prep, mean_image, *, batch_size, seed=0,
                          counter=None, images=None, label_map=None, repeat=True,
                          cache=False):
    """Batched ``(images, {"labels", "boxes"})`` for ``Localizer.fit``.

    Args:
        annotations: ``ImageAnnotation`` list (files decoded with the tolerant
            decoder; unreadable ones skipped and counted in ``counter``).
        images: uint8 [N, H, W, 3] in memory instead of files.
        label_map: int [source classes] -> model class index.
        cache: keep decoded images in memory (small sets).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    labels, boxes = pad_boxes(annotations, label_map)
    mean = None if mean_image is None else tf.constant(mean_image, tf.float32)
    ds = _elements(annotations, labels, boxes, images, counter)

    def view(e, s):
        x, b = train_view(e["image"], e["boxes"], s, prep, mean)
        return x, {"labels": e["label"], "boxes": b}

    ds = shuffled_repeated(ds, len(annotations), seed, cache=cache, repeat=repeat).map(
        graph_fn(view), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def test_examples(annotations, *, counter=None, images=None, label_map=None):
    """Unbatched decoded elements for testing: ``{"image": uint8 [H, W, 3],
    "label", "boxes" [G, 4] (original pixels), "path"}``."""
    labels, boxes = pad_boxes(annotations, label_map)
    return _elements(annotations, labels, boxes, images, counter).prefetch(4)


def test_views(image, prep, mean_image, scales, flip=False):
    """The whole image at each shorter side in ``scales``: a list of
    ``(float32 [1, h, w, 3], float32 [2] (sy, sx) view / original, flipped)``;
    with ``flip`` each scale's mirror follows it."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    out = []
    for s in scales:
        v = augment.resize_shorter_side(image, s)
        if prep.mean_subtraction and mean_image is not None:
            v = augment.subtract_mean(v, mean_image)
        factor = tf.cast(tf.shape(v)[:2], tf.float32) / shape
        out.append((v[None], factor, False))
        if flip:
            out.append((tf.reverse(v, axis=[1])[None], factor, True))
    return out
