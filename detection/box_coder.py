"""Box regression targets: the R-CNN parameterisation (Girshick et al.).

    t_y = w_y (y - y_a) / h_a,   t_x = w_x (x - x_a) / w_a,
    t_h = w_h log(h / h_a),      t_w = w_w log(w / w_a),

with (y, x, h, w) box centres and sizes. Weights: (1, 1, 1, 1) for the RPN
and (10, 10, 5, 5) for the detection head (detectron2's and torchvision's
values). Decoding clips t_h / w_h and t_w / w_w at log(1000 / 16), so a wild
prediction cannot overflow ``exp``.
"""

import math

from keras import ops

RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
SCALE_CLIP = math.log(1000.0 / 16)


def _center_size(boxes):
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * h, boxes[..., 1] + 0.5 * w, h, w


class BoxCoder:
    """Encode boxes relative to reference boxes (anchors or proposals).

    Args:
        weights: (w_y, w_x, w_h, w_w).
        scale_clip: the largest log size ratio ``decode`` applies.
    """

    def __init__(self, weights=RPN_WEIGHTS, scale_clip=SCALE_CLIP):
        if len(weights) != 4 or min(weights) <= 0:
            raise ValueError(f"weights must be 4 positive numbers, got {weights}.")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clip = float(scale_clip)

    def encode(self, boxes, anchors):
        """float32 [..., 4] deltas (t_y, t_x, t_h, t_w) of ``boxes`` [..., 4]
        w.r.t. ``anchors`` [..., 4] (internal format, broadcastable). Both
        must have positive sizes."""
        wy, wx, wh, ww = self.weights
        ya, xa, ha, wa = _center_size(anchors)
        y, x, h, w = _center_size(boxes)
        return ops.stack([wy * (y - ya) / ha, wx * (x - xa) / wa,
                          wh * ops.log(h / ha), ww * ops.log(w / wa)], axis=-1)

    def decode(self, deltas, anchors):
        """Boxes [..., 4] (internal format) from ``deltas`` and ``anchors``."""
        wy, wx, wh, ww = self.weights
        ya, xa, ha, wa = _center_size(anchors)
        dy, dx = deltas[..., 0] / wy, deltas[..., 1] / wx
        dh = ops.minimum(deltas[..., 2] / wh, self.scale_clip)
        dw = ops.minimum(deltas[..., 3] / ww, self.scale_clip)
        y, x = ya + dy * ha, xa + dx * wa
        h, w = ha * ops.exp(dh), wa * ops.exp(dw)
        return ops.stack([y - 0.5 * h, x - 0.5 * w, y + 0.5 * h, x + 0.5 * w], axis=-1)
