"""An embedded synthetic image set: shapes on textured backgrounds.

Generated at run time with numpy, deterministic from a seed, so the demo and
quick tests need no files. Each image holds one filled shape (the class) of
random colour, size, position and aspect on a random background texture
(stripes, checkers, smooth gradients, noise). The shape's bounding box is
returned too, so detection and localization can draw on the same renderer.

The pieces every synthetic set is made of live here once: ``SHAPES``,
``render_background``, ``render_shape``, ``contrasting_color``,
``sample_box`` (a shape's box at a random size, aspect and place) and
``place_disjoint`` (such a box clear of the boxes already placed). The
detection set (``detection.data.synthetic.make_detection``) and the
localization set (``localization.data.synthetic.make_localization``) are
built from them in their own packages.
"""

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")


def render_shape(canvas, shape, box, color):
    """Paint ``shape`` filling ``box`` onto ``canvas`` in place.

    Args:
        canvas: uint8 [H, W, 3].
        shape: one of ``SHAPES``.
        box: (ymin, xmin, ymax, xmax) in pixels, float.
        color: 3 ints in [0, 255].
    Returns:
        The tight (ymin, xmin, ymax, xmax) box of the painted pixels, in
        pixels (xmax/ymax exclusive), or None if nothing was painted.
    """
    h, w = canvas.shape[:2]
    y0, x0, y1, x1 = box
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    ry, rx = max((y1 - y0) / 2, 1.0), max((x1 - x0) / 2, 1.0)
    u, v = (xx - cx) / rx, (yy - cy) / ry  # [-1, 1] inside the box
    if shape == "circle":
        mask = u * u + v * v <= 1.0
    elif shape == "square":
        mask = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    elif shape == "triangle":  # apex up
        mask = (v <= 1) & (v >= -1) & (np.abs(u) <= (v + 1) / 2)
    elif shape == "cross":
        arm = 0.35
        mask = (((np.abs(u) <= arm) & (np.abs(v) <= 1))
                | ((np.abs(v) <= arm) & (np.abs(u) <= 1)))
    elif shape == "ring":
        r2 = u * u + v * v
        mask = (r2 <= 1.0) & (r2 >= 0.4)
    elif shape == "diamond":
        mask = np.abs(u) + np.abs(v) <= 1.0
    else:
        raise ValueError(f"Unknown shape {shape!r}; use one of {SHAPES}.")
    if not mask.any():
        return None
    canvas[mask] = color
    ys, xs = np.nonzero(mask)
    return (float(ys.min()), float(xs.min()), float(ys.max() + 1), float(xs.max() + 1))


def render_background(rng, size):
    """A random textured background, uint8 [size, size, 3]."""
    h = w = size
    kind = rng.integers(4)
    c0 = rng.integers(0, 256, 3).astype(np.float32)
    c1 = rng.integers(0, 256, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # stripes at a random angle and period
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, size / 2)
        t = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) + 1) / 2
    elif kind == 1:  # checkers
        cell = rng.integers(3, max(4, size // 4))
        t = ((yy // cell + xx // cell) % 2).astype(np.float32)
    elif kind == 2:  # smooth gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(angle) + yy * np.sin(angle))
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    else:  # blurred noise
        t = rng.random((h, w)).astype(np.float32)
        for _ in range(2):
            t = (t + np.roll(t, 1, 0) + np.roll(t, -1, 0) + np.roll(t, 1, 1)
                 + np.roll(t, -1, 1)) / 5
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def contrasting_color(rng, background):
    """A random colour far (L1 distance > 150) from the mean colour of
    ``background`` (uint8 [H, W, 3]); after 20 tries, the mean's complement.
    Returns an int64 [3] array of values in [0, 255]."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(20):
        color = rng.integers(0, 256, 3)
        if np.abs(color - mean).sum() > 150:
            return color
    return 255 - mean.astype(np.int64)


def sample_box(rng, size, min_scale, max_scale):
    """A random box for one shape in a ``size`` x ``size`` image.

    Its extent (the square root of its area) is uniform in ``[min_scale,
    max_scale] * size``, its aspect (height / width) uniform in [0.75,
    1.33], each side at most ``size - 1`` pixels, and its place uniform
    where it fits. Draws four numbers from ``rng``, always in the same order.

    Returns:
        (ymin, xmin, ymax, xmax) floats, pixels.
    """
    extent = rng.uniform(min_scale, max_scale) * size
    aspect = rng.uniform(0.75, 1.33)
    bh = min(extent * np.sqrt(aspect), size - 1)
    bw = min(extent / np.sqrt(aspect), size - 1)
    y0 = rng.uniform(0, size - bh)
    x0 = rng.uniform(0, size - bw)
    return (y0, x0, y0 + bh, x0 + bw)


def place_disjoint(rng, size, boxes, min_scale, max_scale, gap, attempts):
    """``sample_box`` until a box lies at least ``gap`` pixels clear of every
    box in ``boxes`` ((ymin, xmin, ymax, xmax) pixels), at most ``attempts``
    times; returns that box, or None if none of the attempts was clear."""
    for _ in range(attempts):
        cand = sample_box(rng, size, min_scale, max_scale)
        if all(cand[2] <= b[0] - gap or cand[0] >= b[2] + gap or cand[3] <= b[1] - gap
               or cand[1] >= b[3] + gap for b in boxes):
            return cand
    return None


def make_classification(num_images, size=32, seed=0, min_scale=0.35, max_scale=0.9):
    """A synthetic classification set.

    Args:
        num_images: how many images.
        size: image side in pixels.
        seed: everything is determined by it.
        min_scale, max_scale: shape extent as a fraction of the image side.
    Returns:
        ``(images, labels, boxes)``: uint8 [N, size, size, 3], int32 [N] in
        ``range(len(SHAPES))``, float32 [N, 4] (ymin, xmin, ymax, xmax) pixels.
        Labels cycle through the classes so every class is balanced.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}.")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}.")
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, size, size, 3), np.uint8)
    labels = np.arange(num_images, dtype=np.int32) % len(SHAPES)
    rng.shuffle(labels)
    boxes = np.zeros((num_images, 4), np.float32)
    for i in range(num_images):
        canvas = render_background(rng, size)
        box = None
        while box is None:
            box = render_shape(canvas, SHAPES[labels[i]],
                               sample_box(rng, size, min_scale, max_scale),
                               contrasting_color(rng, canvas))
        images[i] = canvas
        boxes[i] = box
    return images, labels, boxes
