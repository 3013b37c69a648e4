"""Evaluation views (Sec. 3.4, "In testing").

- Single centre crop: shorter side 256, the central 224 x 224 (the paper's
  single-crop numbers, Table 2 and 3 "10-crop" aside).
- 10-crop testing ([21]): the four corners and the centre of the resized
  image, and their horizontal mirrors; the scores of the 10 are averaged.
- Fully-convolutional multi-scale testing: "the image is resized such that
  the shorter side is in {224, 256, 384, 480, 640}", the whole image is
  scored at each scale and the scores averaged. The views keep the image's
  aspect ratio, so their sizes differ; they can't be stacked, and a model
  needs a global pooling to take them.

All views are float32 in the input's value range (uint8 [0, 255] in gives
[0, 255] out); subtract the mean afterwards. Graph-mode TensorFlow: any
input size (height, width >= 1, e.g. 20 x 20, 36 x 36, 33 x 500) works with
shapes unknown until run time, as in ``tf.data`` and the serving signatures.

Memory: the crop views (centre, 10-crop) resample only the windows they
return (``augment.resized_crop``), so their work and memory are bounded by
the output (plus the source rows and columns read), never by the resized
whole image: a 33 x 500 image is not first resized to 256 x 3879. The
multi-scale views are whole images; each costs its own size, h_s x w_s, and
nothing larger is built.
"""

import tensorflow as tf

from resnet_tf.data.augment import resize_shorter_side, resized_crop, shorter_side_size

# Sec. 3.4: multi-scale testing scales.
MULTISCALE_SIZES = (224, 256, 384, 480, 640)


def _check_sizes(resize, crop):
    if crop > resize:
        raise ValueError(f"crop {crop} is larger than the resized shorter side {resize}; "
                         "use crop <= resize (the paper: resize 256, crop 224).")


def center_crop_view(image, resize=256, crop=224):
    """The centre ``crop`` x ``crop`` of the image resized to shorter side ``resize``.

    Args:
        image: [H, W, 3], any real dtype.
        resize, crop: Python ints, crop <= resize.

    Returns:
        float32 [crop, crop, 3]. When the margin is odd the extra pixel is
        on the bottom/right (offset ``(side - crop) // 2``). Only the crop
        is resampled (memory bounded by the crop, see the module docstring).
    """
    _check_sizes(resize, crop)
    size = shorter_side_size(tf.shape(image), resize)
    return resized_crop(image, size, (size - crop) // 2, crop)


def ten_crop_views(image, resize=256, crop=224):
    """10-crop testing ([21], Sec. 3.4).

    Args:
        image: [H, W, 3], any real dtype.
        resize, crop: Python ints, crop <= resize.

    Returns:
        float32 [10, crop, crop, 3], in torchvision's ``TenCrop`` order:
        top-left, top-right, bottom-left, bottom-right, centre of the image
        resized to shorter side ``resize``, then the left-right mirror of
        each of those five in the same order (the mirror of the top-left
        crop is the top-right crop of the mirrored image).
    """
    _check_sizes(resize, crop)
    size = shorter_side_size(tf.shape(image), resize)
    bottom, right = size[0] - crop, size[1] - crop
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    crops = [resized_crop(image, size, tf.stack([top, left]), crop) for top, left in corners]
    crops += [tf.reverse(view, axis=[1]) for view in crops]
    return tf.ensure_shape(tf.stack(crops), [10, crop, crop, 3])


def multiscale_views(image, scales=MULTISCALE_SIZES, flip=False):
    """Whole-image views at several scales, for fully-convolutional testing.

    Args:
        image: [H, W, 3], any real dtype.
        scales: Python ints, the shorter sides (Sec. 3.4:
            {224, 256, 384, 480, 640}).
        flip: also give each view's left-right mirror.

    Returns:
        A Python list of float32 [h_s, w_s, 3] tensors, ``min(h_s, w_s) ==
        s``, aspect ratio kept: one per scale, or with ``flip`` two per
        scale in scale-major order ``[s0, mirror(s0), s1, mirror(s1), ...]``.
        Each view is resized straight from the source: its memory is its
        own size (which, for a whole image, grows with the aspect ratio).
    """
    views = []
    for scale in scales:
        view = resize_shorter_side(image, scale)
        views.append(view)
        if flip:
            views.append(tf.reverse(view, axis=[1]))
    return views
