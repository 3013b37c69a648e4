"""tf.data pipeline for detection: decode, resize, flip, normalise, pad.

Images are resized so the shorter side is ``shorter_side`` (600) unless the
longer side would exceed ``max_side`` (1000) (Faster R-CNN's single-scale
setting, which the paper used), flipped horizontally at random when
training, mean-subtracted (per channel), and zero-padded; boxes are scaled
with the image and padded to ``max_boxes`` rows of -1.

Batches (``DetectionPreprocessing.batching``): ``"grouped"`` (the default)
batches images of one aspect-ratio canvas together, ``"square"`` pads every
image to the ``pad_size`` square; the canvases and how a split falls into
them are planned in ``detection.data.buckets``.

Multi-scale training (``train_scales``, off by default): each training
image's shorter side is drawn at random from the list (``max_side`` still
holds the longer side); each (scale, orientation) has its own canvas.
Evaluation and export use ``shorter_side``.

Partial batches: evaluation keeps them (each bucket's last, smaller batch
is emitted when the data ends). Training batches are full: with
``repeat=True`` (what ``train_detector`` uses) a bucket's window carries on
into the next epoch, so no image is dropped; a finite training dataset
drops each bucket's last partial batch (``plan_buckets`` counts them, and
a warning names the number per epoch).

Limits, and where each is counted (``count_caps``, printed by
``train_detector`` as "Capped: ..." and saved in its results as ``caps``):

- boxes per image: ``max_boxes`` None (the default) pads to the largest
  count in the split, so every box trains; a number drops the boxes past
  it, each such image named in a warning and counted;
- image size: the longer side is held to ``max_side``, so the shorter side
  of an elongated image stays under ``shorter_side`` (counted); files whose
  header claims more than ``decode.MAX_PIXELS`` pixels are skipped as
  ``too_large`` by the decoder (in the "Skipped:" line);
- proposals: the proposal layer scores the top ``pre_nms`` anchors and keeps
  ``post_nms`` boxes after NMS (``detection.proposals``); images whose
  anchors or objects exceed them are counted;
- detections: images with more objects than ``max_detections`` (which
  ``train_detector`` raises to the split's largest count) are counted.

``count_caps`` counts what the data alone decides. The caps that depend on
what the network outputs are counted as they are hit, at run time:
``detection.evaluate`` counts the images whose detections filled
``max_detections`` (``detections_capped`` in the evaluation result, the
CLI's "Capped: detections ..." line, ``capped`` per ``predict`` row) and
scores COCO AP at ``maxDets = max_detections`` (``coco["max_dets"]``);
training tracks ``proposals_capped``, the fraction of images whose post-NMS
proposals filled ``post_nms_train`` (``detection.proposals.budget_full``).
"""

import dataclasses
import logging
from typing import Optional

import numpy as np
import tensorflow as tf

from detection.data.annotations import ImageAnnotation
from detection.data.buckets import (BATCHING_MODES, GROUPED, STRIDE, bucket_of,
                                    bucket_shapes, plan_buckets, round_up)
from detection.ops.boxes import PAD
from resnet_tf.data.decode import SkipCounter, decode_and_filter, graph_fn

log = logging.getLogger("resnet_tf.data")

IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)  # used when no classifier mean is given

# --- cap keys (count_caps): a limit that met the data, never a silent loss ---------
CAP_MAX_BOXES = "boxes_over_max_boxes"  # boxes past max_boxes are not trained
CAP_MAX_SIDE = "held_by_max_side"  # longer side at max_side: shorter side < shorter_side
CAP_PRE_NMS = "anchors_over_pre_nms"  # only the top pre_nms anchors become proposals
CAP_POST_NMS = "objects_over_post_nms"  # more objects than proposals kept after NMS
CAP_DETECTIONS = "objects_over_max_detections"  # more objects than an image may return


@dataclasses.dataclass
class DetectionPreprocessing:
    """The detector's input geometry (saved with every detector).

    Attributes:
        shorter_side, max_side: pixels; the resize (``scale_for``).
        flip: random horizontal flips in training.
        max_boxes: ground-truth rows per image; None (default) pads to the
            largest count of the split (nothing dropped); an int drops the
            boxes past it (warned per image, counted by ``count_caps``).
        mean_rgb: per-channel mean subtracted, RGB, [0, 255].
        train_scales: None (default: every training image at
            ``shorter_side``), or shorter sides in pixels, one drawn at
            random per training image (multi-scale training; issue 20).
            Evaluation and export always use ``shorter_side``.
        batching: ``"grouped"`` (default: aspect-ratio grouped batches on
            per-bucket canvases, ``bucket_shapes``) or ``"square"`` (every
            image on the ``pad_size`` square). Directories saved before this
            option load as ``"grouped"``; the detections are the same up to
            the border effects described in ``bucket_shapes``.
    """

    shorter_side: int = 600
    max_side: int = 1000
    flip: bool = True
    max_boxes: Optional[int] = None
    mean_rgb: tuple = IMAGENET_MEAN_RGB
    train_scales: Optional[tuple] = None
    batching: str = GROUPED

    def __post_init__(self):
        if self.max_boxes is not None and int(self.max_boxes) < 1:
            raise ValueError(f"max_boxes must be >= 1 or None (the split's largest "
                             f"count), got {self.max_boxes}.")
        if self.batching not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {BATCHING_MODES}, got "
                             f"{self.batching!r}.")
        if self.train_scales is not None:
            scales = tuple(int(v) for v in self.train_scales)
            if not scales or min(scales) < 1:
                raise ValueError(f"train_scales must be shorter sides >= 1 pixel (e.g. "
                                 f"480,600,800), got {self.train_scales!r}.")
            self.train_scales = tuple(sorted(set(scales)))

    def scales(self, training):
        """The shorter sides an image may be resized to: ``train_scales``
        when training with them, else ``(shorter_side,)``."""
        return self.train_scales if training and self.train_scales else (
            self.shorter_side,)

    @property
    def pad_size(self):
        """The padded square side: ``max_side`` rounded up to the C4 stride
        (``STRIDE``, 16), so the padded image is a whole number of cells."""
        return round_up(self.max_side)

    def scale_for(self, height, width, shorter_side=None):
        """The resize factor for an image of this size (tensors or numbers):
        shorter side to ``shorter_side`` (default ``self.shorter_side``;
        a number or a float32 scalar tensor) unless the longer would pass
        ``max_side``."""
        target = tf.cast(self.shorter_side if shorter_side is None else shorter_side,
                         tf.float32)
        short = tf.cast(tf.minimum(height, width), tf.float32)
        long = tf.cast(tf.maximum(height, width), tf.float32)
        return tf.minimum(target / short, self.max_side / long)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["mean_rgb"] = [float(v) for v in self.mean_rgb]
        d["train_scales"] = None if self.train_scales is None else list(self.train_scales)
        return d


def most_boxes(annotations):
    """The largest number of boxes of one image (0 for none)."""
    return max((len(a.boxes) for a in annotations), default=0)


def target_rows(annotations, max_boxes=None):
    """G, the ground-truth rows per image: the split's largest count, or
    ``max_boxes`` when that is smaller; at least 1."""
    most = most_boxes(annotations)
    return max(1, most if max_boxes is None else min(int(max_boxes), most))


def _pad_targets(annotations, max_boxes):
    n = len(annotations)
    g = target_rows(annotations, max_boxes)
    boxes = np.full((n, g, 4), PAD, np.float32)
    classes = np.full((n, g), -1, np.int32)
    for i, a in enumerate(annotations):
        k = min(len(a.boxes), g)
        if k < len(a.boxes):
            log.warning("%s: %d of its %d boxes are past max_boxes=%d and are not "
                        "trained; leave max_boxes unset (None) to train them all.",
                        a.path, len(a.boxes) - k, len(a.boxes), g)
        boxes[i, :k] = a.boxes[:k]
        classes[i, :k] = a.classes[:k]
    return boxes, classes


def count_caps(annotations, prep, *, proposals=None, max_detections=None,
               anchors_per_location=None):
    """Every limit the detector puts on a split's images, counted.

    Args:
        annotations: the split's ``ImageAnnotation`` list (their ``height``
            and ``width``; 0 = unknown, left out of the size count).
        prep: its ``DetectionPreprocessing``.
        proposals: the model's ``ProposalConfig`` (or None to leave the
            proposal budgets out); ``anchors_per_location``: anchors per
            stride-16 cell (``AnchorGenerator.num_anchors``).
        max_detections: the model's detections per image (or None).

    Returns:
        ``{cap key: {"limit": ..., "images": int, "of": int, ...}}``:
        ``images`` of the ``of`` images met the limit. Keys (module
        constants): ``CAP_MAX_BOXES`` (also ``"boxes"`` dropped and
        ``"largest"``), ``CAP_MAX_SIDE``, ``CAP_PRE_NMS`` (``"anchors"`` per
        padded image), ``CAP_POST_NMS``, ``CAP_DETECTIONS``.
    """
    n = len(annotations)
    counts = np.array([len(a.boxes) for a in annotations], np.int64)
    g = target_rows(annotations, prep.max_boxes)
    over = counts > g
    caps = {CAP_MAX_BOXES: {"limit": prep.max_boxes, "images": int(over.sum()), "of": n,
                            "boxes": int((counts - g)[over].sum()),
                            "largest": int(counts.max(initial=0))}}
    sizes = np.array([(a.height, a.width) for a in annotations], np.float64).reshape(-1, 2)
    known = (sizes > 0).all(axis=1)
    short, long = sizes.min(axis=1), sizes.max(axis=1)
    # scale_for: the longer side decides when shorter_side would push it past max_side.
    held = known & (long * (prep.shorter_side / np.where(known, short, 1)) > prep.max_side)
    caps[CAP_MAX_SIDE] = {"limit": prep.max_side, "images": int(held.sum()), "of": n,
                          "unknown_size": int((~known).sum())}
    if proposals is not None:
        cells = (prep.pad_size // STRIDE) ** 2
        anchors = cells * int(anchors_per_location or 1)
        pre = min(proposals.pre_nms_train, proposals.pre_nms_test)
        caps[CAP_PRE_NMS] = {"limit": [proposals.pre_nms_train, proposals.pre_nms_test],
                             "images": n if anchors > pre else 0, "of": n,
                             "anchors": anchors}
        post = min(proposals.post_nms_train, proposals.post_nms_test)
        caps[CAP_POST_NMS] = {"limit": [proposals.post_nms_train, proposals.post_nms_test],
                              "images": int((counts > post).sum()), "of": n}
    if max_detections is not None:
        caps[CAP_DETECTIONS] = {"limit": int(max_detections),
                                "images": int((counts > max_detections).sum()), "of": n}
    return caps


def format_caps(caps):
    """``count_caps``'s dict as the line a run prints: ``"Capped: ..."``."""
    def limit(c):
        v = c["limit"]
        return "none" if v is None else "/".join(str(x) for x in v) if isinstance(
            v, (list, tuple)) else str(v)

    parts = []
    for key, c in caps.items():
        extra = ""
        if key == CAP_MAX_BOXES:
            extra = f", {c['boxes']} boxes not trained, largest image {c['largest']}"
        elif key == CAP_PRE_NMS:
            extra = f" of {c['anchors']} anchors"
        elif key == CAP_MAX_SIDE and c.get("unknown_size"):
            extra = f", {c['unknown_size']} of unknown size"
        parts.append(f"{key} {c['images']}/{c['of']} images (limit {limit(c)}{extra})")
    return "Capped: " + "; ".join(parts) + "."


def prepare_example(image, boxes, classes, prep, seed=None, *, shapes=None,
                    training=None):
    """One example: uint8 image [H, W, 3], internal boxes [G, 4] -> the
    model's ``(x, y)``. ``seed`` (int [2]) enables the random flip and,
    with ``prep.train_scales``, the random shorter side (``training``
    defaults to ``seed is not None``).

    Any image size (H, W >= 1) works, shapes unknown until run time; the
    image is resized (to at most ``max_side`` a side, at least 1 pixel) and
    then padded, so the work and memory are bounded by the output, not by
    the input's aspect ratio.

    Args:
        shapes: None pads to the fixed ``pad_size`` square (static shape);
            a ``bucket_shapes`` list pads to the first canvas that holds the
            resized image (``x["bucket"]``, int32, says which; the images'
            static shape is then unknown).

    Returns:
        ``({"images": float32 [P, P, 3] (or the bucket's [Hb, Wb, 3]),
        "image_sizes": float32 [2] (resized height, width), and with
        ``shapes`` "bucket": int32 []}, {"boxes": float32 [G, 4] resized
        pixels (ymin, xmin, ymax, xmax), padded -1, "classes": int32
        [G]})``.
    """
    training = seed is not None if training is None else training
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    target = None
    scales = prep.scales(training)
    if len(scales) > 1 and seed is not None:
        # Multi-scale training: one shorter side per image, uniformly from the list.
        pick = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(seed, 1), 0, len(scales),
            dtype=tf.int32)
        target = tf.gather(tf.constant(scales, tf.float32), pick)
    elif scales[0] != prep.shorter_side:
        target = scales[0]
    scale = prep.scale_for(h, w, target)
    # At least one pixel (a 1 x 8000 strip scales its 1 to 0.125), at most
    # max_side (float rounding): the resize's output is what fits the pad.
    nh = tf.clip_by_value(tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32),
                          1, prep.max_side)
    nw = tf.clip_by_value(tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32),
                          1, prep.max_side)
    # Resize first, pad after: memory is the padded output's, whatever the
    # input's size or aspect ratio.
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
    sizes = tf.cast(tf.stack([nh, nw]), tf.float32)
    if shapes is None:
        p = prep.pad_size
        img = tf.image.pad_to_bounding_box(img, 0, 0, p, p)
        x = {"images": tf.ensure_shape(img, [p, p, 3]), "image_sizes": sizes}
    else:
        bucket = bucket_of(nh, nw, shapes)
        canvas = tf.gather(tf.constant(shapes, tf.int32), bucket)
        img = tf.image.pad_to_bounding_box(img, 0, 0, canvas[0], canvas[1])
        x = {"images": img, "image_sizes": sizes, "bucket": bucket}
    return x, {"boxes": boxes, "classes": classes}


def make_detection_dataset(annotations, prep, *, training, batch_size, seed=0,
                           counter=None, images=None, image_bytes=None, stride=STRIDE,
                           repeat=False, with_index=False):
    """Batched ``(x, y)`` for ``FasterRCNN.fit``/prediction: ``x`` =
    ``{"images": float32 [B, Hb, Wb, 3], "image_sizes": float32 [B, 2]}``,
    ``y`` = ``{"boxes": float32 [B, G, 4], "classes": int32 [B, G]}`` (see
    ``prepare_example``). ``prep.batching`` "grouped": each batch holds
    images of one ``bucket_shapes`` canvas (``tf.data.Dataset.
    group_by_window``), so [Hb, Wb] varies from batch to batch among those
    few shapes (the static spec is [B, None, None, 3]); "square": always
    the [pad_size, pad_size] square.

    Args:
        annotations: list of ``ImageAnnotation`` (files are read and decoded
            with the classifier's tolerant decoder; unreadable ones skipped
            and counted in ``counter``), or None with ``images`` given.
        images: uint8 [N, H, W, 3] in memory (the synthetic set), with
            ``annotations`` giving their boxes.
        image_bytes: a ``tf.data.Dataset`` of encoded images in the order of
            ``annotations`` (TFDS), decoded like files.
        stride: pixels per feature cell the canvases are rounded up to (the
            model's ``feature_stride``; default the C4 stride, 16).
        repeat: training only: an endless stream of epochs (reshuffled),
            batched across epoch ends, so no image is dropped; without it a
            training dataset drops each bucket's last partial batch (a
            warning gives the count per epoch, ``plan_buckets``).
            Evaluation always emits partial batches.
        with_index: add ``y["index"]`` (int32 [B]): each image's position in
            ``annotations``, since grouping reorders images.

    Raises:
        ValueError: no annotations (an empty split; its reader's report
            says why).
    """
    if not annotations:
        raise ValueError("make_detection_dataset: no images to read (the split is empty: "
                         "every image was skipped; the loader's report and warnings say "
                         "why).")
    boxes, classes = _pad_targets(annotations, prep.max_boxes)
    index = np.arange(len(annotations), dtype=np.int32)
    if images is not None:
        ds = tf.data.Dataset.from_tensor_slices(
            {"image": images, "boxes": boxes, "classes": classes, "index": index})
    else:
        paths = np.array([a.path for a in annotations], dtype=str)
        ds = tf.data.Dataset.from_tensor_slices(
            {"path": paths, "boxes": boxes, "classes": classes, "index": index})
        if image_bytes is not None:
            ds = tf.data.Dataset.zip(ds, image_bytes).map(
                lambda e, b: {**e, "image_bytes": b})
        else:
            ds = ds.map(graph_fn(lambda e: {**e, "image_bytes": tf.io.read_file(e["path"])}),
                        num_parallel_calls=tf.data.AUTOTUNE)
        ds = decode_and_filter(ds, counter if counter is not None else SkipCounter())
    grouped = prep.batching == GROUPED
    shapes = bucket_shapes(prep, annotations, training=training, stride=stride) \
        if grouped else None

    def prepare(e, s=None):
        x, y = prepare_example(e["image"], e["boxes"], e["classes"], prep, s,
                               shapes=shapes, training=training)
        if with_index:
            y = {**y, "index": e["index"]}
        return x, y

    if training:
        # Paths are cheap to hold; encoded images (TFDS) get a bounded buffer.
        buffer = len(annotations) if image_bytes is None else min(len(annotations), 1024)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(graph_fn(prepare),
                                                num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(graph_fn(prepare), num_parallel_calls=tf.data.AUTOTUNE)
    drop = training
    if not grouped:
        if training and not repeat and len(annotations) % batch_size:
            log.warning("Training batches are full: %d of the %d images are left out of "
                        "each epoch (a different %d each time, reshuffled); pass "
                        "repeat=True to batch across epochs.", len(annotations) %
                        batch_size, len(annotations), len(annotations) % batch_size)
        return ds.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)
    plan = plan_buckets(annotations, prep, batch_size=batch_size, stride=stride)
    log.info("Aspect-ratio buckets (height x width: images, partial last batch): %s",
             ", ".join(f"{b['shape'][0]}x{b['shape'][1]}: {b['images']}, {b['partial']}"
                       for b in plan[:-1] if b["images"]))
    partial = sum(b["partial"] for b in plan[:-1])
    if training and not repeat and partial:
        log.warning("Training batches are full: each aspect-ratio bucket's last partial "
                    "batch is dropped, %d of the %d images each epoch (a different set each "
                    "time, reshuffled); pass repeat=True to batch across epochs.",
                    partial, len(annotations))
    ds = ds.group_by_window(
        key_func=lambda x, y: tf.cast(x["bucket"], tf.int64),
        reduce_func=lambda key, window: window.batch(batch_size, drop_remainder=drop),
        window_size=batch_size)
    ds = ds.map(lambda x, y: ({k: v for k, v in x.items() if k != "bucket"}, y))
    return ds.prefetch(tf.data.AUTOTUNE)


def synthetic_annotations(num_images, size=128, seed=0, max_objects=4):
    """The synthetic detection set as ``(images, annotations, class_names)``."""
    from detection.data import synthetic

    images, boxes, classes = synthetic.make_detection(num_images, size, seed, max_objects)
    anns = [ImageAnnotation(path=f"synthetic:{i}", height=size, width=size, boxes=b,
                            classes=c, difficult=np.zeros(len(c), bool))
            for i, (b, c) in enumerate(zip(boxes, classes))]
    return images, anns, list(synthetic.SHAPES)
