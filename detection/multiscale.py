"""Multi-scale testing of the RoI head (Appendix B, after SPPnet, He et al.
2014): the trunk's C4 feature on an image pyramid, and for each RoI the two
adjacent pyramid levels whose head features are merged by maxout.

The pyramid resizes the whole padded input batch once per level: level l's
factor is ``scales[l] / S``, with ``S`` the largest shorter side
(``min(height, width)`` of ``image_sizes``) in the batch, which is the
preprocessing's shorter side for every image its ``max_side`` did not cap.
Boxes (ymin, xmin, ymax, xmax), float32 pixels of the input batch, map to a
level by multiplying by its per-axis factor (the resized size over the input
size, so rounding of the resized size is accounted for).

Scale selection (``select_scales``): a RoI's area at level l is its input
area times the level's two factors; its first level is the one whose area
is closest to ``target``\\ :sup:`2` (the detector's ``scale_target``;
by default ``TARGET_SIZE``, the network's 224 x 224 training crop, as in
the paper; a detector trained on other object sizes sets its own), and its
neighbour is the adjacent level on the other side of the
target: the next larger level when the RoI is smaller than the target there,
the next smaller one otherwise; at either end of the pyramid the only
adjacent level is taken. With one level, both are that level.

A level at the input's own scale (factor exactly 1 on both axes, which
happens when its shorter side is the batch's ``S``; known only at run time)
reuses the C4 the detector already computed for its proposals
(``pyramid_features``' ``input_features``) instead of running the trunk
again.

Pure functions; TensorFlow (``tf.image.resize``), like ``detection.ops``.
"""

from typing import NamedTuple

import tensorflow as tf

TARGET_SIZE = 224  # Sec. 3.4: the 224 x 224 crops the network was trained on


class FeaturePyramid(NamedTuple):
    """The trunk's feature at each pyramid level.

    features: tuple of L float [B, h_l, w_l, C] maps, smallest level first.
    factors: float32 [L, 2] (y, x) pixels of level l per input pixel.
    """

    features: tuple
    factors: tf.Tensor


def check_scales(scales):
    """``scales`` as a tuple of ints, or None for single-scale testing.

    Raises:
        ValueError: naming the value, when the shorter sides are not positive
            and strictly increasing (e.g. ``(200, 400, 600, 800, 1000)``).
    """
    if scales is None:
        return None
    given = scales
    if isinstance(scales, str):
        scales = [s for s in scales.split(",") if s.strip()]
    try:
        out = tuple(int(s) for s in scales)
    except (TypeError, ValueError) as e:
        raise ValueError(f"test_scales must be shorter sides in pixels, e.g. "
                         f"200,400,600,800,1000; got {given!r}.") from e
    if not out or out[0] < 1 or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"test_scales must be positive shorter sides in increasing order, "
                         f"e.g. 200,400,600,800,1000; got {given!r}.")
    return out


def check_target(target):
    """``target`` (the scale-selection side, pixels) as a float.

    Raises:
        ValueError: naming the value, when it is not a positive number
            (the paper's is 224).
    """
    try:
        value = float(target)
    except (TypeError, ValueError) as e:
        raise ValueError(f"scale_target must be a side in pixels > 0 (the paper's 224), "
                         f"got {target!r}.") from e
    if not value > 0 or value == float("inf"):
        raise ValueError(f"scale_target must be a side in pixels > 0 (the paper's 224), "
                         f"got {target!r}.")
    return value


def level_sizes(images, image_sizes, scales):
    """Each pyramid level's (height, width) and factors.

    Args:
        images: float [B, H, W, 3], the padded, preprocessed batch.
        image_sizes: float32 [B, 2] (height, width) before padding.
        scales: increasing shorter sides in pixels (``check_scales``).
    Returns:
        ``(sizes, factors)``: L float32 [2] (h_l, w_l) sizes (each side
        ``round(side * scales[l] / S)``, at least 1 pixel), and float32
        [L, 2] (y, x) factors ``h_l / H``, ``w_l / W``.
    """
    hw = tf.cast(tf.shape(images)[1:3], tf.float32)
    reference = tf.reduce_max(tf.reduce_min(tf.cast(image_sizes, tf.float32), axis=1))
    sizes = [tf.maximum(tf.round(hw * (float(s) / reference)), 1.0) for s in scales]
    return sizes, tf.stack([size / hw for size in sizes])


def pyramid_images(images, image_sizes, scales):
    """The input batch resized once per level.

    Args:
        images: float [B, H, W, 3], the padded, preprocessed batch.
        image_sizes: float32 [B, 2] (height, width) before padding.
        scales: increasing shorter sides in pixels (``check_scales``).
    Returns:
        ``(levels, factors)``: a list of L float32 [B, h_l, w_l, 3] batches
        (bilinear, each side at least 1 pixel), and float32 [L, 2] (y, x)
        factors ``h_l / H``, ``w_l / W`` (``level_sizes``).
    """
    sizes, factors = level_sizes(images, image_sizes, scales)
    return [_resize(images, size) for size in sizes], factors


def _resize(images, size):
    return tf.image.resize(tf.cast(images, tf.float32), tf.cast(size, tf.int32))


def pyramid_features(trunk, images, image_sizes, scales, input_features=None):
    """The trunk's feature on the pyramid of ``images``.

    Args:
        trunk: a callable, float32 [B, h, w, 3] -> [B, h', w', C] (the
            detector's trunk in inference mode).
        images, image_sizes, scales: as ``pyramid_images``.
        input_features: ``trunk(images)`` when already computed (the
            detector's C4 at the input scale), or None. A level whose size
            equals the input's on both axes (factor 1, decided at run time
            by ``tf.cond``) takes it instead of resizing and running the
            trunk again; the result is the same.
    Returns:
        a ``FeaturePyramid``.
    """
    sizes, factors = level_sizes(images, image_sizes, scales)
    hw = tf.cast(tf.shape(images)[1:3], tf.float32)
    features = []
    for size in sizes:
        run = lambda size=size: trunk(_resize(images, size))  # noqa: E731
        if input_features is None:
            features.append(run())
        else:
            features.append(tf.cond(tf.reduce_all(tf.equal(size, hw)),
                                    lambda: input_features, run))
    return FeaturePyramid(tuple(features), factors)


def scale_boxes(boxes, factor):
    """float32 [..., 4] (ymin, xmin, ymax, xmax) pixels times a (y, x)
    ``factor`` float32 [2]."""
    return boxes * tf.tile(tf.cast(factor, boxes.dtype), [2])


def select_scales(boxes, factors, target=TARGET_SIZE):
    """Each box's two adjacent pyramid levels (module docstring's rule).

    Args:
        boxes: float32 [..., 4] (ymin, xmin, ymax, xmax) input pixels.
        factors: float32 [L, 2] (y, x) per level, smallest level first.
        target: the side (pixels, > 0) whose square the scaled area should
            be closest to: the detector's ``scale_target`` (default 224).
    Returns:
        ``(first, second)``: int32 [...] level indices; ``first`` has the
        area closest to ``target``\\ :sup:`2`, ``second`` is its neighbour.
    """
    boxes = tf.cast(boxes, tf.float32)
    area = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * \
        tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    level_area = area[..., None] * tf.reduce_prod(tf.cast(factors, tf.float32), -1)
    goal = float(target) ** 2
    first = tf.argmin(tf.abs(level_area - goal), axis=-1, output_type=tf.int32)
    at_first = tf.gather(level_area, first, batch_dims=len(boxes.shape) - 1)
    last = tf.shape(factors)[0] - 1
    step = tf.where(at_first < goal, 1, -1)
    second = first + step
    second = tf.where((second < 0) | (second > last), first - step, second)
    return first, tf.clip_by_value(second, 0, last)


def take_levels(per_level, *indices):
    """For each index vector, row n of level ``index[n]``.

    Args:
        per_level: an iterable of L tensors [N, ...] (the same RoIs at each
            level), smallest level first; read once, in order, so a
            generator keeps only one level's tensor live besides the
            results.
        indices: int32 [N] vectors in [0, L).
    Returns:
        a tuple with one [N, ...] tensor per index vector (the rows chosen,
        by ``tf.where`` over the levels).
    """
    levels = iter(per_level)
    first = next(levels)
    out = [first for _ in indices]
    for level, rows in enumerate(levels, start=1):
        for i, index in enumerate(indices):
            pick = tf.reshape(tf.equal(index, level), [-1] + [1] * (len(rows.shape) - 1))
            out[i] = tf.where(pick, rows, out[i])
    return tuple(out)


def maxout(a, b):
    """Element-wise max of two [N, D] head features of the same RoIs at two
    scales (Appendix B's merge, before the sibling layers)."""
    return tf.maximum(a, b)
