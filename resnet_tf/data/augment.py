"""The paper's training augmentation, as stateless graph-mode ops.

ImageNet (Sec. 3.4): "The image is resized with its shorter side randomly
sampled in [256, 480] for scale augmentation. A 224x224 crop is randomly
sampled from an image or its horizontal flip, with the per-pixel mean
subtracted. The standard color augmentation in [21] is used."

    seeds = split_seed(seed, 4)
    image = random_resized_scale(image, seeds[0])        # float32, shorter side s
    image = random_crop(image, seeds[1], 224)
    image = random_flip(image, seeds[2])
    image = pca_color(image, seeds[3])

CIFAR-10 (Sec. 4.2): "4 pixels are padded on each side, and a 32x32 crop is
randomly sampled from the padded image or its horizontal flip":
``pad_and_crop`` then ``random_flip``.

Every random op is stateless: it takes ``seed``, an int32 or int64 tensor of
shape [2] (as ``tf.random.stateless_uniform`` does), and its output is a
deterministic function of the image and the seed. Derive independent seeds
for the ops of one element with ``split_seed``; derive per-element seeds from
a global one with e.g. ``tf.data.Dataset.random(seed).batch(2)`` zipped in.

Images are HWC, RGB, 3 channels. All functions are graph-mode TensorFlow
(no Python control flow on tensor values), usable inside ``Dataset.map``.
"""

import tensorflow as tf

# Sec. 3.4: shorter side sampled in [256, 480].
SCALE_MIN, SCALE_MAX = 256, 480

# The ImageNet RGB pixel covariance's eigen-decomposition used for AlexNet's
# colour augmentation ([21], Sec. 4.1), as published with fb.resnet.torch
# (datasets/imagenet.lua) for images in [0, 1]; the eigenvalues here are
# those times 255, for images in [0, 255]. Columns of the eigenvector matrix
# are the eigenvectors p_i.
IMAGENET_EIGVAL = (55.46, 4.794, 1.148)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# [21]: alpha_i drawn from a Gaussian with mean zero and std 0.1.
PCA_STD = 0.1


def split_seed(seed, n):
    """``n`` independent seeds derived from one.

    Args:
        seed: int32/int64 [2].
        n: Python int.

    Returns:
        A Python list of ``n`` tensors, each of ``seed``'s dtype, shape [2]
        (a list, because iterating a symbolic tensor is not allowed in graph
        mode).
    """
    seeds = tf.random.experimental.stateless_split(seed, num=n)
    return tf.unstack(seeds, num=n)


def resize_shorter_side(image, size):
    """Resize so the shorter side is ``size``, keeping the aspect ratio.

    Args:
        image: [H, W, 3], any real dtype (uint8 in [0, 255] typically).
        size: int or int scalar tensor, the new shorter side.

    Returns:
        float32 [H', W', 3], in the input's value range, with
        ``min(H', W') == size`` and the longer side ``round(longer * size /
        shorter)`` (half to even). Bilinear, half-pixel centres, no
        antialiasing (downscaling aliases slightly, as in the usual
        Caffe/Torch pipelines).
    """
    image = tf.convert_to_tensor(image)
    new_size = _shorter_side_target(tf.shape(image), size)
    resized = tf.image.resize(image, new_size, method="bilinear", antialias=False)
    return tf.ensure_shape(tf.cast(resized, tf.float32), [None, None, 3])


def _shorter_side_target(shape, size):
    """int32 [2]: (H', W') with the shorter side ``size`` (see above)."""
    height = tf.cast(shape[0], tf.float64)
    width = tf.cast(shape[1], tf.float64)
    target = tf.cast(size, tf.float64)
    scale = target / tf.minimum(height, width)
    # Pin the shorter side to exactly `size`; rounding only touches the other.
    new_height = tf.where(height <= width, target, tf.round(height * scale))
    new_width = tf.where(height <= width, tf.round(width * scale), target)
    return tf.cast(tf.stack([new_height, new_width]), tf.int32)


def shorter_side_size(shape, size):
    """int32 [2], the (H', W') ``resize_shorter_side(image, size)`` gives an
    image of ``shape`` (int [>=2], (H, W, ...)), without resizing it."""
    return _shorter_side_target(shape, size)


def resized_crop(image, size, offset, crop):
    """A ``crop`` x ``crop`` window of the image resized to ``size``, resampling
    only that window.

    Equal (to float32 rounding of the sample positions: within 0.01 of a
    uint8 level for photo sizes, 0.06 for a 4000 x 3000 image) to
    ``tf.slice(tf.image.resize(image, size, "bilinear"), [*offset, 0],
    [crop, crop, 3])``: bilinear, half-pixel centres, no antialiasing, edge
    pixels repeated. But the work and memory are those of the output plus
    the source rows and columns it reads (one ``ScaleAndTranslate`` with the
    triangle kernel, which is bilinear interpolation, on a source window with
    a one-pixel margin): a 33 x 500 image cropped from its shorter-side-256
    resize never builds the 256 x 3879 intermediate, so the cost does not grow
    with a pathological aspect ratio.

    Args:
        image: [H, W, 3], any real dtype.
        size: int32 [2], the (H', W') the image is (virtually) resized to.
        offset: int32 [2], the window's (top, left) in the resized image,
            with ``0 <= offset <= size - crop``.
        crop: Python int.

    Returns:
        float32 [crop, crop, 3], in the input's value range.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)[:2]
    scale = tf.cast(size, tf.float32) / tf.cast(shape, tf.float32)
    offset = tf.cast(offset, tf.float32)
    # Source coordinates (pixel centres at integers) of the first and last
    # output pixel; bilinear reads floor and ceil of each, hence the margin.
    first = (offset + 0.5) / scale - 0.5
    last = (offset + crop - 0.5) / scale - 0.5
    lo = tf.clip_by_value(tf.cast(tf.floor(first), tf.int32) - 1, 0, shape - 1)
    hi = tf.clip_by_value(tf.cast(tf.math.ceil(last), tf.int32) + 1, 0, shape - 1)
    # Not cast first: ScaleAndTranslate reads any real dtype and writes float32
    # (casting a large downscaled window would cost more than the resampling).
    window = image[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1]
    # ScaleAndTranslate samples window coordinate (i + 0.5 - t) / scale - 0.5
    # for output pixel i: t = lo * scale - offset puts it at source row
    # (i + offset + 0.5) / scale - 0.5, the full resize's sample.
    out = tf.raw_ops.ScaleAndTranslate(
        images=window[None], size=tf.constant([crop, crop], tf.int32), scale=scale,
        translation=tf.cast(lo, tf.float32) * scale - offset, kernel_type="triangle",
        antialias=False)
    return tf.ensure_shape(out[0], [crop, crop, 3])


def random_resized_crop_offset(size, seed, crop):
    """int32 [2], the (top, left) ``tf.image.stateless_random_crop(resized,
    [crop, crop, 3], seed)`` takes from an image of ``size`` (int32 [2]):
    the same draw, so ``resized_crop(image, size, offset, crop)`` is that crop
    of ``tf.image.resize(image, size)`` (to float rounding)."""
    limit = tf.concat([tf.cast(size, tf.int32) - crop + 1, [1]], 0)
    draw = tf.random.stateless_uniform([3], seed, maxval=tf.int32.max, dtype=tf.int32)
    return (draw % limit)[:2]


def _random_shorter_side(seed, min_size, max_size):
    return tf.random.stateless_uniform([], seed, minval=min_size, maxval=max_size + 1,
                                       dtype=tf.int32)


def random_resized_scale(image, seed, min_size=SCALE_MIN, max_size=SCALE_MAX):
    """Scale augmentation (Sec. 3.4): shorter side to a random integer s.

    Args:
        image: [H, W, 3], any real dtype.
        seed: int32/int64 [2].
        min_size, max_size: s is uniform over the integers in
            [min_size, max_size], both ends included.

    Returns:
        float32 [H', W', 3] with ``min(H', W') == s`` (see
        ``resize_shorter_side``).
    """
    return resize_shorter_side(image, _random_shorter_side(seed, min_size, max_size))


def _scale_crop_draws(shape, scale_seed, crop_seed, size, min_size, max_size):
    """The random choices of a scale-augmented crop, for an image of ``shape``.

    Returns ``(scale, offset, first, last)``: float32 [2] per-axis factors
    (resized / original), float32 [2] top-left corner of the crop in the
    resized image, and float32 [2] source coordinates sampled by the crop's
    first and last pixels.
    """
    s = _random_shorter_side(scale_seed, min_size, max_size)
    target = _shorter_side_target(shape, s)
    oy_seed, ox_seed = split_seed(crop_seed, 2)
    oy = tf.random.stateless_uniform([], oy_seed, 0, target[0] - size + 1, tf.int32)
    ox = tf.random.stateless_uniform([], ox_seed, 0, target[1] - size + 1, tf.int32)
    scale = tf.cast(target, tf.float32) / tf.cast(shape, tf.float32)
    offset = tf.cast(tf.stack([oy, ox]), tf.float32)
    first = (offset + 0.5) / scale - 0.5
    last = (offset + size - 0.5) / scale - 0.5
    return scale, offset, first, last


def scale_crop_geometry(shape, scale_seed, crop_seed, size, min_size=SCALE_MIN,
                        max_size=SCALE_MAX):
    """Where ``random_scale_crop`` with these seeds puts its crop, for boxes.

    Args:
        shape: int32 [2], the source image's (height, width).
    Returns:
        ``(scale, offset)``: float32 [2] per-axis factors (resized / source)
        and float32 [2] the crop's top-left corner in the resized image, so
        a source point p lands at ``p * scale - offset`` in the crop.
    """
    scale, offset, _, _ = _scale_crop_draws(shape, scale_seed, crop_seed, size,
                                            min_size, max_size)
    return scale, offset


def _window(shape, scale, first, last):
    """int32 [2] ``lo`` and ``hi``: the source rows/cols (inclusive) a crop
    needs, with a margin of ceil(1 / scale) for the resampling, clamped."""
    margin = tf.cast(tf.math.ceil(1.0 / scale), tf.int32)
    lo = tf.maximum(tf.cast(tf.floor(first), tf.int32) - margin, 0)
    hi = tf.minimum(tf.cast(tf.math.ceil(last), tf.int32) + margin, shape - 1)
    return lo, hi


def _resize_window_crop(window, lo, scale, offset, size):
    """Resize a source window by ``scale`` and cut the crop out of it.

    The window (rows/cols ``lo``.. of the source) is resized to
    ``round(window_size * scale)`` and the crop taken at the nearest integer
    position, so the result equals resizing the whole image and cropping up
    to a sub-pixel shift (at most half a resized pixel) and a scale rounded
    to the window's integer size. ``ResizeBilinear`` on the window is ~2.5x
    faster than ``ScaleAndTranslate``, which would be exact.
    """
    win = tf.shape(window)[:2]
    out = tf.cast(tf.round(tf.cast(win, tf.float32) * scale), tf.int32)
    out = tf.maximum(out, size)
    resized = tf.image.resize(window, out, method="bilinear", antialias=False)
    start = tf.cast(tf.round(offset - tf.cast(lo, tf.float32) * scale), tf.int32)
    start = tf.clip_by_value(start, 0, out - size)
    crop = tf.slice(resized, tf.concat([start, [0]], 0), [size, size, 3])
    return tf.ensure_shape(tf.cast(crop, tf.float32), [size, size, 3])


def random_scale_crop(image, scale_seed, crop_seed, size, min_size=SCALE_MIN,
                      max_size=SCALE_MAX):
    """Scale augmentation and a random crop in one resampling (Sec. 3.4).

    The shorter side's s is drawn as in ``random_resized_scale`` (same
    ``scale_seed``, same s) and the crop position uniformly, as a
    ``size`` x ``size`` crop of the image resized to s; but only a window
    around the crop is resampled (see ``_resize_window_crop``: equal to
    resize-then-crop up to half a pixel of shift), which is faster than
    resizing the whole image.

    Args:
        image: [H, W, 3], any real dtype.
        scale_seed, crop_seed: int32/int64 [2].
        size: Python int, the crop side; must be <= min_size.
    Returns:
        float32 [size, size, 3].
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)[:2]
    scale, offset, first, last = _scale_crop_draws(shape, scale_seed, crop_seed, size,
                                                   min_size, max_size)
    lo, hi = _window(shape, scale, first, last)
    window = image[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1]
    return _resize_window_crop(window, lo, scale, offset, size)


def random_crop(image, seed, size):
    """A random ``size`` x ``size`` window, every position equally likely.

    Args:
        image: [H, W, 3] with H, W >= size (else an InvalidArgumentError).
        seed: int32/int64 [2].
        size: Python int.

    Returns:
        [size, size, 3], the image's dtype and values.
    """
    return tf.image.stateless_random_crop(image, [size, size, 3], seed)


def random_flip(image, seed):
    """Mirror left-right with probability 1/2.

    Args:
        image: [H, W, 3], any dtype.
        seed: int32/int64 [2].

    Returns:
        [H, W, 3], the image or its mirror, same dtype.
    """
    return tf.image.stateless_random_flip_left_right(image, seed)


def pca_color(image, seed, std=PCA_STD, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC):
    """AlexNet's PCA colour augmentation ([21] Sec. 4.1, used in Sec. 3.4).

    Adds ``sum_i alpha_i * eigval[i] * eigvec[:, i]`` to every pixel, with
    ``alpha = tf.random.stateless_normal([3], seed, stddev=std)``: one RGB
    offset per image, along the principal components of ImageNet colours.

    Args:
        image: float32 [H, W, 3], RGB in [0, 255] (the scale the default
            eigenvalues are for).
        seed: int32/int64 [2].
        std: standard deviation of alpha (0.1 in [21]).
        eigval: [3] eigenvalues lambda_i.
        eigvec: [3, 3] whose columns are the eigenvectors p_i.

    Returns:
        float32 [H, W, 3]. Not clipped: values may leave [0, 255] slightly
        (an offset of a few units), which the network's input doesn't mind
        and clipping would distort.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    alpha = tf.random.stateless_normal([3], seed, stddev=std, dtype=tf.float32)
    eigval = tf.constant(eigval, tf.float32)
    eigvec = tf.constant(eigvec, tf.float32)
    offset = tf.linalg.matvec(eigvec, alpha * eigval)  # [3], RGB
    return image + offset


def pad_and_crop(image, seed, pad=4, size=32):
    """CIFAR augmentation (Sec. 4.2): zero-pad ``pad`` pixels, random crop.

    The padding is zeros in the image's own value space: before mean
    subtraction that is black, after it the mean colour.

    Args:
        image: [H, W, 3] (32 x 32 for CIFAR), any dtype.
        seed: int32/int64 [2].
        pad: pixels added on each of the four sides.
        size: side of the square crop; H + 2 * pad >= size.

    Returns:
        [size, size, 3], the image's dtype: a window of the padded image.
    """
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, [size, size, 3], seed)


def subtract_mean(image, mean_image):
    """Per-pixel mean subtraction (Sec. 3.4, "with the per-pixel mean
    subtracted").

    Args:
        image: float32 [H, W, 3].
        mean_image: float32 [Hm, Wm, 3], the training set's mean image.

    Returns:
        float32 [H, W, 3], ``image - mean_image``. If the sizes differ, the
        mean image is first resized (bilinear) to [H, W]; this serves the
        fully-convolutional views of other sizes (Sec. 3.4, multi-scale
        testing). For training crops, subtracting the mean from the image
        before cropping keeps the mean pixel-aligned instead.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    mean_image = tf.convert_to_tensor(mean_image, tf.float32)
    size = tf.shape(image)[:2]
    same_size = tf.reduce_all(tf.equal(tf.shape(mean_image)[:2], size))
    mean = tf.cond(same_size, lambda: mean_image,
                   lambda: tf.image.resize(mean_image, size, method="bilinear"))
    return image - mean
