"""Small PIL charts and box drawings for the demo, the notebooks and the
``--draw`` options of the CLI (matplotlib and OpenCV are not dependencies).

    img = line_chart({"train": [2.1, 1.4, 0.9], "val": [2.0, 1.6, 1.2]},
                     title="loss", xlabel="epoch")
    img.save("loss.png")                     # a PIL.Image.Image
    side_by_side([img, other]).save("curves.png")
    training_curves(history, "ResNet-18", "curves.png")   # loss | error panels
    draw_boxes(image, boxes, ["cat 0.91"]).save("boxes.png")  # yxyx pixel boxes

Notebooks show the returned images with ``IPython.display.display(img)``.
"""

import math

from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
          (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]
WHITE, BLACK, GRID = (255, 255, 255), (0, 0, 0), (225, 225, 225)
# Box outlines: red first (predictions), then one colour per class or rank.
BOX_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def _font():
    return ImageFont.load_default()


def _nice_ticks(lo, hi, n=5):
    """About ``n`` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 0.5:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v):
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.1e}"
    return f"{v:.3g}"


def line_chart(series, title="", xlabel="epoch", ylabel="", size=(560, 380), x=None,
               log_y=False, hlines=None):
    """A line chart of one or more series, as a PIL image.

    Args:
        series: ``{name: [y0, y1, ...]}``; ``None``/NaN values are skipped.
        x: shared x values (default 1, 2, ..., the epoch numbers).
        log_y: logarithmic y axis (positive values only).
        hlines: ``{name: y}`` dashed horizontal reference lines (baselines).
    Returns:
        ``PIL.Image.Image`` (RGB).
    """
    series = {k: [None if v is None or not math.isfinite(float(v)) else float(v)
                  for v in vals] for k, vals in series.items() if len(vals)}
    hlines = {k: float(v) for k, v in (hlines or {}).items() if v is not None}
    if not series:
        raise ValueError("line_chart needs at least one non-empty series.")
    n = max(len(v) for v in series.values())
    xs = list(x) if x is not None else list(range(1, n + 1))
    w, h = size
    left, right, top, bottom = 64, 16, 30, 44
    img = Image.new("RGB", size, WHITE)
    d = ImageDraw.Draw(img)
    font = _font()

    def ty(v):
        return math.log10(v) if log_y else v

    ys = [ty(v) for vals in series.values() for v in vals
          if v is not None and (v > 0 or not log_y)]
    ys += [ty(v) for v in hlines.values() if v > 0 or not log_y]
    if not ys:
        raise ValueError("line_chart: no plottable values (all None/NaN, or <= 0 on a "
                         "log axis).")
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.05 or 0.5
    y_lo, y_hi = y_lo - pad, y_hi + pad
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    pw, ph = w - left - right, h - top - bottom

    def px(xv):
        return left + (xv - x_lo) / (x_hi - x_lo) * pw

    def py(yv):
        return top + (1 - (yv - y_lo) / (y_hi - y_lo)) * ph

    for t in _nice_ticks(y_lo, y_hi):
        if y_lo <= t <= y_hi:
            yy = py(t)
            d.line([(left, yy), (w - right, yy)], fill=GRID)
            label = _fmt(10 ** t) if log_y else _fmt(t)
            d.text((4, yy - 6), label, fill=BLACK, font=font)
    for t in _nice_ticks(x_lo, x_hi, n=min(8, max(1, len(xs) - 1))):
        if x_lo <= t <= x_hi:
            xx = px(t)
            d.line([(xx, top), (xx, top + ph)], fill=GRID)
            d.text((xx - 6, top + ph + 4), _fmt(t), fill=BLACK, font=font)
    d.rectangle([left, top, left + pw, top + ph], outline=BLACK)
    for i, (name, v) in enumerate(hlines.items()):
        if log_y and v <= 0:
            continue
        yy = py(ty(v))
        color = (110, 110, 110)
        for xx in range(left, left + pw, 10):
            d.line([(xx, yy), (min(xx + 5, left + pw), yy)], fill=color, width=2)
        d.text((left + pw - 6 * len(name) - 4, yy - 13), name, fill=color, font=font)
    for i, (name, vals) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        pts = [(px(xs[j]), py(ty(v))) for j, v in enumerate(vals)
               if v is not None and (v > 0 or not log_y) and j < len(xs)]
        if len(pts) > 1:
            d.line(pts, fill=color, width=2)
        for p in pts:
            d.ellipse([p[0] - 2.5, p[1] - 2.5, p[0] + 2.5, p[1] + 2.5], fill=color)
    # legend, top right inside the plot
    lx, ly = left + 8, top + 6
    widest = max(len(str(n)) for n in series) * 6 + 26
    d.rectangle([lx - 4, ly - 3, lx + widest, ly + 13 * len(series)], fill=WHITE,
                outline=GRID)
    for i, name in enumerate(series):
        color = COLORS[i % len(COLORS)]
        d.line([(lx, ly + 6), (lx + 16, ly + 6)], fill=color, width=3)
        d.text((lx + 20, ly), name, fill=BLACK, font=font)
        ly += 13
    d.text((left, 8), title, fill=BLACK, font=font)
    d.text((left + pw // 2 - 3 * len(xlabel), h - 16), xlabel, fill=BLACK, font=font)
    if ylabel:
        d.text((4, 8), ylabel, fill=BLACK, font=font)
    return img


def side_by_side(images, gap=8):
    """Paste PIL images left to right on a white canvas."""
    images = [im for im in images if im is not None]
    if not images:
        raise ValueError("side_by_side needs at least one image.")
    w = sum(im.width for im in images) + gap * (len(images) - 1)
    h = max(im.height for im in images)
    out = Image.new("RGB", (w, h), WHITE)
    x = 0
    for im in images:
        out.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return out


def grid(images, columns=4, gap=4, captions=None):
    """PIL images (or uint8 [H, W, 3] arrays) in a grid, optional captions."""
    import numpy as np

    ims = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, np.uint8))
           for im in images]
    if not ims:
        raise ValueError("grid needs at least one image.")
    cw, ch = max(i.width for i in ims), max(i.height for i in ims)
    cap = 14 if captions else 0
    rows = math.ceil(len(ims) / columns)
    out = Image.new("RGB", (columns * (cw + gap) - gap, rows * (ch + cap + gap) - gap), WHITE)
    d = ImageDraw.Draw(out)
    for k, im in enumerate(ims):
        r, c = divmod(k, columns)
        x, y = c * (cw + gap), r * (ch + cap + gap)
        out.paste(im.convert("RGB"), (x, y))
        if captions:
            d.text((x + 1, y + ch + 1), str(captions[k])[:max(4, cw // 6)], fill=BLACK,
                   font=_font())
    return out


def training_curves(history, title, path=None, loss_keys=None, error_keys=None,
                    baselines=None):
    """Loss and error per epoch, two panels side by side.

    Args:
        history: ``{metric: [per-epoch values]}`` (a Keras ``History.history``).
        loss_keys: the loss series (default: every key containing "loss").
        error_keys: ``{label: [per-epoch errors]}``; default: ``1 - top1`` and
            ``1 - val_top1`` when present.
        baselines: ``{name: value}`` dashed lines on the error panel.
        path: also write the PNG here.
    Returns:
        the PIL image.
    """
    loss_keys = loss_keys or [k for k in history if "loss" in k]
    losses = {k: history[k] for k in loss_keys if k in history}
    if error_keys is None:
        error_keys = {f"{p}top-1 error": [1 - v for v in history[f"{p}top1"]]
                      for p in ("", "val_") if f"{p}top1" in history}
    panels = [line_chart(losses, title=f"{title}: loss")] if losses else []
    if error_keys:
        panels.append(line_chart(error_keys, title=f"{title}: error", hlines=baselines))
    img = side_by_side(panels)
    if path:
        img.save(path)
    return img


def draw_boxes(image, boxes, labels=(), colors=(), scale=1, width=2, label_inside=False):
    """``image`` enlarged ``scale`` times with ``boxes`` outlined and labelled.

    The one box drawer of the package: the demo's pictures, the notebooks,
    ``detection.evaluate.draw_detections`` and
    ``localization.evaluate.draw_localizations`` all draw with it.

    Args:
        image: uint8 [H, W, 3] (array, tensor with ``__array__``, or PIL).
        boxes: [N, 4] (ymin, xmin, ymax, xmax) in pixels of ``image``
            (continuous: pixel k spans [k, k + 1)).
        labels: up to N strings; empty or missing ones draw no text.
        colors: up to N RGB triples; missing ones are ``BOX_COLORS[0]`` (red).
        scale: integer enlargement (nearest neighbour), for tiny images.
        width: outline width in pixels of the output.
        label_inside: text just inside the box's top-left corner; else just
            above the box (inside the image where the box touches the top).
    Returns:
        ``PIL.Image.Image`` (RGB), ``scale * H`` by ``scale * W``.
    """
    import numpy as np

    im = Image.fromarray(np.asarray(image, np.uint8))
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    for i, b in enumerate(boxes):
        y0, x0, y1, x1 = (float(v) * scale for v in b)
        color = tuple(colors[i]) if i < len(colors) else BOX_COLORS[0]
        d.rectangle([x0, y0, x1, y1], outline=color, width=width)
        if i < len(labels) and labels[i]:
            d.text((x0 + 2, y0 + 1 if label_inside else max(0, y0 - 11)), str(labels[i]),
                   fill=color)
    return im
