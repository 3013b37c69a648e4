"""``resnet-tf demo``: from nothing to three served models, on a CPU.

    resnet-tf demo [--out DIR] [--quick] [--seed N] [--json]

``run_demo(out_dir, quick=False, seed=0)`` does, with the package's own
library functions (nothing here is model code):

1. generates the embedded synthetic sets (classification, detection,
   localization; deterministic from ``seed``) and draws samples of each;
2. trains an ImageNet-layout ResNet-18 classifier on the 32x32 shapes with
   ``model.fit`` (``train.train_classifier``); ``--quick`` makes it a
   quarter as wide (width 16: Table 1's layout at ~1/16 of the compute);
3. fine-tunes Faster R-CNN (ResNet-18-C4) from it (``detection.train``);
4. fine-tunes the per-class RPN localizer from it (``localization.train``);
5. evaluates all three, and a trivial baseline for each on the same data,
   and prints one table;
6. exports each model for TF Serving to ``OUT/serving/<kind>/1`` (every kind
   in ``resnet_tf.export.EXPORTERS``) and calls each export once, through
   its ``serving_default`` signature, on a real JPEG (from ``../shared/data``
   or ``$RESNET_TF_DATA``; otherwise a synthetic image written as JPEG, with
   a note) and on a synthetic evaluation image;
7. draws training curves, predictions, detections and localizations as PNG.

Outputs (``OUT`` is ``--out``, default ``./demo-output``)::

    OUT/models/{classifier,detector,localizer}/   resnet-tf model directories
    OUT/serving/{classifier,detector,localizer}/1/  SavedModels (TF Serving layout)
    OUT/pictures/*.png                           curves, samples, drawn boxes
    OUT/images/                                  the evaluation images drawn on
    OUT/summary.json, OUT/summary.txt            the numbers and where everything is

Baselines (computed on the same evaluation images):

- classifier: the training set's most frequent class (top-1) and its five
  most frequent classes (top-5) for every image;
- detector: a fixed grid of boxes, the training boxes' median size at
  half-box strides, each box reported for every class with the class's
  training frequency as its score (VOC mAP@0.5, COCO AP);
- localizer: the same class guesses as the model, each with one box of the
  training boxes' average size centred in the image (top-5 localization
  error); and that box for the ground-truth class (oracle error).
"""

import dataclasses
import json
import os
import shutil
import time

import numpy as np

MARKER = "resnet_tf_demo.json"  # written first: a folder the demo may overwrite
KINDS = ("classifier", "detector", "localizer")


@dataclasses.dataclass
class DemoSettings:
    """Sizes of one demo run (``QUICK`` and ``FULL`` below)."""

    name: str
    clf_train: int
    clf_eval: int
    clf_epochs: int
    clf_batch: int
    clf_lr: float
    det_train: int
    det_eval: int
    det_epochs: int
    det_lr: float
    loc_train: int
    loc_eval: int
    loc_epochs: int
    loc_lr: float
    det_batch: int = 4
    det_size: int = 128  # the synthetic detection images' side (native, not resized)
    loc_batch: int = 32
    drawn: int = 8  # images drawn per picture
    clf_width: int = None  # the ResNet-18's first-stage width (None: Table 1's 64)


# The classifier: ImageNet-layout ResNet-18 (the detector needs a Table 1
# depth) on 32x32 images, zero-initialised residual branches so lr 0.1
# is stable from the first step; the CIFAR recipe's augmentation. The
# quick run's is width 16 (16-32-64-128 channels): each of its steps
# costs about a quarter of the full width's on 2 cores.
QUICK = DemoSettings("quick", clf_train=1920, clf_eval=300, clf_epochs=10, clf_batch=64,
                     clf_lr=0.1, det_train=64, det_eval=24, det_epochs=12, det_lr=0.04,
                     loc_train=480, loc_eval=120, loc_epochs=8, loc_lr=0.1, clf_width=16)
FULL = DemoSettings("full", clf_train=3200, clf_eval=600, clf_epochs=12, clf_batch=64,
                    clf_lr=0.1, det_train=128, det_eval=48, det_epochs=10, det_lr=0.02,
                    loc_train=1200, loc_eval=300, loc_epochs=12, loc_lr=0.1)

# ImageNet-style views at 32 px: shorter side in [32, 40], a random 32 crop,
# flip, PCA colour noise, per-pixel mean; testing uses the whole 32x32 image.
CLF_PREPROCESSING = dict(style="imagenet", crop_size=32, eval_resize=32,
                         scale_range=(32, 40), multiscale=(32, 48, 64))
# 16 RoIs per image pooled to 4x4: the per-RoI conv5 is most of a step.
DET_KWARGS = dict(anchor_scales=(16, 32, 64), roi_batch=16, rpn_batch=64, pooled_size=4,
                  proposals=dict(pre_nms_train=400, post_nms_train=64, pre_nms_test=300,
                                 post_nms_test=50))
LOC_KWARGS = dict(feature_level="C3", anchor_scales=(12, 18, 26), anchor_ratios=(1.0,),
                  head_channels=64)


def data_root():
    """``$RESNET_TF_DATA``, or ``../shared/data`` beside the repository; None
    if neither exists."""
    env = os.environ.get("RESNET_TF_DATA")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = env or os.path.join(os.path.dirname(repo), "shared", "data")
    return path if os.path.isdir(path) else None


def find_real_jpeg(kind):
    """A real photo for ``kind`` from the shared data (BCCD for the detector,
    an ILSVRC validation image for the localizer, hymenoptera for the
    classifier, any of them otherwise), or None."""
    root = data_root()
    if root is None:
        return None
    folders = {"classifier": ["hymenoptera/hymenoptera_data/val/ants", "cifar10-jpg/test/cat"],
               "detector": ["bccd/BCCD/JPEGImages"],
               "localizer": ["imagenet-val-loc/images"]}
    order = folders.get(kind, []) + [f for k in KINDS for f in folders[k]]
    for folder in order:
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            files = sorted(f for f in os.listdir(path)
                           if f.lower().endswith((".jpg", ".jpeg")))
            if files:
                return os.path.join(path, files[0])
    return None


class _Timer:
    def __init__(self):
        self.t0 = time.time()
        self.steps = {}

    def step(self, name, fn):
        t = time.time()
        out = fn()
        self.steps[name] = round(time.time() - t, 1)
        return out


def _say(text, verbose):
    if verbose:
        print(text, flush=True)


def _prepare_out(out_dir):
    """Create ``out_dir``, or clear a previous demo's outputs in it; refuse a
    non-empty folder that no demo wrote."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir} is a file; give a folder.")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.exists(os.path.join(out_dir, MARKER)):
            raise ValueError(f"--out {out_dir} is not empty and was not written by "
                             "`resnet-tf demo`; give a new or empty folder.")
        for name in ("models", "serving", "pictures", "images", "summary.json",
                     "summary.txt"):
            path = os.path.join(out_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    for sub in ("models", "serving", "pictures", "images"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    with open(os.path.join(out_dir, MARKER), "w") as f:
        json.dump({"written_by": "resnet-tf demo"}, f)


def _save_png(array, path, scale=1):
    from PIL import Image

    im = Image.fromarray(np.asarray(array, np.uint8))
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    im.save(path)
    return path


def draw_boxes(image, boxes, labels=(), colors=(), scale=1, width=2):
    """A PIL image of uint8 [H, W, 3] ``image`` enlarged ``scale`` times, with
    (ymin, xmin, ymax, xmax) pixel ``boxes`` and their ``labels`` drawn."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.asarray(image, np.uint8))
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    for i, b in enumerate(boxes):
        y0, x0, y1, x1 = (float(v) * scale for v in b)
        color = tuple(colors[i]) if i < len(colors) else (230, 25, 75)
        d.rectangle([x0, y0, x1, y1], outline=color, width=width)
        if i < len(labels) and labels[i]:
            d.text((x0 + 2, max(0, y0 - 11)), str(labels[i]), fill=color)
    return im


def backbone_name(s):
    from resnet_tf import zoo

    return zoo.display_name(18, s.clf_width)


# --- 1. data ----------------------------------------------------------------------


def make_data(s, seed, out_dir):
    """The three synthetic sets (the same ones the training functions open
    from the ``synthetic`` spec) and a picture of samples."""
    from detection.data.sources import SyntheticDetectionSource
    from localization.data.sources import SyntheticLocSource
    from resnet_tf import plots
    from resnet_tf.data.sources import SyntheticSource

    clf = SyntheticSource(size=32, num_train=s.clf_train, num_eval=s.clf_eval, seed=seed)
    det = SyntheticDetectionSource(s.det_train, s.det_eval, s.det_size, seed)
    loc = SyntheticLocSource(s.loc_train, s.loc_eval, 32, seed)
    images, labels = clf.arrays("train")
    tiles = [draw_boxes(images[i], [], scale=3) for i in range(8)]
    caps = [clf.class_names[labels[i]] for i in range(8)]
    split = det.split("train")
    for i in range(4):
        a = split.annotations[i]
        tiles.append(draw_boxes(split.images[i], a.boxes,
                                [det.class_names[c] for c in a.classes],
                                colors=[(0, 200, 0)] * len(a.boxes)))
        caps.append(f"{len(a.boxes)} object{'s' if len(a.boxes) != 1 else ''}")
    lsplit = loc.split("train")
    for i in range(4):
        a = lsplit.annotations[i]
        tiles.append(draw_boxes(lsplit.images[i], a.boxes, colors=[(0, 200, 0)] * 9,
                                scale=3))
        caps.append(loc.class_names[a.classes[0]])
    # Classification tiles are 96 px, detection tiles 128 px.
    path = os.path.join(out_dir, "pictures", "data_samples.png")
    plots.grid(tiles, columns=8, captions=caps).save(path)
    counts = {"classification": (s.clf_train, s.clf_eval),
              "detection": (s.det_train, s.det_eval),
              "localization": (s.loc_train, s.loc_eval)}
    return {"sources": {"classifier": clf, "detector": det, "localizer": loc},
            "counts": counts, "picture": path}


# --- 2. classifier ----------------------------------------------------------------


def train_and_evaluate_classifier(s, seed, out_dir, data, verbose):
    from resnet_tf import plots
    from resnet_tf.evaluate import evaluate_classifier, top_k_errors
    from resnet_tf.train import train_classifier

    directory = os.path.join(out_dir, "models", "classifier")
    kw = dict(synthetic_size=32, synthetic_train=s.clf_train, synthetic_eval=s.clf_eval)
    r = train_classifier("synthetic", directory, model="resnet18", recipe="cifar",
                         epochs=s.clf_epochs, batch_size=s.clf_batch,
                         learning_rate=s.clf_lr, step_epochs=(s.clf_epochs - 1,),
                         model_kwargs={"zero_init_residual": True, "width": s.clf_width},
                         seed=seed,
                         preprocessing_overrides=CLF_PREPROCESSING, verbose=verbose, **kw)
    ev = evaluate_classifier(directory, "synthetic", seed=seed, **kw)
    source = data["sources"]["classifier"]
    _, train_labels = source.arrays("train")
    _, eval_labels = source.arrays("eval")
    # Baseline: always answer the training set's most frequent classes.
    freq = np.bincount(train_labels, minlength=len(source.class_names)).astype(np.float64)
    prior = np.tile(freq / freq.sum(), (len(eval_labels), 1))
    base1, base5 = top_k_errors(prior, eval_labels)
    curves = os.path.join(out_dir, "pictures", "classifier_curves.png")
    plots.training_curves(r.history, f"classifier ({backbone_name(s)})", curves,
                          baselines={"majority class": base1})
    return {"directory": directory, "history": r.history, "eval": ev,
            "metrics": {"top1_error": ev["top1_error"], "top5_error": ev["top5_error"]},
            "baseline": {"top1_error": float(base1), "top5_error": float(base5)},
            "pictures": [curves], "train_seconds": r.results["train_seconds"]}


def draw_classifier_predictions(out_dir, data, s):
    """Eval images with the classifier's top guess (from its directory)."""
    from resnet_tf import plots
    from resnet_tf.evaluate import predict_files

    source = data["sources"]["classifier"]
    images, labels = source.arrays("eval")
    paths = [_save_png(images[i], os.path.join(out_dir, "images", f"classify_{i}.png"))
             for i in range(s.drawn)]
    rows = predict_files(os.path.join(out_dir, "models", "classifier"), paths, top=1)
    tiles, caps = [], []
    for i, row in enumerate(rows):
        guess = row["predictions"][0]["name"]
        truth = source.class_names[labels[i]]
        tiles.append(draw_boxes(images[i], [], scale=3))
        caps.append(f"{guess}{'' if guess == truth else ' (' + truth + ')'}")
    path = os.path.join(out_dir, "pictures", "classifier_predictions.png")
    plots.grid(tiles, columns=s.drawn, captions=caps).save(path)
    return path


# --- 3. detector ------------------------------------------------------------------


def _epoch_callback(fn):
    import keras

    class EvalEachEpoch(keras.callbacks.Callback):
        """``fn(model)`` after every epoch; the values in ``.values``."""

        def __init__(self):
            super().__init__()
            self.values = []

        def on_epoch_end(self, epoch, logs=None):
            self.values.append(fn(self.model))

    return EvalEachEpoch()


def _voc_gts(annotations):
    return [{"boxes": a.boxes, "classes": a.classes, "difficult": a.difficult}
            for a in annotations]


def grid_baseline_detections(train_annotations, num_classes, height, width):
    """The detector's trivial baseline for one ``height x width`` image: the
    training boxes' median height and width, tiled at half-box strides, each
    box once per class, scored with the class's training frequency.

    Returns a dict of ``boxes`` [D, 4] (yxyx pixels), ``scores`` [D],
    ``classes`` [D].
    """
    boxes = np.concatenate([a.boxes for a in train_annotations])
    classes = np.concatenate([a.classes for a in train_annotations])
    bh = float(np.median(boxes[:, 2] - boxes[:, 0]))
    bw = float(np.median(boxes[:, 3] - boxes[:, 1]))
    freq = np.bincount(classes, minlength=num_classes) / len(classes)
    ys = np.arange(0, max(1.0, height - bh) + 1e-3, bh / 2)
    xs = np.arange(0, max(1.0, width - bw) + 1e-3, bw / 2)
    grid = np.array([[y, x, min(y + bh, height), min(x + bw, width)] for y in ys for x in xs],
                    np.float32)
    return {"boxes": np.tile(grid, (num_classes, 1)),
            "scores": np.repeat(freq, len(grid)).astype(np.float32),
            "classes": np.repeat(np.arange(num_classes), len(grid)).astype(np.int32)}


def train_and_evaluate_detector(s, seed, out_dir, data, clf_dir, verbose):
    from detection.data.pipeline import DetectionPreprocessing
    from detection.evaluate import detect_split, evaluate_detector
    from detection.metrics.coco_map import evaluate_coco
    from detection.metrics.voc_map import evaluate_voc
    from detection.train import train_detector
    from resnet_tf import model_dir, plots

    directory = os.path.join(out_dir, "models", "detector")
    source = data["sources"]["detector"]
    names = source.class_names
    train_split, eval_split = source.split("train"), source.split("eval")
    gts = _voc_gts(eval_split.annotations)
    mean = model_dir.load_classifier(clf_dir).mean_image
    # The same preprocessing train_detector derives from the classifier.
    prep = DetectionPreprocessing(shorter_side=s.det_size, max_side=s.det_size, flip=False,
                                  mean_rgb=tuple(float(v) for v in mean.mean(axis=(0, 1))))

    def map50(model):
        dets = detect_split(model, prep, eval_split, batch_size=s.det_batch)
        return evaluate_voc(dets, gts, len(names), class_names=names)["mAP"]

    per_epoch = _epoch_callback(map50)
    r = train_detector("synthetic", directory, init_from=clf_dir, epochs=s.det_epochs,
                       batch_size=s.det_batch, learning_rate=s.det_lr,
                       warmup_iterations=10, shorter_side=s.det_size, max_side=s.det_size,
                       seed=seed, synthetic_train=s.det_train, synthetic_eval=s.det_eval,
                       synthetic_size=s.det_size, model_kwargs=DET_KWARGS,
                       extra_callbacks=[per_epoch], verbose=verbose)
    ev = evaluate_detector(directory, "synthetic", seed=seed, synthetic_train=s.det_train,
                           synthetic_eval=s.det_eval, synthetic_size=s.det_size)
    base = [grid_baseline_detections(train_split.annotations, len(names), a.height, a.width)
            for a in eval_split.annotations]
    base_voc = evaluate_voc(base, gts, len(names), class_names=names)["mAP"]
    base_coco = evaluate_coco(base, gts, names,
                              [(a.height, a.width) for a in eval_split.annotations])["AP"]
    curves = os.path.join(out_dir, "pictures", "detector_curves.png")
    plots.training_curves(
        r["history"], f"detector (Faster R-CNN, {backbone_name(s)}, C4)", curves,
        loss_keys=["loss", "rpn_objectness", "rpn_box", "head_class", "head_box"],
        error_keys={"1 - mAP@0.5 (eval)": [1 - v for v in per_epoch.values]},
        baselines={"grid baseline": 1 - base_voc})
    return {"directory": directory, "history": r["history"], "eval": ev,
            "map_per_epoch": per_epoch.values,
            "metrics": {"voc_map50": ev["voc_map50"], "coco_ap": ev["coco"]["AP"]},
            "baseline": {"voc_map50": base_voc, "coco_ap": base_coco},
            "pictures": [curves], "train_seconds": r["results"]["train_seconds"]}


def draw_detector_predictions(out_dir, data, s):
    from detection.evaluate import predict_detector
    from resnet_tf import plots

    split = data["sources"]["detector"].split("eval")
    paths = [_save_png(split.images[i], os.path.join(out_dir, "images", f"detect_{i}.png"))
             for i in range(min(s.drawn, len(split.images)))]
    rows = predict_detector(os.path.join(out_dir, "models", "detector"), paths)
    tiles = []
    for i, row in enumerate(rows):
        # The six best detections scoring at least 0.25 (red); ground truth green.
        keep = [j for j, sc in enumerate(row["scores"]) if sc >= 0.25][:6]
        a = split.annotations[i]
        boxes = list(a.boxes) + [row["boxes"][j] for j in keep]
        labels = [""] * len(a.boxes) + [f"{row['names'][j]} {row['scores'][j]:.2f}"
                                        for j in keep]
        colors = [(0, 200, 0)] * len(a.boxes) + [(230, 25, 75)] * len(keep)
        tiles.append(draw_boxes(split.images[i], boxes, labels, colors, scale=2))
    path = os.path.join(out_dir, "pictures", "detections.png")
    plots.grid(tiles, columns=4).save(path)
    return path


# --- 4. localizer -----------------------------------------------------------------


def train_and_evaluate_localizer(s, seed, out_dir, data, clf_dir, verbose):
    from localization.evaluate import Tester, evaluate_localizer
    from localization.metrics import localization_errors, oracle_error
    from localization.train import train_localizer
    from resnet_tf import model_dir, plots

    directory = os.path.join(out_dir, "models", "localizer")
    source = data["sources"]["localizer"]
    train_split, eval_split = source.split("train"), source.split("eval")
    truth = [(a.classes, a.boxes) for a in eval_split.annotations]
    clf = model_dir.load_classifier(clf_dir)
    probe = min(len(truth), 100)
    tester = None

    def oracle(model):
        nonlocal tester  # built once: its graph functions are traced once
        tester = tester or Tester(model, clf.preprocessing, clf.mean_image, top_k=1)
        found = tester.many(eval_split.images[:probe],
                            [[int(t[0][0])] for t in truth[:probe]])
        return oracle_error([r["extra_boxes"][0] for r in found], truth[:probe])

    per_epoch = _epoch_callback(oracle)
    kw = dict(synthetic_train=s.loc_train, synthetic_eval=s.loc_eval)
    r = train_localizer("synthetic", directory, init_from=clf_dir, epochs=s.loc_epochs,
                        batch_size=s.loc_batch, learning_rate=s.loc_lr, seed=seed,
                        extra_callbacks=[per_epoch], verbose=verbose, **LOC_KWARGS, **kw)
    ev = evaluate_localizer(directory, "synthetic", per_image=True, seed=seed, **kw)
    # Baseline: the same class guesses, one centred box of the training
    # boxes' average size.
    tb = np.concatenate([a.boxes for a in train_split.annotations])
    h, w = float((tb[:, 2] - tb[:, 0]).mean()), float((tb[:, 3] - tb[:, 1]).mean())
    a0 = eval_split.annotations[0]
    cy, cx = a0.height / 2, a0.width / 2
    centred = np.array([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], np.float32)
    k = len(ev["per_image"][0]["classes"])
    base = localization_errors([(row["classes"], np.tile(centred, (k, 1)))
                                for row in ev["per_image"]], truth, ks=(1, k))
    base_oracle = oracle_error([centred] * len(truth), truth)
    curves = os.path.join(out_dir, "pictures", "localizer_curves.png")
    plots.training_curves(
        r["history"], "localizer (per-class RPN)", curves,
        loss_keys=["loss", "loc_cls", "loc_reg"],
        error_keys={f"oracle loc. error (eval, {probe} images)": per_epoch.values},
        baselines={"centred box": base_oracle})
    return {"directory": directory, "history": r["history"],
            "eval": {k2: v for k2, v in ev.items() if k2 != "per_image"},
            "per_image": ev["per_image"], "oracle_per_epoch": per_epoch.values,
            "metrics": {"top5_loc_error": ev[f"top{k}_loc_error"],
                        "oracle_loc_error": ev["oracle_loc_error"]},
            "baseline": {"top5_loc_error": base[f"top{k}_loc_error"],
                         "oracle_loc_error": base_oracle},
            "pictures": [curves], "train_seconds": r["results"]["train_seconds"]}


def draw_localizer_predictions(out_dir, data, loc, s):
    from resnet_tf import plots

    split = data["sources"]["localizer"].split("eval")
    names = data["sources"]["localizer"].class_names
    tiles, caps = [], []
    for i, row in enumerate(loc["per_image"][:s.drawn]):
        a = split.annotations[i]
        boxes = list(a.boxes) + [row["boxes"][0]]
        colors = [(0, 200, 0)] * len(a.boxes) + [(230, 25, 75)]
        tiles.append(draw_boxes(split.images[i], boxes, colors=colors, scale=4))
        caps.append(names[row["classes"][0]])
    path = os.path.join(out_dir, "pictures", "localizations.png")
    plots.grid(tiles, columns=s.drawn, captions=caps).save(path)
    return path


# --- 6. export and serve ------------------------------------------------------------


def _headline(kind, out):
    """One line describing the first image's outputs of a served model."""
    def first(name):
        v = out[name][0]
        return v.decode() if isinstance(v, bytes) else v

    if kind == "classifier":
        return f"{first('top_k_labels')[0].decode()} ({first('top_k_scores')[0]:.2f})"
    if kind == "detector":
        n = int(out["num_detections"][0])
        if not n:
            return "no detections"
        return (f"{n} detections, best {out['detection_labels'][0][0].decode()} "
                f"({out['detection_scores'][0][0]:.2f})")
    strings = [k for k, v in out.items() if v.dtype == object]
    if strings:
        v = np.asarray(out[strings[0]][0]).reshape(-1)[:1]
        return f"{strings[0]}: {v[0].decode() if isinstance(v[0], bytes) else v[0]}"
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(out.items()))


def export_and_serve(out_dir, data, models, verbose):
    """Export every trained model whose kind ``EXPORTERS`` knows; call each
    export's ``serving_default`` with [a real JPEG, a synthetic JPEG], or
    with the synthetic JPEG alone where no real photo is found (a note says
    so).

    Returns:
        ``(results, notes)``: per kind ``export`` (the version folder),
        ``files`` (the JPEGs sent, in order), ``real_photo`` (the real
        photo's path or None), ``outputs`` (name -> shape), ``real`` (the
        headline answer for the real photo, or None) and ``synthetic``.
    """
    import keras
    import tensorflow as tf

    from resnet_tf.export import BYTES_INPUT, BYTES_SIGNATURE, EXPORTERS, export_model

    def synthetic_image(kind):
        source = data["sources"][kind]
        if kind == "classifier":
            return source.arrays("eval")[0][0]
        return source.split("eval").images[0]

    results, notes = {}, []
    kinds = [k for k in KINDS if k in models]
    bar = keras.utils.Progbar(len(kinds), verbose=1 if verbose else 0,
                              stateful_metrics=["model"])
    for i, kind in enumerate(kinds):
        if kind not in EXPORTERS:
            notes.append(f"{kind}: not exported (this resnet-tf has no {kind} exporter "
                         "in resnet_tf.export.EXPORTERS)")
            bar.update(i + 1)
            continue
        base = os.path.join(out_dir, "serving", kind)
        path = export_model(kind, models[kind]["directory"], base, version=1)
        jpeg = os.path.join(out_dir, "images", f"serving_{kind}.jpg")
        from PIL import Image

        Image.fromarray(synthetic_image(kind)).save(jpeg, quality=95)
        real = find_real_jpeg(kind)
        if real is None:
            root = data_root()
            why = ("no $RESNET_TF_DATA or ../shared/data folder" if root is None
                   else f"no JPEG in its photo folders under {root}")
            notes.append(f"{kind}: no real photo found ({why}); called on the "
                         "synthetic JPEG only")
        files = [real, jpeg] if real else [jpeg]
        loaded = tf.saved_model.load(path)
        fn = loaded.signatures[BYTES_SIGNATURE]
        payload = tf.constant([open(f, "rb").read() for f in files])
        out = {k: v.numpy() for k, v in fn(**{BYTES_INPUT: payload}).items()}
        results[kind] = {"export": path, "files": files, "real_photo": real,
                         "outputs": {k: list(v.shape) for k, v in out.items()},
                         "real": _headline(kind, {k: v[:1] for k, v in out.items()})
                         if real else None,
                         "synthetic": _headline(kind, {k: v[-1:] for k, v in out.items()})}
        bar.update(i + 1)
    return results, notes


def serving_report(serving, notes):
    """The lines the demo prints about ``export_and_serve``'s results: each
    export, what it answered for the real photo (only where one was sent)
    and for the synthetic JPEG, then the notes."""
    lines = []
    for kind, r in serving.items():
        lines.append(f"  {kind}: {r['export']}")
        if r["real_photo"]:
            lines.append(f"    real photo {r['real_photo']}: {r['real']}")
        lines.append(f"    synthetic {r['files'][-1]}: {r['synthetic']}")
    return lines + [f"  NOTE: {note}" for note in notes]


# --- 5. the table --------------------------------------------------------------------


def summary_rows(models):
    """``(model, metric, model value, baseline value, lower_is_better)`` rows."""
    rows = []
    if "classifier" in models:
        m, b = models["classifier"]["metrics"], models["classifier"]["baseline"]
        rows += [("classifier", "top-1 error", m["top1_error"], b["top1_error"], True),
                 ("classifier", "top-5 error", m["top5_error"], b["top5_error"], True)]
    if "detector" in models:
        m, b = models["detector"]["metrics"], models["detector"]["baseline"]
        rows += [("detector", "VOC mAP@0.5", m["voc_map50"], b["voc_map50"], False),
                 ("detector", "COCO AP", m["coco_ap"], b["coco_ap"], False)]
    if "localizer" in models:
        m, b = models["localizer"]["metrics"], models["localizer"]["baseline"]
        rows += [("localizer", "top-5 loc. error", m["top5_loc_error"],
                  b["top5_loc_error"], True),
                 ("localizer", "oracle loc. error", m["oracle_loc_error"],
                  b["oracle_loc_error"], True)]
    return rows


def beats(model_value, baseline_value, lower_is_better):
    return model_value < baseline_value if lower_is_better else model_value > baseline_value


def format_table(rows, baselines):
    lines = [f"{'model':<11} {'metric':<18} {'model':>8} {'baseline':>9}  "
             f"{'baseline is':<40}", "-" * 92]
    for name, metric, v, b, lower in rows:
        mark = "better" if beats(v, b, lower) else "NOT better"
        lines.append(f"{name:<11} {metric:<18} {100 * v:7.1f}% {100 * b:8.1f}%  "
                     f"{baselines[name]:<31} {mark}")
    return "\n".join(lines)


BASELINE_NAMES = {"classifier": "most frequent training class(es)",
                  "detector": "fixed grid of boxes, class prior",
                  "localizer": "same classes, centred mean box"}


# --- the demo ------------------------------------------------------------------------


def run_demo(out_dir="demo-output", quick=False, seed=0, verbose=1, settings=None):
    """Run the seven steps (see the module docstring) into ``out_dir``.

    Args:
        out_dir: a new or empty folder, or one a previous demo wrote (its
            outputs are replaced).
        quick: the smoke-test sizes (``QUICK``), else ``FULL``.
        seed: the synthetic data and training seed.
        verbose: 1 progress bars and messages, 2 one line per epoch, 0 quiet.
        settings: a ``DemoSettings`` overriding ``quick``.
    Returns:
        dict: ``settings``, ``models`` (per kind: metrics, baseline,
        directory...), ``rows`` (the table), ``all_better``, ``serving``,
        ``notes``, ``pictures``, ``outputs``, ``seconds``.
    """
    import keras

    s = settings or (QUICK if quick else FULL)
    out_dir = os.path.abspath(out_dir)
    _prepare_out(out_dir)
    keras.utils.set_random_seed(seed)
    timer = _Timer()
    fit_verbose = verbose if verbose in (0, 1) else 2
    say = lambda text: _say(text, verbose)  # noqa: E731

    say(f"resnet-tf demo ({s.name}) -> {out_dir}")
    say("[1/7] Generating the synthetic data sets (classification 32x32, detection "
        f"{s.det_size}x{s.det_size}, localization 32x32; seed {seed})")
    data = timer.step("data", lambda: make_data(s, seed, out_dir))
    pictures = [data["picture"]]

    say(f"[2/7] Training the classifier (ImageNet-layout {backbone_name(s)}) with model.fit")
    models = {}
    models["classifier"] = timer.step("classifier", lambda: train_and_evaluate_classifier(
        s, seed, out_dir, data, fit_verbose))
    clf_dir = models["classifier"]["directory"]

    say(f"[3/7] Fine-tuning Faster R-CNN ({backbone_name(s)}, C4) from the classifier")
    models["detector"] = timer.step("detector", lambda: train_and_evaluate_detector(
        s, seed, out_dir, data, clf_dir, fit_verbose))

    say("[4/7] Fine-tuning the per-class RPN localizer from the classifier")
    models["localizer"] = timer.step("localizer", lambda: train_and_evaluate_localizer(
        s, seed, out_dir, data, clf_dir, fit_verbose))

    rows = summary_rows(models)
    table = format_table(rows, BASELINE_NAMES)
    all_better = all(beats(v, b, lower) for _, _, v, b, lower in rows)
    say("[5/7] Evaluation on the held-out synthetic images (model vs trivial baseline):")
    say(table)

    say("[6/7] Exporting SavedModels for TF Serving and calling each once")
    serving, notes = timer.step("export", lambda: export_and_serve(
        out_dir, data, models, verbose))
    for line in serving_report(serving, notes):
        say(line)

    say("[7/7] Drawing predictions")

    def draw():
        return [draw_classifier_predictions(out_dir, data, s),
                draw_detector_predictions(out_dir, data, s),
                draw_localizer_predictions(out_dir, data, models["localizer"], s)]

    drawn = timer.step("pictures", draw)
    for kind in KINDS:
        pictures += models[kind]["pictures"]
    pictures += drawn

    outputs = {"models": {k: models[k]["directory"] for k in models},
               "serving": {k: r["export"] for k, r in serving.items()},
               "pictures": pictures,
               "summary": [os.path.join(out_dir, "summary.json"),
                           os.path.join(out_dir, "summary.txt")]}
    seconds = {**timer.steps, "total": round(time.time() - timer.t0, 1)}
    summary = {
        "settings": dataclasses.asdict(s), "seed": seed, "out_dir": out_dir,
        "models": {k: {kk: vv for kk, vv in m.items() if kk != "per_image"}
                   for k, m in models.items()},
        "rows": [{"model": r[0], "metric": r[1], "value": r[2], "baseline": r[3],
                  "lower_is_better": r[4], "better": beats(r[2], r[3], r[4])}
                 for r in rows],
        "all_better": all_better, "table": table, "serving": serving, "notes": notes,
        "pictures": pictures, "outputs": outputs, "seconds": seconds}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(table + "\n")
    say(f"\nDone in {seconds['total']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in timer.steps.items())}). Outputs:")
    for kind, path in outputs["models"].items():
        say(f"  model directory  {kind:<11} {path}")
    for kind, path in outputs["serving"].items():
        say(f"  SavedModel       {kind:<11} {path}")
    for path in pictures:
        say(f"  picture          {path}")
    for path in outputs["summary"]:
        say(f"  summary          {path}")
    if not all_better:
        say("WARNING: a model did not beat its baseline (see the table above).")
    return summary


def add_demo_command(sub):
    """``resnet-tf demo``, added to the top-level subparsers ``sub``."""
    p = sub.add_parser(
        "demo", help="train, fine-tune, evaluate, export and serve three models on "
        "synthetic data (minutes, CPU)",
        description="Generate the synthetic data; train a ResNet-18 classifier with "
        "model.fit; fine-tune Faster R-CNN and the per-class RPN localizer from it; "
        "evaluate all three against trivial baselines; export SavedModels for TF "
        "Serving and call each once; write pictures. Minutes on 2 CPU cores; "
        "--quick is the smoke-test size.")
    p.add_argument("--out", default="demo-output",
                   help="output folder: new, empty, or a previous demo's "
                   "(default ./demo-output)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run with smaller sets and fewer epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true",
                   help="print the summary as JSON (progress goes to stderr)")
    p.set_defaults(func=run_demo_command)


def run_demo_command(args):
    if args.json:
        import contextlib
        import sys

        with contextlib.redirect_stdout(sys.stderr):
            summary = run_demo(args.out, quick=args.quick, seed=args.seed, verbose=2)
        print(json.dumps({k: summary[k] for k in ("out_dir", "rows", "all_better",
                                                   "serving", "notes", "outputs",
                                                   "seconds")}, default=float))
    else:
        summary = run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0 if summary["all_better"] else 1
