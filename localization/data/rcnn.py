"""tf.data for the localizer's second stage (``localization.rcnn``): warped
proposal crops, RoI-centric.

Regions are cropped from the *region view*: the image with its shorter side
resized to ``view_side`` (the classifier's crop size, 224 for ImageNet nets:
the view the first stage tests), before mean subtraction; each is warped to
S x S with ``tf.image.crop_and_resize`` (bilinear, every box of an image in
one call) and the classifier's mean image (resized to S x S when S differs
from its size) is subtracted. Cropping from that view rather than from the
full-resolution file keeps training, evaluation and the SavedModel (which
holds only the view) on the same pixels.

Sampling across images (the paper's RoI-centric R-CNN training: "a
mini-batch is 256 warped regions drawn across images"): each image's
candidates, its first-stage proposals plus its ground-truth boxes, are
labelled by IoU with the image's boxes (``detection.matcher.Matcher``:
foreground, with the image's class, at IoU >= ``fg_iou``; background below
``bg_iou``; ignored between), their regression targets encoded with
``detection.box_coder``'s head weights, and ``regions_per_image`` of them
sampled with ``detection.sampler.sample_balanced`` (at most
``positive_fraction`` foreground; R-CNN: 32 of 128, a quarter). The warped
regions of many images then pass through a shuffle buffer of
``shuffle_images`` images' regions and are batched ``batch_size`` at a time,
so a batch mixes regions of many images.

A new sample every pass: the candidates are put in a random order (a
stateless draw from the element's seed) before ``sample_balanced``, whose
own priorities come from a fixed int seed, so which candidates are taken
changes each time while the graph stays free of stateful ops.
"""

import numpy as np
import tensorflow as tf

from detection.box_coder import HEAD_WEIGHTS, BoxCoder
from detection.matcher import IGNORE, POSITIVE, Matcher
from detection.ops.boxes import PAD, is_valid
from detection.sampler import sample_balanced
from localization.data.pipeline import pad_boxes, shuffled_repeated
from resnet_tf.data import augment
from resnet_tf.data.decode import SkipCounter, decode_and_filter, graph_fn


def warp_regions(view, boxes, size, mean_image=None):
    """Crop ``boxes`` from ``view`` and warp each to ``size`` x ``size``.

    Sample i of a box (ymin, ..., ymax) of height h lies at the pixel-centre
    coordinate ``ymin + (i + 0.5) h / size - 0.5``, as ``tf.image.resize``
    (bilinear, half-pixel centres, no antialiasing) samples a crop, so a box
    on whole pixels gives exactly ``tf.image.resize(view[y0:y1, x0:x1])``
    whenever those samples stay inside the crop (any shrink, and the
    identity). Samples are clamped to the image (no black border), so a
    box reaching past the image repeats its edge pixels.

    Args:
        view: [H, W, 3] any real dtype (not mean subtracted).
        boxes: float32 [N, 4] (ymin, xmin, ymax, xmax) view pixels.
        size: S, an int.
        mean_image: float32 [Sm, Sm, 3] or None: subtracted from every
            warped region (resized to S x S first when Sm != S).
    Returns:
        float32 [N, S, S, 3].
    """
    view = tf.cast(view, tf.float32)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    shape = tf.cast(tf.shape(view)[:2], tf.float32)
    lim = tf.concat([shape, shape], 0) - 1.0
    extent = tf.concat([boxes[:, 2:] - boxes[:, :2]] * 2, 1) / float(size)  # [N, 4]
    first_last = tf.concat([boxes[:, :2] + 0.5 * extent[:, :2],
                            boxes[:, 2:] - 0.5 * extent[:, 2:]], 1) - 0.5
    first_last = tf.clip_by_value(first_last, 0.0, lim)
    normalised = first_last / tf.maximum(lim, 1.0)
    n = tf.shape(boxes)[0]
    crops = tf.image.crop_and_resize(view[None], normalised, tf.zeros([n], tf.int32),
                                     [size, size], method="bilinear")
    if mean_image is not None:
        mean = tf.cast(mean_image, tf.float32)
        if mean.shape[0] != size or mean.shape[1] != size:
            mean = tf.image.resize(mean, [size, size], method="bilinear", antialias=False)
        crops = crops - mean[None]
    return crops


def region_view(image, view_side):
    """``(float32 [h, w, 3] the image at shorter side ``view_side``, float32
    [2] (sy, sx) view / original)``: the view regions are cropped from."""
    v = augment.resize_shorter_side(image, view_side)
    factor = tf.cast(tf.shape(v)[:2], tf.float32) / tf.cast(tf.shape(image)[:2], tf.float32)
    return v, factor


def region_targets(proposals, gt_boxes, label, *, matcher, coder, num_samples,
                   positive_fraction, seed):
    """Label and sample one image's candidate regions.

    Args:
        proposals: float32 [P, 4] first-stage boxes, padded -1.
        gt_boxes: float32 [G, 4] the image's boxes, padded -1 (they join the
            candidates, as in R-CNN fine-tuning).
        label: int32 scalar, the image's class.
        matcher: a ``detection.matcher.Matcher``; coder: a head ``BoxCoder``.
        num_samples: int, regions kept (at most P + G).
        positive_fraction: the most foreground may take.
        seed: int32 [2], the element's stateless seed (the candidates' order).
    Returns:
        ``(boxes float32 [R, 4], classes int32 [R] (0 background, label + 1),
        deltas float32 [R, 4])`` for the R <= num_samples sampled regions.
    """
    rois = tf.concat([tf.cast(proposals, tf.float32), tf.cast(gt_boxes, tf.float32)], 0)
    order = tf.argsort(tf.random.stateless_uniform([tf.shape(rois)[0]], seed))
    rois = tf.gather(rois, order)
    gt = tf.cast(gt_boxes, tf.float32)
    match = matcher.match(rois, gt)
    labels = tf.where(is_valid(rois), match.labels, IGNORE)
    k = min(int(num_samples), int(rois.shape[0]))
    sampled = sample_balanced(labels[None], k, positive_fraction, 0)[0]
    classes = tf.where(labels == POSITIVE, tf.cast(label, tf.int32) + 1, 0)
    matched = tf.gather(gt, tf.maximum(match.matches, 0))
    matched = tf.where((match.matches >= 0)[:, None], matched, rois)
    # Rows that are not sampled may be padding; give them a positive size.
    safe = tf.where(is_valid(rois)[:, None], rois, tf.constant([[0.0, 0.0, 1.0, 1.0]]))
    deltas = coder.encode(tf.where(is_valid(rois)[:, None], matched, safe), safe)
    keep = tf.where(sampled)[:, 0]
    return tf.gather(rois, keep), tf.gather(classes, keep), tf.gather(deltas, keep)


def pad_proposals(proposals, num):
    """float32 [N, num, 4] from a list of [P_i, 4] arrays (first ``num`` of
    each kept, the rest padded -1)."""
    out = np.full((len(proposals), max(1, int(num)), 4), PAD, np.float32)
    for i, p in enumerate(proposals):
        p = np.asarray(p, np.float32).reshape(-1, 4)[:num]
        out[i, :len(p)] = p
    return out


def make_rcnn_dataset(annotations, proposals, prep, mean_image, *, warp_size, view_side,
                      batch_size=256, regions_per_image=32, positive_fraction=0.25,
                      fg_iou=0.5, bg_iou=0.5, shuffle_images=64, seed=0, counter=None,
                      images=None, label_map=None, repeat=True, cache=False):
    """Batched ``(regions float32 [B, S, S, 3], {"classes": int32 [B],
    "deltas": float32 [B, 4]})`` for ``RegionClassifier.fit``.

    Args:
        annotations: ``ImageAnnotation`` list; boxes in original pixels.
        proposals: float32 [N, P, 4] per image, original pixels, padded -1
            (``pad_proposals``): the first stage's top boxes for the image's
            ground-truth class.
        prep: the classifier's ``Preprocessing`` (``flip``: mirrored regions,
            their x deltas negated).
        mean_image: float32 [Sm, Sm, 3] or None.
        warp_size: S; view_side: the region view's shorter side.
        batch_size: regions per batch (the paper: 256).
        regions_per_image: candidates sampled from an image each time it is
            drawn; positive_fraction: the most of them foreground.
        fg_iou / bg_iou: foreground at IoU >= fg_iou, background below
            bg_iou, ignored between.
        shuffle_images: regions of about this many images are mixed before
            batching.
        images: uint8 [N, H, W, 3] in memory instead of files (unreadable
            files are skipped and counted in ``counter``).
    Raises:
        ValueError: a batch size or sample size below 1, or ``proposals``
        not one row per annotation.
    """
    if batch_size < 1 or regions_per_image < 1:
        raise ValueError(f"batch_size and regions_per_image must be >= 1, got "
                         f"{batch_size} and {regions_per_image}.")
    proposals = np.asarray(proposals, np.float32)
    if proposals.ndim != 3 or proposals.shape[0] != len(annotations) or \
            proposals.shape[-1] != 4:
        raise ValueError(f"proposals must be float32 [N, P, 4] with N = {len(annotations)} "
                         f"images, got shape {proposals.shape}.")
    labels, boxes = pad_boxes(annotations, label_map)
    matcher = Matcher(fg_iou, bg_iou)
    coder = BoxCoder(HEAD_WEIGHTS)
    mean = None if mean_image is None or not prep.mean_subtraction else \
        tf.constant(mean_image, tf.float32)
    table = {"label": labels, "boxes": boxes, "proposals": proposals,
             "path": np.array([a.path for a in annotations])}
    if images is not None:
        ds = tf.data.Dataset.from_tensor_slices({**table, "image": images})
    else:
        ds = tf.data.Dataset.from_tensor_slices(table)
        ds = ds.map(graph_fn(lambda e: {**e, "image_bytes": tf.io.read_file(e["path"])}),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = decode_and_filter(ds, counter if counter is not None else SkipCounter())

    def regions(e, s):
        s_order, s_flip = augment.split_seed(s, 2)
        view, factor = region_view(e["image"], view_side)
        scale = tf.concat([factor, factor], 0)
        to_view = lambda b: tf.where(is_valid(b)[:, None], b * scale, PAD)  # noqa: E731
        rois, classes, deltas = region_targets(
            to_view(e["proposals"]), to_view(e["boxes"]), e["label"], matcher=matcher,
            coder=coder, num_samples=regions_per_image,
            positive_fraction=positive_fraction, seed=s_order)
        x = warp_regions(view, rois, warp_size, mean)
        if prep.flip:
            flip = tf.random.stateless_uniform([tf.shape(rois)[0]], s_flip) < 0.5
            x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
            deltas = tf.where(flip[:, None], deltas * [1.0, -1.0, 1.0, 1.0], deltas)
        return x, {"classes": classes, "deltas": deltas}

    ds = shuffled_repeated(ds, len(annotations), seed, cache=cache, repeat=repeat).map(
        graph_fn(regions), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.unbatch().shuffle(max(batch_size, shuffle_images * regions_per_image),
                              seed=seed + 1, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
