"""Test a localizer fully convolutionally; ILSVRC errors; predict and draw.

Per image (Appendix C, "the network is applied on the image fully
convolutionally"): the whole image, shorter side resized to each test scale
(one scale: the classifier's crop size, 224; ``multiscale``: the
classifier's multi-scale set {224, 256, 384, 480, 640}, optionally with
flips), mean subtracted. The classifier's softmax, averaged over the views,
ranks the classes; for each of the top k, the best-scoring anchor of that
class's ``cls`` map over every view, regressed with its ``reg``, is the box
(mapped back to the original image). The ground-truth class gets the same
treatment for the oracle error.
"""

import os

import numpy as np
import tensorflow as tf

from localization.data.pipeline import pad_boxes, test_examples, test_views
from localization.data.sources import open_localization_source
from localization.metrics import localization_errors, oracle_error
from localization.model_dir import load_localizer
from resnet_tf.data.decode import SkipCounter, read_image_file
from resnet_tf.data.labels import label_map_for
from resnet_tf.evaluate import inference_function, merged_reasons, unreadable_error


CHUNK = 64  # evaluation images decoded and tested together
VIEW_PIXELS = 32 * 224 * 224  # the most input pixels one batched call may take


class Tester:
    """Whole-image testing of a loaded localizer (every image keeps its aspect
    ratio, so only images of one size share a batch: ``many``).

    Args:
        model: a ``Localizer``.
        prep: its ``Preprocessing``; mean_image: float32 [S, S, 3] or None.
        scales: test shorter sides; None: ``(prep.crop_size,)``, or
            ``prep.multiscale`` with ``multiscale``.
        flip: also test each view's mirror.
        top_k: classes localized per image.
    """

    def __init__(self, model, prep, mean_image=None, scales=None, multiscale=False,
                 flip=False, top_k=5):
        self.model, self.prep = model, prep
        self.mean = None if mean_image is None else tf.constant(mean_image, tf.float32)
        self.scales = tuple(int(s) for s in (scales or (prep.multiscale if multiscale
                                                       else (prep.crop_size,))))
        self.flip = bool(flip)
        self.top_k = min(int(top_k), model.num_classes)
        self._forward = inference_function(lambda x: (model.classify(x),
                                                       model.features(x)))
        self._localize = inference_function(lambda f, c, hw: model.localize(f, c, hw))

    def __call__(self, image, extra_classes=()):
        """Localize one uint8 [H, W, 3] image.

        Returns a dict: ``probabilities`` [C], ``classes`` [k] (ranked),
        ``scores`` [k], ``boxes`` [k, 4] (original pixels); and for
        ``extra_classes`` (e.g. the ground-truth class) ``extra_boxes`` [E, 4].
        """
        return self.many([image], [extra_classes])[0]

    def many(self, images, extra_classes=None, batch_size=32):
        """``[self(image, extra) for image, extra in zip(images, extra_classes)]``,
        with the images of one size (and the same number of extra classes)
        going through the network together, ``batch_size`` at a time (fewer
        when the largest view is big: at most ``VIEW_PIXELS`` input pixels a
        call): a synthetic or resized set costs a few calls instead of two
        per image.
        """
        extras = [np.asarray(e, np.int64).reshape(-1) for e in
                  (extra_classes if extra_classes is not None else [()] * len(images))]
        if len(extras) != len(images):
            raise ValueError(f"{len(extras)} extra_classes entries for {len(images)} images.")
        groups = {}
        for i, image in enumerate(images):
            key = (int(image.shape[0]), int(image.shape[1]), len(extras[i]))
            groups.setdefault(key, []).append(i)
        results = [None] * len(images)
        side = max(self.scales)
        for (h, w, _), idx in groups.items():
            # At most VIEW_PIXELS input pixels a call (the largest view's area).
            area = side * side * max(h, w) / max(1, min(h, w))
            step = max(1, min(int(batch_size), int(VIEW_PIXELS // area)))
            for start in range(0, len(idx), step):
                chunk = idx[start:start + step]
                for i, r in zip(chunk, self._same_size([images[i] for i in chunk],
                                                       np.stack([extras[i] for i in chunk]))):
                    results[i] = r
        return results

    def _same_size(self, images, extras):
        """Images of one size; ``extras`` int [N, E]."""
        n = len(images)
        views = [test_views(im, self.prep, self.mean, self.scales, self.flip) for im in images]
        # View v of every image has the same shape, factor and flip.
        batches = [(tf.concat([v[j][0] for v in views], 0),) + tuple(views[0][j][1:])
                   for j in range(len(views[0]))]
        outs = [self._forward(x) for x, _, _ in batches]
        probs = np.mean([np.asarray(p) for p, _ in outs], axis=0)  # [N, C]
        ranked = np.argsort(-probs, axis=1, kind="stable")[:, :self.top_k]
        classes = np.concatenate([ranked, extras], axis=1).astype(np.int32)
        h, w = int(images[0].shape[0]), int(images[0].shape[1])
        best_score = np.full(classes.shape, -np.inf)
        best_box = np.zeros(classes.shape + (4,), np.float32)
        for (x, factor, flipped), (_, feats) in zip(batches, outs):
            hw = tf.shape(x)[1:3]
            scores, boxes = self._localize(feats, tf.constant(classes), hw)
            scores, boxes = np.asarray(scores), np.asarray(boxes)
            if flipped:
                vw = float(hw[1])
                boxes = np.stack([boxes[..., 0], vw - boxes[..., 3], boxes[..., 2],
                                  vw - boxes[..., 1]], -1)
            sy, sx = np.asarray(factor)
            boxes = boxes / np.array([sy, sx, sy, sx], np.float32)
            boxes = np.clip(boxes, 0, [h, w, h, w])
            better = scores > best_score
            best_score[better], best_box[better] = scores[better], boxes[better]
        k = ranked.shape[1]
        return [{"probabilities": probs[i], "classes": classes[i, :k],
                 "scores": best_score[i, :k], "boxes": best_box[i, :k],
                 "extra_boxes": best_box[i, k:]} for i in range(n)]


def evaluate_localizer(directory, data, *, multiscale=False, scales=None, flip=False,
                       top_k=5, max_images=None, per_image=False, strict=False,
                       **source_kwargs):
    """ILSVRC localization errors of a localizer directory on ``data``'s
    evaluation split (``ilsvrc-loc:PATH`` uses ``val``, or its one CSV).

    Images that neither TF nor PIL can decode are named (logged as they are
    met, and in ``unreadable_paths``) and counted, and the evaluation
    completes over the rest: each unreadable image scores as a miss, with
    no guesses (wrong at every k, for localization and classification) and
    no oracle box, so its ground-truth boxes count as missed and the errors
    can't fall by losing files. Rows the loader skipped because their image
    file is missing or unreadable (``split.report.missed``) count the same
    way (``unreadable_at_load_images`` / ``_objects``). ``*_readable`` give
    the errors over the readable images alone. With ``strict``, any unreadable image is an
    error (ValueError naming them) instead.

    Returns a dict: images (all evaluated, unreadable included),
    readable_images, unreadable_images, unreadable_objects (their
    ground-truth boxes), unreadable_paths, skipped_by_reason, top1/top5
    localization and classification errors, oracle_loc_error (ground-truth
    class), the same over readable images (``..._readable``), the scales and
    the data report; with ``per_image``, also ``per_image``: one dict per
    image (path, label, classes, scores, boxes in original pixels,
    oracle_box; ``unreadable: True`` and no guesses for an unreadable one).
    """
    model, prep, mean, meta = load_localizer(directory)
    source = open_localization_source(data, class_names=meta["class_names"],
                                      **source_kwargs)
    split = source.split("eval")
    label_map = label_map_for(source.class_names, meta["class_names"], data)
    # Images the loader skipped as unreadable (missing, empty, bad header)
    # are misses, like the ones the decoder skips; with max_images, those
    # among the first max_images of the loader's order.
    missed = missed_in_order(split.report, max_images)
    anns = (split.annotations[:max_images - len(missed)] if max_images
            else split.annotations)
    images = split.images[:len(anns)] if split.images is not None else None
    counter = SkipCounter(max_paths=None)
    tester = Tester(model, prep, mean, scales, multiscale, flip, top_k)
    found = {}  # path -> (guess, oracle box, per-image row)
    pending = []

    def flush():
        # Decoded images are tested CHUNK at a time (same-size ones batched).
        results = tester.many([e["image"] for e in pending],
                              [[int(e["label"])] for e in pending])
        for e, r in zip(pending, results):
            path = e["path"].numpy().decode("utf-8", "replace")
            row = {"path": path, "label": int(e["label"]),
                   "classes": r["classes"].tolist(), "scores": r["scores"].tolist(),
                   "boxes": r["boxes"].tolist(), "oracle_box": r["extra_boxes"][0].tolist()}
            found.setdefault(path, []).append(((r["classes"], r["boxes"]),
                                               r["extra_boxes"][0], row))
        pending.clear()

    for e in test_examples(anns, counter=counter, images=images, label_map=label_map):
        pending.append(e)
        if len(pending) == CHUNK:
            flush()
    if pending:
        flush()
    decoded = len(anns)
    anns = [m.annotation for m in missed] + list(anns)
    labels = pad_boxes(anns, label_map)[0]
    guesses, truth, oracle_boxes, rows, lost = [], [], [], [], []
    for i, (a, label) in enumerate(zip(anns, labels)):
        truth.append((np.full(len(a.boxes), int(label)), np.asarray(a.boxes, np.float32)))
        if i >= len(missed) and found.get(a.path):
            guess, oracle, row = found[a.path].pop(0)
        else:  # unreadable: no guesses, no oracle box
            guess, oracle = (np.zeros([0], np.int32), np.zeros([0, 4], np.float32)), None
            row = {"path": a.path, "label": int(label), "unreadable": True}
            lost.append(a)
        guesses.append(guess)
        oracle_boxes.append(oracle)
        rows.append(row)
    if len(lost) != counter.count + len(missed) or any(found.values()):
        raise RuntimeError(f"{decoded - len(lost) + len(missed)} images tested and "
                           f"{counter.count} unreadable, but the split has {decoded}: "
                           "the results can't be matched to their images.")
    if lost and strict:
        raise unreadable_error("localizer", data, counter, len(anns),
                               "they count as misses", missed)
    if len(lost) == len(anns):
        raise ValueError(f"{data}: none of the {len(anns)} images could be read "
                         f"(e.g. {[a.path for a in lost[:3]]}).")
    errors = localization_errors(guesses, truth, ks=(1, top_k))
    keep = [i for i, r in enumerate(rows) if not r.get("unreadable")]
    readable = localization_errors([guesses[i] for i in keep], [truth[i] for i in keep],
                                   ks=(1, top_k))
    out = {"data": data, "split": split.name, "images": len(anns),
           "readable_images": len(keep), "unreadable_images": len(lost),
           "unreadable_objects": int(sum(len(a.boxes) for a in lost)),
           "unreadable_at_load_images": len(missed),
           "unreadable_at_load_objects": int(sum(len(m.annotation.boxes) for m in missed)),
           "unreadable_paths": [a.path for a in lost],
           "skipped_by_reason": merged_reasons(counter, missed), "skipped_images": len(lost),
           "scored_paths": len({a.path for a in anns}),
           "scales": list(tester.scales), "flip": flip, "top_k": top_k,
           "oracle_loc_error": oracle_error(oracle_boxes, truth),
           "oracle_loc_error_readable": oracle_error([oracle_boxes[i] for i in keep],
                                                     [truth[i] for i in keep]),
           "data_report": split.report.to_dict() if split.report else None}
    for name in ("loc", "cls"):
        for k in (1, top_k):
            out[f"top{k}_{name}_error"] = errors[f"top{k}_{name}_error"]
            out[f"top{k}_{name}_error_readable"] = readable[f"top{k}_{name}_error"]
    if per_image:
        out["per_image"] = rows
    return out


def missed_in_order(report, max_images=None):
    """The ``MissedImage``s of a split's ``report`` (images the loader
    skipped as unreadable) that an evaluation of its first ``max_images``
    images covers: those whose ``position`` (kept annotations before them)
    leaves them among the first ``max_images`` of the loader's order; all
    without ``max_images``."""
    missed = list(getattr(report, "missed", None) or [])
    if not max_images:
        return missed
    out = []
    for m in sorted(missed, key=lambda m: m.position):
        if max(m.position, 0) + len(out) < max_images:
            out.append(m)
    return out


def predict_localizer(directory, paths, *, multiscale=False, top_k=5):
    """Top-k classes and their boxes for image files: one dict per file with
    ``predictions`` [{class, name, probability, score, box (ymin, xmin, ymax,
    xmax) original pixels}]; unreadable files get ``error``."""
    model, prep, mean, meta = load_localizer(directory)
    names = meta.get("display_names") or meta["class_names"]
    tester = Tester(model, prep, mean, multiscale=multiscale, top_k=top_k)
    rows = []
    for path in paths:
        image, error = read_image_file(path)
        if error:
            rows.append({"path": path, "error": error})
            continue
        r = tester(image)
        rows.append({"path": path, "height": int(image.shape[0]),
                     "width": int(image.shape[1]), "predictions": [
                         {"class": int(c), "wnid": meta["class_names"][c], "name": names[c],
                          "probability": round(float(r["probabilities"][c]), 5),
                          "score": round(float(s), 5),
                          "box": [round(float(v), 1) for v in b]}
                         for c, s, b in zip(r["classes"], r["scores"], r["boxes"])]})
    return rows


def draw_localizations(image_path, row, out_path, top=1):
    """Write ``image_path`` with the first ``top`` guesses' boxes drawn
    (``resnet_tf.plots.draw_boxes``: one colour per rank, "name probability"
    labels), as an image file (PNG by its extension; its folder is created).
    ``row`` is one of ``predict_localizer``'s; raises ValueError naming an
    unreadable image."""
    from resnet_tf.plots import BOX_COLORS, draw_boxes

    # The pixels predict saw (EXIF orientation applied): the boxes' frame.
    image, error = read_image_file(image_path)
    if error:
        raise ValueError(f"{image_path}: {error}")
    guesses = row["predictions"][:top]
    im = draw_boxes(image.numpy(), [p["box"] for p in guesses],
                    [f"{p['name']} {p['probability']:.2f}" for p in guesses],
                    [BOX_COLORS[i % len(BOX_COLORS)] for i in range(len(guesses))],
                    label_inside=True)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    im.save(out_path)
    return out_path
