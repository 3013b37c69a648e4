"""Step 3: Faster R-CNN (ResNet-18-C4) fine-tuned from the classifier
(``detection.train.train_detector``), evaluated (VOC mAP@0.5, COCO AP), set
against its baseline (``grid_baseline_detections``), and drawn."""

import os

import numpy as np

from apps.demo.folders import save_png
from apps.demo.progress import epoch_callback
from apps.demo.settings import DET_KWARGS, backbone_name
from resnet_tf import plots


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
    from resnet_tf import model_dir

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

    per_epoch = epoch_callback(map50)
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

    split = data["sources"]["detector"].split("eval")
    paths = [save_png(split.images[i], os.path.join(out_dir, "images", f"detect_{i}.png"))
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
        tiles.append(plots.draw_boxes(split.images[i], boxes, labels, colors, scale=2))
    path = os.path.join(out_dir, "pictures", "detections.png")
    plots.grid(tiles, columns=4).save(path)
    return path
