"""The embedded synthetic detection set: 1..``max_objects`` shapes per image.

Drawn with ``resnet_tf.data.synthetic``'s pieces (the same shapes, textures
and colours as the synthetic classification set, so a classifier trained on
that set knows the classes): smaller shapes than the classification set's
(0.15 to 0.45 of the side), each placed at least 2 pixels clear of the
others, of random classes. Deterministic from a seed; needs no files.
"""

import numpy as np

from resnet_tf.data.synthetic import (SHAPES, contrasting_color, place_disjoint,
                                      render_background, render_shape)

__all__ = ["SHAPES", "make_detection"]


def make_detection(num_images, size=128, seed=0, max_objects=4, min_scale=0.15,
                   max_scale=0.45):
    """A synthetic detection set: 1..``max_objects`` shapes per image.

    Args:
        num_images: how many images.
        size: image side in pixels.
        seed: everything is determined by it.
        max_objects: the most shapes in one image (each image draws 1..this
            many; a shape with no clear place after 20 tries is left out).
        min_scale, max_scale: shape extent as a fraction of the image side.
    Returns:
        ``(images uint8 [N, size, size, 3], boxes, classes)`` where
        ``boxes[i]`` is float32 [n_i, 4] (ymin, xmin, ymax, xmax) pixels, the
        tight box of each shape's painted pixels (shapes never overlap), and
        ``classes[i]`` int32 [n_i] indices into ``SHAPES``.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, size, size, 3), np.uint8)
    all_boxes, all_classes = [], []
    for i in range(num_images):
        canvas = render_background(rng, size)
        boxes, classes = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            cand = place_disjoint(rng, size, boxes, min_scale, max_scale, gap=2,
                                  attempts=20)
            if cand is None:
                continue
            c = int(rng.integers(len(SHAPES)))
            box = render_shape(canvas, SHAPES[c], cand, contrasting_color(rng, canvas))
            if box is not None:
                boxes.append(box)
                classes.append(c)
        images[i] = canvas
        all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        all_classes.append(np.asarray(classes, np.int32))
    return images, all_boxes, all_classes
