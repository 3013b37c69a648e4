"""Evaluate and predict with a detector directory."""

import numpy as np
import tensorflow as tf

from detection.data.pipeline import make_detection_dataset, prepare_example
from detection.data.sources import open_detection_source
from detection.metrics.coco_map import evaluate_coco
from detection.metrics.voc_map import evaluate_voc
from detection.train import load_detector
from resnet_tf.data.decode import SkipCounter, read_image_file
from resnet_tf.evaluate import inference_function


def detect_split(model, prep, split, batch_size=2, counter=None):
    """Detections for every image of a split, in original image pixels.

    Returns a list (one per readable image, in order) of dicts with
    ``boxes`` [D, 4], ``scores`` [D], ``classes`` [D] (0-based).
    """
    ds = make_detection_dataset(split.annotations, prep, training=False,
                                batch_size=batch_size, counter=counter, images=split.images,
                                image_bytes=split.image_bytes and split.image_bytes())
    out = []
    run = inference_function(model)
    for x, _ in ds:
        det = run(x)
        n = det["num_detections"].numpy()
        for b in range(len(n)):
            out.append({"boxes": det["boxes"].numpy()[b, :n[b]],
                        "scores": det["scores"].numpy()[b, :n[b]],
                        "classes": det["classes"].numpy()[b, :n[b]],
                        "resized": x["image_sizes"].numpy()[b]})
    return out


def _to_original(dets, annotations):
    for d, a in zip(dets, annotations):
        sy, sx = d["resized"][0] / a.height, d["resized"][1] / a.width
        d["boxes"] = d["boxes"] / np.array([sy, sx, sy, sx], np.float32)
    return dets


def evaluate_detector(directory, data, *, batch_size=2, **source_kwargs):
    """VOC mAP@0.5 (11-point and area) and COCO AP of a detector directory
    on the evaluation split of ``data``."""
    model, prep, meta = load_detector(directory)
    source = open_detection_source(data, class_names=meta["class_names"], **source_kwargs)
    split = source.split("eval")
    counter = SkipCounter()
    dets = _to_original(detect_split(model, prep, split, batch_size, counter),
                        split.annotations)
    if counter.count:
        raise ValueError(f"{counter.count} images of {data} could not be read "
                         f"(e.g. {counter.paths[:3]}); evaluation needs all of them.")
    gts = [{"boxes": a.boxes, "classes": a.classes, "difficult": a.difficult}
           for a in split.annotations]
    names = meta["class_names"]
    voc = evaluate_voc(dets, gts, len(names), class_names=names)
    voc07 = evaluate_voc(dets, gts, len(names), class_names=names, use_07_metric=True)
    coco = evaluate_coco(dets, gts, names, [(a.height, a.width) for a in split.annotations])
    return {"data": data, "split": split.name, "images": len(gts),
            "voc_map50": voc["mAP"], "voc07_map50": voc07["mAP"],
            "per_class_ap50": voc["per_class"], "coco": coco}


def predict_detector(directory, paths, score_threshold=None):
    """Detections for image files: one dict per file with ``boxes``
    (ymin, xmin, ymax, xmax pixels of the original image), ``names``,
    ``scores``; unreadable files get ``error``."""
    model, prep, meta = load_detector(directory)
    names = meta["class_names"]
    rows = []
    run = inference_function(model)
    for path in paths:
        image, error = read_image_file(path)
        if error:
            rows.append({"path": path, "error": error})
            continue
        x, _ = prepare_example(image, tf.fill([1, 4], -1.0), tf.constant([-1]), prep)
        det = run({k: v[None] for k, v in x.items()})
        n = int(det["num_detections"][0])
        h, w = image.shape[0], image.shape[1]
        sy, sx = float(x["image_sizes"][0]) / h, float(x["image_sizes"][1]) / w
        boxes = det["boxes"].numpy()[0, :n] / np.array([sy, sx, sy, sx])
        scores = det["scores"].numpy()[0, :n]
        classes = det["classes"].numpy()[0, :n]
        keep = scores >= (score_threshold or 0)
        rows.append({"path": path, "height": h, "width": w,
                     "boxes": boxes[keep].round(1).tolist(),
                     "classes": classes[keep].tolist(),
                     "names": [names[c] for c in classes[keep]],
                     "scores": scores[keep].round(4).tolist()})
    return rows


def draw_detections(image_path, row, out_path, min_score=0.3):
    """Write ``image_path`` with ``row``'s boxes and labels drawn, as PNG."""
    from PIL import Image, ImageDraw

    with Image.open(image_path) as im:
        im = im.convert("RGB")
    draw = ImageDraw.Draw(im)
    colors = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
    for (y0, x0, y1, x1), c, name, s in zip(row["boxes"], row["classes"], row["names"],
                                           row["scores"]):
        if s < min_score:
            continue
        color = colors[c % len(colors)]
        draw.rectangle([x0, y0, x1, y1], outline=color, width=2)
        draw.text((x0 + 2, y0 + 1), f"{name} {s:.2f}", fill=color)
    im.save(out_path)
    return out_path
