"""Fine-tune the per-class RPN localizer from a classifier directory with
``model.fit`` and write a localizer directory.

    DIR/localizer.weights.h5   the weights (trunk, head, the classifier copy)
    DIR/resnet_tf.json         kind "localizer": model config, class names,
                               preprocessing, training options, data report, results
    DIR/mean_image.npy         the classifier's per-pixel mean image
    DIR/checkpoints/ DIR/backup/ DIR/history.csv DIR/logs/   as for classifiers
"""

import os
import time

import numpy as np

import keras

from detection.data.pipeline import format_caps
from localization.data.pipeline import count_caps, make_training_dataset
from localization.data.sources import open_localization_source
from localization.model import DEFAULT_RATIOS, DEFAULT_SCALES, Localizer
from resnet_tf import model_dir
from resnet_tf.callbacks import SkippedImagesReport, StepSchedule, epochs_for
from resnet_tf.data.decode import SkipCounter
from resnet_tf.data.preprocessing import Preprocessing
from resnet_tf.precision import model_policy, policy_scope
from resnet_tf.train import (backup_policy, dtype_policy, fine_tune_callbacks,
                             fit_resumable, label_map_for, make_strategy, shard_options,
                             worker_directory)

WEIGHTS = "localizer.weights.h5"
MEAN = "mean_image.npy"


def train_localizer(data, out_dir, *, init_from, epochs=None, iterations=None,
                    batch_size=256, learning_rate=0.001, decay_fraction=0.75,
                    warmup_iterations=0, momentum=0.9, weight_decay=1e-4, clipnorm=None,
                    policy="float32", strategy=None, feature_level=None,
                    anchor_scales=DEFAULT_SCALES, anchor_ratios=DEFAULT_RATIOS,
                    head_channels=512, anchors_per_image=8, seed=0, cache="auto",
                    auto_shard="data", backup_every=None,
                    model_kwargs=None, extra_callbacks=(), verbose=1, **source_kwargs):
    """Fine-tune a localizer.

    Args:
        data: ``ilsvrc-loc:PATH[:SPLIT]`` or ``synthetic``; its training split
            (images with boxes only; the split's report is printed and saved).
        init_from: a resnet-tf classifier directory. Its weights initialise
            the trunk and are kept, frozen, for the class guesses; its
            preprocessing (the training crops) and mean image are used.
        batch_size: images per step (the paper: 256), the global batch split
            among the replicas of ``strategy`` (None, "mirrored",
            "multiworker").
        auto_shard: how multi-worker runs split the data
            (``resnet_tf.train.shard_options``).
        backup_every: back up every this many steps (default: every five
            minutes, ``resnet_tf.train.backup_policy``); a killed run
            resumes from the last backup.
        learning_rate: SGD with ``momentum``, divided by 10 after
            ``decay_fraction`` of the run.
        anchors_per_image: anchors sampled per image (the paper: 8, 1:1).
        cache: keep decoded images in memory ("auto": for in-memory sets and
            up to 20,000 files).
    Returns:
        dict with ``model``, ``history``, ``results``, ``directory``.
    """
    t0 = time.time()
    strat = make_strategy(strategy)  # first: multi-worker set-up needs a fresh TF
    run_dir = worker_directory(out_dir, strat)
    if not init_from:
        raise ValueError("train_localizer needs init_from, a resnet-tf classifier "
                         "directory (`resnet-tf train classifier ... --out DIR`): the "
                         "localizer is fine-tuned from it and keeps its class guesses.")
    clf = model_dir.load_classifier(init_from)
    source = open_localization_source(data, seed=seed, class_names=clf.class_names,
                                      **source_kwargs)
    train = source.split("train")
    if train.report is not None:
        print(f"{data} [{train.name}]: {train.report.summary()}", flush=True)
    label_map = label_map_for(source.class_names, clf.class_names, data)
    counter = SkipCounter()
    if cache == "auto":
        cache = train.images is None and len(train.annotations) <= 20_000

    def train_stream(step):
        # A resumed run skips to the exact position of the seeded stream.
        ds = make_training_dataset(train.annotations, clf.preprocessing, clf.mean_image,
                                   batch_size=batch_size, seed=seed, counter=counter,
                                   images=train.images, label_map=label_map, cache=cache)
        return shard_options(ds.skip(step) if step else ds, auto_shard)

    steps = len(train.annotations) // batch_size
    if steps < 1:
        raise ValueError(f"{data}: {len(train.annotations)} training images are fewer "
                         f"than one batch of {batch_size}; lower --batch-size.")
    if epochs is not None and iterations is not None:
        raise ValueError("give epochs or iterations, not both.")
    if epochs is not None:
        iterations = epochs * steps
    iterations = iterations or 20 * steps
    steps = min(steps, iterations)  # a run shorter than one pass: one short epoch
    epochs = epochs_for(iterations, steps)
    kwargs = dict(model_kwargs or {})
    with dtype_policy(policy), strat.scope():
        model = Localizer(clf.model.get_config(), class_names=clf.class_names,
                          feature_level=feature_level, anchor_scales=anchor_scales,
                          anchor_ratios=anchor_ratios, head_channels=head_channels,
                          anchors_per_image=anchors_per_image, weight_decay=weight_decay,
                          seed=seed, **kwargs)
        model.ensure_built(clf.preprocessing.crop_size)
        model.load_classifier_weights(clf.model)
        model.compile(keras.optimizers.SGD(learning_rate, momentum=momentum,
                                           clipnorm=clipnorm))
    schedule = StepSchedule(learning_rate, [round(decay_fraction * iterations)],
                            linear_warmup=min(warmup_iterations, iterations // 2))
    skipped = SkippedImagesReport({"train": counter})
    callbacks = fine_tune_callbacks(run_dir, skipped, schedule, extra=extra_callbacks,
                                    backup=backup_policy(backup_every, steps, strat))
    print(f"Fine-tuning a per-class RPN localizer ({model.classifier.name} trunk to "
          f"{model.feature_level}, stride {model.stride}, "
          f"{model.anchor_generator.num_anchors} anchors per cell, "
          f"{model.num_classes} classes) from {init_from} on {data} "
          f"[{len(train.annotations)} images]: {iterations} iterations = {epochs} epochs "
          f"of {steps}, batch {batch_size}, {anchors_per_image} anchors per image, lr "
          f"{learning_rate:g} (/10 at {schedule.boundaries[0]})"
          + (f", {strat.num_replicas_in_sync} replicas ({type(strat).__name__})"
             if strat.num_replicas_in_sync > 1 else ""), flush=True)
    hist = fit_resumable(model, train_stream, epochs=epochs, steps_per_epoch=steps,
                         callbacks=callbacks, verbose=verbose)
    caps = count_caps(train.annotations)
    print(format_caps(caps), flush=True)
    results = {"epochs": epochs, "iterations": iterations,
               "train_seconds": round(time.time() - t0, 1),
               "skipped_images": skipped.totals["train"],
               "skipped_images_by_reason": counter.by_reason,
               "final_loss": float(hist["loss"][-1]) if hist.get("loss") else None,
               "data_report": train.report.to_dict() if train.report else None,
               "caps": caps}
    save_localizer(run_dir, model, clf.preprocessing, clf.mean_image, results=results,
                   display_names=_display_names(source, clf.class_names),
                   training={"data": data, "init_from": init_from, "policy": policy,
                             "learning_rate": learning_rate, "batch_size": batch_size,
                             "seed": seed, "strategy": strategy or "default",
                             "replicas": strat.num_replicas_in_sync})
    return {"model": model, "history": {k: [float(v) for v in vs] for k, vs in hist.items()},
            "results": results, "directory": run_dir}


def _display_names(source, class_names):
    names = getattr(source, "display_names", None)
    if not names:
        return None
    by_wnid = dict(zip(source.class_names, names))
    return [by_wnid.get(n, n) for n in class_names]


def save_localizer(directory, model, prep, mean_image=None, **fields):
    """Write a localizer directory (see the module docstring)."""
    os.makedirs(directory, exist_ok=True)
    model_dir.atomic_write(os.path.join(directory, WEIGHTS),
                           lambda p: model.save_weights(p))
    if mean_image is not None:
        model_dir.atomic_write(os.path.join(directory, MEAN),
                               lambda p: np.save(p, np.asarray(mean_image, np.float32)))
    return model_dir.write_meta(directory, "localizer", config=model.get_config(),
                                policy=model_policy(model),
                                class_names=model.class_names,
                                preprocessing=prep.to_dict(),
                                mean_image=MEAN if mean_image is not None else None,
                                **fields)


def load_localizer(directory):
    """``(model, preprocessing, mean_image or None, meta)`` from a localizer
    directory; the model is built under the dtype policy the directory
    records."""
    meta = model_dir.read_meta(directory, kind="localizer")
    weights = os.path.join(directory, WEIGHTS)
    if not os.path.exists(weights):
        raise ValueError(f"{weights} is missing from the localizer directory.")
    prep = Preprocessing.from_dict(meta["preprocessing"])
    with policy_scope(model_dir.recorded_policy(directory, meta)):
        model = Localizer.from_config(meta["config"])
        model.ensure_built(prep.crop_size)
    model_dir.load_weights_file(model, weights, "localizer")
    return model, prep, model_dir.read_mean_image(directory, meta), meta
