"""Evaluate and predict with a trained classifier directory.

Views (Sec. 3.4):
- ``center``: shorter side 256, centre 224 crop (CIFAR: the original image);
- ``10``: the 4 corner and centre crops of the 256 image and their flips,
  softmax scores averaged;
- ``multiscale``: the whole image, fully convolutional, at shorter sides
  {224, 256, 384, 480, 640}, softmax scores averaged (one image at a time,
  since every image keeps its own aspect ratio).
"""

import os

import numpy as np
import tensorflow as tf

from resnet_tf import model_dir
from resnet_tf.data.decode import SkipCounter, graph_fn
from resnet_tf.data.labels import read_class_index
from resnet_tf.data.pipeline import decoded_examples, make_dataset
from resnet_tf.data.report import format_reasons
from resnet_tf.data.sources import open_source

CROPS = ("center", "10", "multiscale")


def inference_function(fn):
    """``fn`` (a model, or any function of tensors) as a compiled graph
    function on the TensorFlow backend: ``tf.function`` with
    ``reduce_retracing`` (one trace per input signature, generalised after
    the second shape), in inference mode. Evaluation and prediction loops call
    this instead of ``model(x)``, which runs a Keras model op by op in eager
    mode (about 10x slower for a Faster R-CNN batch on a CPU). Other
    backends: ``fn`` itself. A model's function is kept on the model, so
    repeated evaluations (one per epoch, say) trace it once."""
    import keras

    if not isinstance(fn, keras.Model):
        return tf.function(fn, reduce_retracing=True) \
            if keras.backend.backend() == "tensorflow" else fn
    model = fn
    cached = getattr(model, "_resnet_tf_inference", None)
    if cached is None:
        cached = inference_function(lambda x: model(x, training=False))
        object.__setattr__(model, "_resnet_tf_inference", cached)  # untracked by Keras
    return cached


def classifier_function(model):
    """What ``evaluate_classifier`` and ``predict_files`` run: the classifier
    with batch norm folded into its convolutions and its weights frozen
    (``resnet_tf.fold.serving_function``, the graph the exports serve), or,
    for a model that cannot be folded (not functional), ``inference_function``.
    Built per call from the model's current weights."""
    from resnet_tf.fold import is_functional, serving_function

    return serving_function(model) if is_functional(model) else inference_function(model)


def top_k_errors(probs, labels, k=5, unreadable=0):
    """(top-1 error, top-k error) of float [N, C] scores for int [N] labels.

    ``unreadable`` more images that could not be decoded count as wrong at
    every k (the conservative reading: the error can't fall by losing
    files); the errors are over N + unreadable images.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("no images to evaluate.")
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1)
    top1 = order[:, 0] == labels
    topk = (order[:, :k] == labels[:, None]).any(-1)
    total = len(labels) + int(unreadable)
    return 1.0 - top1.sum() / total, 1.0 - topk.sum() / total


def _first_images(split, n):
    """``split`` cut to its first ``n`` files, before decoding (so an
    unreadable file among them counts, and none after them is read)."""
    import dataclasses

    make = split.make
    return dataclasses.replace(
        split, make=lambda shuffle_seed=None: make(shuffle_seed=shuffle_seed).take(n),
        num_examples=min(n, split.num_examples) if split.num_examples else n)


def unreadable_error(what, data, counter, total, consequence, missed=()):
    """The ``--strict`` refusal: a ValueError naming the unreadable files:
    those the decoder skipped (``counter``) and those the annotation loader
    skipped (``missed``: ``detection.data.annotations.MissedImage`` list)."""
    paths = [m.annotation.path for m in missed] + counter.paths
    return ValueError(
        f"{counter.count + len(missed)} of the {total} images of {data} could not be "
        f"read ({', '.join(paths[:5])}{', ...' if len(paths) > 5 else ''}; by reason: "
        f"{format_reasons(merged_reasons(counter, missed))}); --strict {what} "
        f"evaluation needs all of them. Without --strict {consequence}.")


def merged_reasons(counter, missed=()):
    """``{reason: images}`` of a decoder's ``counter`` and a loader's
    ``missed`` images together."""
    out = dict(counter.by_reason)
    for m in missed:
        out[m.reason] = out.get(m.reason, 0) + 1
    return out


def evaluate_classifier(model_or_dir, data, crops="center", *, batch_size=64,
                        max_images=None, data_dir=None, manual_dir=None,
                        multiscale_flip=False, strict=False, verbose=0, **source_kwargs):
    """Top-1 and top-5 error of a classifier directory on a data spec.

    Args:
        model_or_dir: a model directory or a loaded ``model_dir.Classifier``.
        data: a data spec; its evaluation split is used (validation/test
            folder or split, or every image of a flat folder).
        crops: "center", "10" or "multiscale".
        max_images: evaluate the first N images only (unreadable ones
            among them included).
        strict: raise ValueError, naming them, if any image can't be read.
    Returns:
        dict: top1_error, top5_error, images, readable_images,
        unreadable_images, unreadable_paths, skipped_by_reason,
        top1_error_readable, top5_error_readable, crops, data.

    An image that neither TF nor PIL can decode is named (logged as it is
    met, and in ``unreadable_paths``) and counted as wrong at top-1 and
    top-5: ``top1_error``/``top5_error`` are over all ``images``, so they
    can't fall by losing files; ``*_error_readable`` are over the readable
    images alone. ``skipped_images`` is ``unreadable_images`` (its old name).
    """
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, got {crops!r}.")
    clf = (model_dir.load_classifier(model_or_dir)
           if isinstance(model_or_dir, (str, os.PathLike)) else model_or_dir)
    source = open_source(data, data_dir=data_dir, manual_dir=manual_dir,
                         **source_kwargs)
    split = source.split("eval")
    if max_images:
        split = _first_images(split, max_images)
    from resnet_tf.data.labels import label_map_for

    label_map = label_map_for(source.class_names, clf.class_names, data)
    counter = SkipCounter(max_paths=None)
    prep, mean = clf.preprocessing, clf.mean_image
    run = classifier_function(clf.model)
    probs, labels = [], []
    if crops == "center":
        ds = make_dataset(split, prep, mean, training=False, batch_size=batch_size,
                          cache=False, counter=counter, label_map=label_map)
        for x, y in ds:
            probs.append(np.asarray(run(x), np.float32))
            labels.append(y.numpy())
        if probs:
            probs, labels = np.concatenate(probs), np.concatenate(labels)
    else:
        probs, labels = _per_image(run, split, prep, mean, crops, counter,
                                   label_map, multiscale_flip)
    unreadable, read = counter.count, len(labels)
    total = read + unreadable
    if unreadable and strict:
        raise unreadable_error("classifier", data, counter, total,
                               "they count as wrong at top-1 and top-5")
    if not read:
        raise ValueError(f"{data}: none of its {total} evaluation images could be read"
                         + (f" ({', '.join(counter.paths[:5])}, ...)" if unreadable else "")
                         + ".")
    top1, top5 = top_k_errors(probs, labels, unreadable=unreadable)
    top1_read, top5_read = top_k_errors(probs, labels)
    return {"data": data, "split": split.name, "crops": crops, "images": total,
            "top1_error": float(top1), "top5_error": float(top5),
            "readable_images": read, "unreadable_images": unreadable,
            "unreadable_paths": counter.paths, "skipped_by_reason": counter.by_reason,
            "top1_error_readable": float(top1_read), "top5_error_readable": float(top5_read),
            "skipped_images": unreadable}


def _per_image(run, split, prep, mean, crops, counter, label_map, flip):
    mean_t = None if mean is None else tf.constant(mean, tf.float32)
    ds = decoded_examples(split, counter)
    if crops == "10":
        ds = ds.map(graph_fn(lambda ex: (prep.ten_crop(ex["image"], mean_t),
                                         ex["label"])),
                    num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(graph_fn(lambda ex: (tuple(prep.multiscale_views(
                        ex["image"], mean_t, flip=flip)), ex["label"])),
                    num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    probs, labels = [], []
    for views, y in ds:
        if crops == "10":
            p = np.asarray(run(views), np.float32).mean(0)
        else:
            p = np.mean([np.asarray(run(v[None]), np.float32)[0] for v in views], axis=0)
        probs.append(p)
        labels.append(int(label_map[int(y)]))
    return (np.stack(probs) if probs else np.zeros([0, 0], np.float32)), np.array(labels)


def predict_files(model_or_dir, paths, top=5, class_index=None):
    """Top-``top`` predictions for image files.

    Returns one dict per readable file: ``{"path", "predictions": [{"class",
    "name", "probability"}...]}``; unreadable files get ``{"path", "error"}``.
    ``class_index`` (a class-index file) renames classes whose names are
    WordNet IDs (e.g. folders named n01440764) to human-readable names; an
    imported classifier's directory already holds them
    (``class_display_names``).
    """
    from resnet_tf.data.decode import read_image_file

    clf = (model_dir.load_classifier(model_or_dir)
           if isinstance(model_or_dir, (str, os.PathLike)) else model_or_dir)
    names = list(clf.meta.get("class_display_names") or clf.class_names)
    if class_index:
        human, synsets = read_class_index(class_index)
        by_wnid = dict(zip(synsets, human))
        if all(n in by_wnid for n in names):
            names = [by_wnid[n] for n in names]
        elif len(human) == len(names):
            names = human
        else:
            raise ValueError(f"{class_index}: its {len(human)} classes match neither "
                             f"the model's {len(names)} class names nor their count.")
    mean = None if clf.mean_image is None else tf.constant(clf.mean_image)
    out = []
    run = classifier_function(clf.model)
    for path in paths:
        image, error = read_image_file(path)
        if error:
            out.append({"path": path, "error": error})
            continue
        x = clf.preprocessing.eval_view(image, mean)[None]
        p = np.asarray(run(x), np.float32)[0]
        order = np.argsort(-p)[:min(top, len(p))]
        out.append({"path": path, "predictions": [
            {"class": int(c), "name": names[c], "probability": float(p[c])}
            for c in order]})
    return out
