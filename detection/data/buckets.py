"""Aspect-ratio bucket planning for the detector's batches: the static
canvases images are padded to, which one an image goes to, and how a split
falls into them (``detection.data.pipeline.make_detection_dataset`` pads and
batches by this plan).

Batches (``DetectionPreprocessing.batching``):

- ``"grouped"`` (the default): detectron2's aspect-ratio grouping. Each
  image goes to the smallest of a few static canvases it fits
  (``bucket_shapes``: per shorter side, a landscape ``[S, L]`` and a
  portrait ``[L, S]`` canvas, S the padded shorter side and L the split's
  largest resized longer side, both rounded up to the feature stride, plus
  the ``[S, max_side]`` / ``[max_side, S]`` canvases for images whose size
  the annotations did not know), and ``tf.data.Dataset.group_by_window``
  batches images of one canvas together. On 4:3 photos at 600/1000 a
  608x800 canvas replaces the 1008x1008 square: half the trunk's pixels.
  The canvases are static, so the model sees a handful of shapes.
- ``"square"``: every image padded to the ``pad_size`` square (one shape).

Sizes are pixels, ``(height, width)`` order; ``prep`` is a
``detection.data.pipeline.DetectionPreprocessing``.
"""

import math

import numpy as np
import tensorflow as tf

from resnet_tf import zoo

# The C4 trunk's stride (16): one anchor location per STRIDE x STRIDE pixels.
STRIDE = zoo.stride_of("C4")
# DetectionPreprocessing.batching: aspect-ratio groups, or one square.
GROUPED, SQUARE = "grouped", "square"
BATCHING_MODES = (GROUPED, SQUARE)


def round_up(n, stride=STRIDE):
    """``n`` pixels rounded up to a whole number of ``stride`` cells."""
    return int(math.ceil(n / stride) * stride)


def resized_size(height, width, prep, shorter_side=None):
    """``(height, width)`` after ``prepare_example``'s resize, in numpy
    (float32 arithmetic and round-half-to-even, as the graph does); arrays
    or numbers in, int64 arrays out."""
    h = np.asarray(height, np.float32)
    w = np.asarray(width, np.float32)
    target = np.float32(prep.shorter_side if shorter_side is None else shorter_side)
    scale = np.minimum(target / np.minimum(h, w), np.float32(prep.max_side) / np.maximum(h, w))
    nh = np.clip(np.round(h * scale), 1, prep.max_side).astype(np.int64)
    nw = np.clip(np.round(w * scale), 1, prep.max_side).astype(np.int64)
    return nh, nw


def bucket_shapes(prep, annotations=None, *, training=False, stride=STRIDE):
    """The static canvases (padded ``(height, width)`` pairs, ints) images
    are batched on, smallest area first; an image goes to the first one it
    fits (``bucket_of``).

    ``"square"``: ``[(pad_size, pad_size)]``. ``"grouped"``: for each
    shorter side S in ``prep.scales(training)`` (and M = ``max_side``), all
    rounded up to ``stride`` (the model's feature stride, 16 for C4,
    ``FasterRCNN.feature_stride``):

    - ``(S, M)`` landscape and ``(M, S)`` portrait: every image fits one;
    - where ``annotations`` know their sizes (``height``, ``width`` > 0),
      ``(S, L)`` / ``(L, S)`` with L the largest resized longer side among
      the split's landscape (width >= height) / portrait images: 4:3
      photos at 600/1000 get 608x800 instead of 608x1008.

    Padding beyond the image is zeros (after mean subtraction), as in the
    square; the network's convolutions pad with zeros too, so features away
    from the image's right and bottom edges are the same on any canvas. At
    those edges a canvas that ends at the image differs from one that
    continues with padding whose activations are not zero (a trained
    network's batch-norm shifts), and the RPN has fewer anchors to rank, so
    detections near those edges can change slightly (tested in
    ``tests/test_detection/test_detection_batches.py``).
    """
    if prep.batching == SQUARE:
        p = round_up(prep.max_side, stride)
        return [(p, p)]
    big = round_up(prep.max_side, stride)
    shapes = set()
    sizes = None
    if annotations:
        sizes = np.array([(a.height, a.width) for a in annotations], np.int64).reshape(-1, 2)
        sizes = sizes[(sizes > 0).all(axis=1)]
    for scale in prep.scales(training):
        short = round_up(min(scale, prep.max_side), stride)
        shapes.update({(short, big), (big, short)})
        if sizes is not None and len(sizes):
            nh, nw = resized_size(sizes[:, 0], sizes[:, 1], prep, scale)
            land = sizes[:, 1] >= sizes[:, 0]
            if land.any():
                shapes.add((round_up(nh[land].max(), stride), round_up(nw[land].max(), stride)))
            if (~land).any():
                shapes.add((round_up(nh[~land].max(), stride),
                            round_up(nw[~land].max(), stride)))
    return sorted(shapes, key=lambda hw: (hw[0] * hw[1], hw))


def bucket_of(nh, nw, shapes):
    """int32 scalar: the index of the first of ``shapes`` (``bucket_shapes``)
    that holds a resized ``nh`` x ``nw`` image (tensors)."""
    table = tf.constant(shapes, tf.int32)
    fits = tf.logical_and(nh <= table[:, 0], nw <= table[:, 1])
    # shapes end with canvases that hold any resized image (max_side a side).
    return tf.cast(tf.argmax(tf.cast(fits, tf.int32)), tf.int32)


def plan_buckets(annotations, prep, *, batch_size, training=False, stride=STRIDE):
    """How a split's images fall into ``bucket_shapes`` at ``shorter_side``
    (multi-scale draws are random, so this is the single-scale plan): a list
    of ``{"shape": (h, w), "images": n, "batches": full batches,
    "partial": images in the bucket's last partial batch}``, one per shape,
    plus ``{"unknown_size": n}`` images whose size is unknown (placed when
    decoded). ``partial`` images are emitted as a smaller batch in
    evaluation; a finite training dataset drops them each epoch.
    """
    shapes = bucket_shapes(prep, annotations, training=False, stride=stride)
    sizes = np.array([(a.height, a.width) for a in annotations], np.int64).reshape(-1, 2)
    known = (sizes > 0).all(axis=1)
    counts = np.zeros(len(shapes), np.int64)
    if known.any():
        nh, nw = resized_size(sizes[known, 0], sizes[known, 1], prep)
        table = np.array(shapes)
        fits = (nh[:, None] <= table[None, :, 0]) & (nw[:, None] <= table[None, :, 1])
        counts = np.bincount(fits.argmax(axis=1), minlength=len(shapes))
    plan = [{"shape": tuple(s), "images": int(c), "batches": int(c // batch_size),
             "partial": int(c % batch_size)} for s, c in zip(shapes, counts)]
    return plan + [{"unknown_size": int((~known).sum())}]
