"""Translation-invariant anchors (Faster R-CNN, Sec. 3.1 of Ren et al.).

Default: 3 scales (128, 256, 512 pixels: the box's sqrt(area)) x 3 aspect
ratios (height / width = 0.5, 1, 2) = 9 anchors at every cell of the
stride-16 conv4_x map. An anchor is centred on its cell at
``(i + offset) * stride`` pixels; with the backbone's symmetric padding a
stride-16 cell i is centred over input pixel 16 i, so ``offset`` defaults to
0 (as detectron2 does).
"""

import numpy as np
from keras import ops


class AnchorGenerator:
    """Anchors for a feature map, in the internal box format.

    Args:
        stride: feature map stride in pixels.
        scales: sqrt(area) of the anchors, in pixels.
        aspect_ratios: height / width.
        offset: cell centre offset in units of ``stride``.
    """

    def __init__(self, stride=16, scales=(128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0),
                 offset=0.0):
        if stride <= 0 or not scales or not aspect_ratios:
            raise ValueError(f"AnchorGenerator needs stride > 0 and at least one scale "
                             f"and ratio; got stride={stride}, scales={scales}, "
                             f"aspect_ratios={aspect_ratios}.")
        if min(scales) <= 0 or min(aspect_ratios) <= 0:
            raise ValueError(f"scales {scales} and aspect_ratios {aspect_ratios} must "
                             "be positive.")
        self.stride = stride
        self.scales = tuple(float(s) for s in scales)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.offset = float(offset)

    @property
    def num_anchors(self):
        """Anchors per feature-map cell."""
        return len(self.scales) * len(self.aspect_ratios)

    def cell_anchors(self):
        """float32 [A, 4]: the anchors of a cell centred at (0, 0), scales
        major, ratios minor."""
        rows = []
        for s in self.scales:
            for r in self.aspect_ratios:
                h, w = s * np.sqrt(r), s / np.sqrt(r)
                rows.append([-h / 2, -w / 2, h / 2, w / 2])
        return np.asarray(rows, np.float32)

    def __call__(self, height, width):
        """float32 [height * width * A, 4] anchors for a feature map of
        ``height`` x ``width`` cells, ordered (y, x, anchor) to match a conv
        head's ``[B, H, W, A * k]`` output reshaped to ``[B, H * W * A, k]``.
        ``height`` and ``width`` may be tensors (any input size)."""
        ys = (ops.arange(height, dtype="float32") + self.offset) * self.stride
        xs = (ops.arange(width, dtype="float32") + self.offset) * self.stride
        cy, cx = ops.meshgrid(ys, xs, indexing="ij")
        centers = ops.stack([cy, cx, cy, cx], axis=-1)  # [H, W, 4]
        anchors = centers[:, :, None, :] + ops.convert_to_tensor(self.cell_anchors())
        return ops.reshape(anchors, (-1, 4))
