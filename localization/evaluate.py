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
import time

import numpy as np
import tensorflow as tf

from detection.data.annotations import missed_in_order
from localization.data.pipeline import pad_boxes, test_examples, test_views
from localization.data.rcnn import region_view, warp_regions
from localization.data.sources import open_localization_source
from localization.metrics import localization_errors, oracle_error
from localization.model_dir import load_localizer_stages
from localization.rcnn import top_proposals
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
                 flip=False, top_k=5, num_proposals=0):
        self.model, self.prep = model, prep
        self.num_proposals = int(num_proposals or 0)
        self.mean = None if mean_image is None else tf.constant(mean_image, tf.float32)
        self.scales = tuple(int(s) for s in (scales or (prep.multiscale if multiscale
                                                       else (prep.crop_size,))))
        self.flip = bool(flip)
        self.top_k = min(int(top_k), model.num_classes)
        self._forward = inference_function(lambda x: (model.classify(x),
                                                       model.features(x)))
        self._localize = inference_function(lambda f, c, hw: model.localize(f, c, hw))
        if self.num_proposals:
            n = self.num_proposals
            self._propose = inference_function(
                lambda f, c, hw: top_proposals(model, f, c, hw, n))

    def __call__(self, image, extra_classes=()):
        """Localize one uint8 [H, W, 3] image.

        Returns a dict: ``probabilities`` [C], ``classes`` [k] (ranked),
        ``scores`` [k], ``boxes`` [k, 4] (original pixels); and for
        ``extra_classes`` (e.g. the ground-truth class) ``extra_boxes`` [E, 4].
        With ``num_proposals`` N, also ``proposal_classes`` [k + E] (the
        ranked classes, then the extra ones) and their first-stage top boxes
        over every view, ``proposals`` [k + E, N, 4] (original pixels) and
        ``proposal_scores`` [k + E, N], best first.
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
        prop_scores, prop_boxes = [], []
        for (x, factor, flipped), (_, feats) in zip(batches, outs):
            hw = tf.shape(x)[1:3]

            def to_original(boxes):
                if flipped:
                    vw = float(hw[1])
                    boxes = np.stack([boxes[..., 0], vw - boxes[..., 3], boxes[..., 2],
                                      vw - boxes[..., 1]], -1)
                sy, sx = np.asarray(factor)
                boxes = boxes / np.array([sy, sx, sy, sx], np.float32)
                return np.clip(boxes, 0, [h, w, h, w])

            scores, boxes = self._localize(feats, tf.constant(classes), hw)
            scores, boxes = np.asarray(scores), to_original(np.asarray(boxes))
            better = scores > best_score
            best_score[better], best_box[better] = scores[better], boxes[better]
            if self.num_proposals:
                s, b = self._propose(feats, tf.constant(classes), hw)
                prop_scores.append(np.asarray(s))
                prop_boxes.append(to_original(np.asarray(b)))
        k = ranked.shape[1]
        out = [{"probabilities": probs[i], "classes": classes[i, :k],
                "scores": best_score[i, :k], "boxes": best_box[i, :k],
                "extra_boxes": best_box[i, k:]} for i in range(n)]
        if self.num_proposals:
            # Every view's boxes of a class, best first, the first N kept.
            s, b = np.concatenate(prop_scores, 2), np.concatenate(prop_boxes, 2)
            top = np.argsort(-s, axis=2, kind="stable")[..., :self.num_proposals]
            s = np.take_along_axis(s, top, 2)
            b = np.take_along_axis(b, top[..., None], 2)
            for i, r in enumerate(out):
                r.update(proposal_classes=classes[i], proposals=b[i], proposal_scores=s[i])
        return out


class TwoStageTester(Tester):
    """RPN+R-CNN testing (Appendix C): ``Tester``'s first stage, whose top
    ``num_proposals`` boxes of each class (the top-k and the extra classes)
    the ``rcnn`` (``localization.rcnn.RegionClassifier``) rescores and
    regresses; each class's answer is its best rescored box. Regions are
    cropped from the region view (shorter side ``prep.crop_size``,
    ``localization.data.rcnn.region_view``) and warped to the R-CNN's
    ``warp_size``, ``region_batch`` at a time.

    Results as ``Tester``'s, with ``scores`` / ``boxes`` / ``extra_boxes``
    the second stage's (score: the R-CNN's softmax probability of the
    class) and the first stage's kept as ``rpn_scores``, ``rpn_boxes``,
    ``rpn_extra_boxes``.
    """

    def __init__(self, model, rcnn, prep, mean_image=None, scales=None, multiscale=False,
                 flip=False, top_k=5, num_proposals=200, region_batch=256):
        super().__init__(model, prep, mean_image, scales, multiscale, flip, top_k,
                         num_proposals=num_proposals)
        self.rcnn, self.region_batch = rcnn, int(region_batch)
        self._head = inference_function(rcnn)
        self._rescore = inference_function(lambda head, c, b, hw: rcnn.rescore(head, c, b, hw))

    def _same_size(self, images, extras):
        results = super()._same_size(images, extras)
        for image, r in zip(images, results):
            self._second_stage(image, r)
        return results

    def _second_stage(self, image, r):
        scores, boxes = rescore_proposals(
            self.rcnn, image, r["proposals"], r["proposal_classes"], self.prep.crop_size,
            self.mean if self.prep.mean_subtraction else None, self.region_batch,
            functions=(self._head, self._rescore))
        e = len(scores)
        best = np.argmax(scores, axis=1)
        k = len(r["classes"])
        box = boxes[np.arange(e), best]
        r.update(rpn_scores=r["scores"], rpn_boxes=r["boxes"],
                 rpn_extra_boxes=r["extra_boxes"], scores=scores[np.arange(e), best][:k],
                 boxes=box[:k], extra_boxes=box[k:])


def rescore_proposals(rcnn, image, proposals, classes, view_side, mean_image=None,
                      region_batch=256, functions=None):
    """The second stage on one image: every proposal cropped from the region
    view (``region_view``, shorter side ``view_side``), warped
    (``warp_regions``), scored for its class and regressed by ``rcnn``.

    Args:
        rcnn: a ``RegionClassifier``.
        image: uint8 [H, W, 3].
        proposals: float [E, N, 4] original pixels: N boxes for each of E
            classes.
        classes: int [E].
        mean_image: float32 [S, S, 3] or None (subtracted from the warps).
        region_batch: regions per network call.
        functions: the compiled ``(head, rescore)`` pair to reuse (a tester's).
    Returns:
        ``(scores float32 [E, N] the R-CNN's probability of each box's
        class, boxes float32 [E, N, 4] regressed, original pixels, clipped)``.
    """
    if functions is None:
        functions = getattr(rcnn, "_resnet_tf_rescore", None)
        if functions is None:  # compiled once per model (untracked by Keras)
            functions = (inference_function(rcnn), inference_function(
                lambda hd, c, b, hw: rcnn.rescore(hd, c, b, hw)))
            object.__setattr__(rcnn, "_resnet_tf_rescore", functions)
    head, rescore = functions
    proposals = np.asarray(proposals, np.float32)
    e, n = proposals.shape[:2]
    view, factor = region_view(image, view_side)
    scale = np.tile(np.asarray(factor, np.float32), 2)
    boxes = proposals.reshape(-1, 4) * scale
    per_box = np.repeat(np.asarray(classes, np.int32).reshape(-1), n)
    hw = tf.shape(view)[:2]
    scores, out = [], []
    for start in range(0, len(boxes), int(region_batch)):
        b = tf.constant(boxes[start:start + int(region_batch)])
        x = warp_regions(view, b, rcnn.warp_size, mean_image)
        sc, o = rescore(head(x), tf.constant(per_box[start:start + int(region_batch)]), b, hw)
        scores.append(np.asarray(sc))
        out.append(np.asarray(o))
    h, w = int(image.shape[0]), int(image.shape[1])
    out = np.clip(np.concatenate(out).reshape(e, n, 4) / scale, 0, [h, w, h, w])
    return np.concatenate(scores).reshape(e, n), out.astype(np.float32)


def make_tester(directory, *, stage=None, num_proposals=None, **kwargs):
    """``(tester, meta)`` for either kind of localizer directory
    (``load_localizer_stages``): a ``Tester`` for a first-stage directory or
    with ``stage="rpn"``, else a ``TwoStageTester`` rescoring
    ``num_proposals`` boxes per class (default: the directory's record).
    ``kwargs`` go to the tester (scales, multiscale, flip, top_k).

    Raises:
        ValueError: an unknown ``stage``, or ``stage="rcnn"`` for a
        first-stage directory.
    """
    if stage not in (None, "rpn", "rcnn"):
        raise ValueError(f"stage must be 'rpn' or 'rcnn', got {stage!r}.")
    model, rcnn, prep, mean, meta = load_localizer_stages(directory)
    if stage == "rcnn" and rcnn is None:
        raise ValueError(f"{directory} is a first-stage (RPN) localizer; train its second "
                         "stage with `resnet-tf train localizer --stage rcnn --init-from "
                         f"{directory}`.")
    if rcnn is None or stage == "rpn":
        tester = Tester(model, prep, mean, **kwargs)
        tester.stage = "rpn"
    else:
        tester = TwoStageTester(model, rcnn, prep, mean, **kwargs,
                                num_proposals=num_proposals or meta.get("num_proposals", 200))
        tester.stage = "rcnn"
    return tester, meta


def evaluate_localizer(directory, data, *, multiscale=False, scales=None, flip=False,
                       top_k=5, max_images=None, per_image=False, strict=False,
                       stage=None, num_proposals=None, **source_kwargs):
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

    A second-stage directory is tested RPN+R-CNN (``TwoStageTester``, its
    ``num_proposals`` boxes per class, or this argument's); ``stage="rpn"``
    tests its first stage alone. The result's ``stage`` says which, and
    ``seconds_per_image`` the testing time (decoding included).

    Returns a dict: images (all evaluated, unreadable included),
    readable_images, unreadable_images, unreadable_objects (their
    ground-truth boxes), unreadable_paths, skipped_by_reason, top1/top5
    localization and classification errors, oracle_loc_error (ground-truth
    class), the same over readable images (``..._readable``), the scales and
    the data report; with ``per_image``, also ``per_image``: one dict per
    image (path, label, classes, scores, boxes in original pixels,
    oracle_box; ``unreadable: True`` and no guesses for an unreadable one).
    """
    tester, meta = make_tester(directory, stage=stage, num_proposals=num_proposals,
                               scales=scales, multiscale=multiscale, flip=flip, top_k=top_k)
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
    t0 = time.perf_counter()
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
    seconds = time.perf_counter() - t0
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
           "stage": tester.stage, "num_proposals": tester.num_proposals or None,
           "seconds_per_image": seconds / max(1, decoded),
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


def predict_localizer(directory, paths, *, multiscale=False, top_k=5, stage=None,
                      num_proposals=None):
    """Top-k classes and their boxes for image files: one dict per file with
    ``predictions`` [{class, name, probability, score, box (ymin, xmin, ymax,
    xmax) original pixels}]; unreadable files get ``error``. Either kind of
    localizer directory (``make_tester``; ``score`` is the R-CNN's
    probability for a second-stage one)."""
    tester, meta = make_tester(directory, stage=stage, num_proposals=num_proposals,
                               multiscale=multiscale, top_k=top_k)
    names = meta.get("display_names") or meta["class_names"]
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
