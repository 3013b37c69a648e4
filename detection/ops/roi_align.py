"""Region feature pooling: RoIAlign (He et al. 2017) and RoIPool (Girshick
2015), on TensorFlow's ``crop_and_resize``.

Boxes are internal-format pixels; ``spatial_scale`` maps pixels to feature
cells (1/16 for conv4_x).

RoIAlign follows torchvision's ``roi_align(..., aligned=True)`` and
detectron2's ``ROIAlignV2`` (``torchvision/csrc/ops/cpu/roi_align_kernel.cpp``,
``bilinear_interpolate``) exactly:

- a box edge at pixel y sits at feature coordinate ``y * spatial_scale -
  0.5`` (feature cell i is centred on coordinate i); the box is not widened
  to at least one cell;
- each of the ``output_size`` x ``output_size`` bins averages
  ``sampling_ratio`` x ``sampling_ratio`` bilinear samples at the centres of
  its sub-bins;
- a sample at (y, x) with ``-1 <= y <= H`` and ``-1 <= x <= W`` reads the
  map bilinearly with y clamped to [0, H - 1] and x to [0, W - 1], so within
  a cell of the border it repeats the edge feature; a sample further out
  (``y < -1``, ``y > H``, ``x < -1`` or ``x > W``) reads 0.

This matters for boxes wholly inside the image: a box touching the image's
edge puts its outer samples within half a cell of the map's border. Here
the map is padded by one edge-replicated cell a side and ``crop_and_resize``
samples it, whose zero extrapolation beyond the padded map is exactly the
"more than one cell outside" rule. RoIPool keeps reading 0 outside the map.
"""

import tensorflow as tf


def _sample_grid(boxes, spatial_scale, output_size, sampling_ratio, feature_hw, offset):
    """Normalised crop_and_resize boxes whose n = output_size * sampling_ratio
    samples sit at the bin sub-sample centres."""
    n = output_size * sampling_ratio
    start = boxes[..., :2] * spatial_scale - offset
    extent = (boxes[..., 2:] - boxes[..., :2]) * spatial_scale
    step = extent / n
    first = start + 0.5 * step
    last = start + (n - 0.5) * step
    denom = tf.cast(feature_hw, tf.float32) - 1.0
    return tf.concat([first / denom, last / denom], axis=-1)


def _crop(features, boxes, size, method, grid_fn):
    b = tf.shape(boxes)[0]
    r = tf.shape(boxes)[1]
    feature_hw = tf.shape(features)[1:3]
    norm = grid_fn(feature_hw)
    box_index = tf.repeat(tf.range(b), r)
    crops = tf.image.crop_and_resize(
        tf.cast(features, tf.float32), tf.reshape(norm, [-1, 4]), box_index,
        [size, size], method=method)
    return crops


def roi_align(features, boxes, output_size=14, spatial_scale=1 / 16, sampling_ratio=2):
    """RoIAlign, torchvision's ``aligned=True`` semantics (module docstring).

    Args:
        features: float [B, H, W, C] feature map (any float dtype; sampled in
            float32).
        boxes: float32 [B, R, 4] (ymin, xmin, ymax, xmax) internal-format
            pixels of the image the map was computed from.
        output_size: bins a side (int >= 1).
        spatial_scale: feature cells per pixel (1 / the map's stride).
        sampling_ratio: samples a side per bin (int >= 1; torchvision's
            adaptive ``sampling_ratio=0`` is not offered).
    Returns:
        [B * R, output_size, output_size, C] in ``features.dtype``,
        RoI-major (image b's RoIs are rows b*R .. b*R + R - 1).
    Raises:
        ValueError: ``output_size`` or ``sampling_ratio`` below 1.
    """
    if int(output_size) < 1 or int(sampling_ratio) < 1:
        raise ValueError(f"roi_align needs output_size >= 1 and sampling_ratio >= 1, "
                         f"got {output_size} and {sampling_ratio}.")
    n = output_size * sampling_ratio
    # One edge-replicated cell a side: feature coordinate y is padded y + 1,
    # so the grid's offset becomes 0.5 - 1.
    padded = tf.pad(tf.cast(features, tf.float32), [[0, 0], [1, 1], [1, 1], [0, 0]],
                    mode="SYMMETRIC")
    crops = _crop(padded, boxes, n, "bilinear",
                  lambda hw: _sample_grid(boxes, spatial_scale, output_size,
                                          sampling_ratio, hw, 0.5 - 1.0))
    if sampling_ratio > 1:
        crops = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    return tf.cast(crops, features.dtype)


def roi_pool(features, boxes, output_size=14, spatial_scale=1 / 16, samples_per_bin=4):
    """RoIPool: the box is snapped to whole feature cells (Fast R-CNN), split
    into ``output_size`` x ``output_size`` bins, and each bin takes the max
    over ``samples_per_bin``^2 nearest-cell samples spread over it (exactly
    the max over its cells when a bin spans at most that many cells a side).

    Returns float32 [B * R, output_size, output_size, C].
    """
    snapped = tf.round(boxes * spatial_scale) / spatial_scale
    # Cover cells [round(y0 s), round(y1 s)] inclusive, as Fast R-CNN does.
    snapped = tf.concat([snapped[..., :2], snapped[..., 2:] + 1 / spatial_scale], -1)
    n = output_size * samples_per_bin
    # Cell c covers [c, c + 1); nearest sampling rounds, so shift by half a
    # cell to read cell floor(y) at coordinate y.
    crops = _crop(features, snapped, n, "nearest",
                  lambda hw: _sample_grid(snapped, spatial_scale, output_size,
                                          samples_per_bin, hw, 0.5))
    crops = tf.nn.max_pool2d(crops, samples_per_bin, samples_per_bin, "VALID")
    return tf.cast(crops, features.dtype)
