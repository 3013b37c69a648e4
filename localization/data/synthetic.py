"""The embedded synthetic localization set: one shape class per image, one or
more boxes of it.

Drawn with ``resnet_tf.data.synthetic``'s pieces (renderer, colours, box
sampling and placement: the same shapes and textures as the synthetic
classification set, so a classifier trained on that set knows the
classes). Most images hold one shape, sized like the
classification set's (0.35 to 0.9 of the side); with probability
``multi_fraction`` an image holds 2..``max_objects`` smaller shapes of the
same class that do not overlap.
"""

import numpy as np

from resnet_tf.data import synthetic


def make_localization(num_images, size=32, seed=0, max_objects=2, multi_fraction=0.2,
                      min_scale=0.35, max_scale=0.9):
    """Returns ``(images uint8 [N, size, size, 3], labels int32 [N], boxes)``
    with ``boxes[i]`` float32 [n_i, 4] (ymin, xmin, ymax, xmax) pixels, the
    tight boxes of the painted shapes. Labels cycle through
    ``synthetic.SHAPES`` (balanced)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}.")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}.")
    rng = np.random.default_rng(seed)
    labels = np.arange(num_images, dtype=np.int32) % len(synthetic.SHAPES)
    rng.shuffle(labels)
    images = np.empty((num_images, size, size, 3), np.uint8)
    all_boxes = []
    for i in range(num_images):
        canvas = synthetic.render_background(rng, size)
        shape = synthetic.SHAPES[labels[i]]
        n = 1
        if max_objects > 1 and rng.random() < multi_fraction:
            n = int(rng.integers(2, max_objects + 1))
        lo, hi = (min_scale, max_scale) if n == 1 else (0.25, 0.45)
        boxes = []
        for _ in range(n):
            cand = synthetic.place_disjoint(rng, size, boxes, lo, hi, gap=1, attempts=30)
            if cand is not None:
                box = synthetic.render_shape(canvas, shape, cand,
                                             synthetic.contrasting_color(rng, canvas))
                if box is not None:
                    boxes.append(box)
        if not boxes:  # cannot happen for sizes >= 16, but never return an empty image
            boxes.append(synthetic.render_shape(canvas, shape, (2, 2, size - 2, size - 2),
                                                synthetic.contrasting_color(rng, canvas)))
        images[i] = canvas
        all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
    return images, labels, all_boxes
