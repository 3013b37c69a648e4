"""Shared box fixtures and numpy references for the detection tests.

Boxes are float32 [..., 4] (ymin, xmin, ymax, xmax) pixels, as inside the
package. The references are deliberately plain loops, independent of
``detection.ops.boxes``.
"""

import numpy as np


def np_(x):
    """A backend tensor (or anything array-like) as a numpy array."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))


def random_boxes(rng, n, size=200, sides=None):
    """float32 [n, 4]: corners uniform in [0, size), heights and widths
    uniform in ``sides`` (default ``(2, size / 2)``)."""
    lo, hi = sides or (2, size / 2)
    y0, x0 = rng.uniform(0, size, (2, n))
    h, w = rng.uniform(lo, hi, (2, n))
    return np.stack([y0, x0, y0 + h, x0 + w], -1).astype(np.float32)


def iou(a, b):
    """The IoU of two boxes (0 when their union has no area)."""
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(a, b):
    """float64 [len(a), len(b)]: every pair's IoU."""
    return np.array([[iou(p, q) for q in b] for p in a], np.float64).reshape(len(a), len(b))


def _bilinear_torchvision(f, y, x):
    """torchvision/csrc/ops/cpu/roi_align_kernel.cpp, bilinear_interpolate."""
    h, w = f.shape[:2]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(f.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_high = y_low = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_high = x_low = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * f[y_low, x_low] + hy * lx * f[y_low, x_high]
            + ly * hx * f[y_high, x_low] + ly * lx * f[y_high, x_high])


def roi_align_reference(f, box, out, scale, sr):
    """RoIAlign of one box, after torchvision's CPU kernel
    (roi_align_forward_kernel_impl) with aligned=True: float64 [out, out, C].

    f: [H, W, C] feature map; box: (ymin, xmin, ymax, xmax) image pixels;
    scale: feature pixels per image pixel (1/stride); sr: samples per bin
    side. Sample points outside [-1, H] x [-1, W] contribute zero."""
    y0, x0, y1, x1 = np.asarray(box, np.float64) * scale - 0.5
    bin_h, bin_w = (y1 - y0) / out, (x1 - x0) / out
    res = np.zeros((out, out, f.shape[-1]))
    for ph in range(out):
        for pw in range(out):
            acc = 0.0
            for iy in range(sr):
                y = y0 + ph * bin_h + (iy + 0.5) * bin_h / sr
                for ix in range(sr):
                    x = x0 + pw * bin_w + (ix + 0.5) * bin_w / sr
                    acc = acc + _bilinear_torchvision(f, y, x)
            res[ph, pw] = acc / (sr * sr)
    return res
