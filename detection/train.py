"""Fine-tune Faster R-CNN with ``model.fit`` (from a classifier directory or
from scratch) and write a detector directory.

    DIR/detector.weights.h5   the weights
    DIR/resnet_tf.json        kind "detector": model config, class names,
                              preprocessing, training options, results
    DIR/checkpoints/ DIR/backup/ DIR/history.csv DIR/logs/   as for classifiers
"""

import os
import time

import numpy as np

import keras

from detection.data.pipeline import (DetectionPreprocessing, count_caps, format_caps,
                                     make_detection_dataset, most_boxes)
from detection.data.sources import open_detection_source
from detection.heads import load_backbone_weights
from detection.model import FasterRCNN
from resnet_tf import model_dir, zoo
from resnet_tf.callbacks import StepSchedule, epochs_for
from resnet_tf.data.decode import SkipCounter
from resnet_tf.data.report import skip_summary
from resnet_tf.precision import model_policy, policy_scope
from resnet_tf.train import (backup_policy, dtype_policy, fine_tune_callbacks,
                             fit_resumable, make_strategy, shard_options,
                             worker_directory)

WEIGHTS = "detector.weights.h5"


def train_detector(data, out_dir, *, init_from=None, depth=50, epochs=None,
                   iterations=None, batch_size=2, learning_rate=0.001,
                   decay_fraction=0.75, warmup_iterations=100, momentum=0.9,
                   weight_decay=1e-4, clipnorm=None, policy="float32", strategy=None,
                   shorter_side=600, max_side=1000, flip=True, seed=0,
                   deterministic=False, auto_shard="data", backup_every=None,
                   model_kwargs=None, extra_callbacks=(), verbose=1, **source_kwargs):
    """Train a detector.

    Args:
        data: ``voc:``, ``coco:``, ``tfds:`` or ``synthetic`` (see
            ``detection.data.sources``); the training split.
        init_from: a resnet-tf classifier directory: conv1..conv4 go into the
            shared trunk, conv5 into the RoI head, its per-pixel mean (as a
            per-channel mean) into the preprocessing, and its depth, width and
            layout (stride_on, conv_bias, bn_epsilon) are used.
            None trains from scratch (trainable BN, nothing frozen).
        learning_rate: 0.001, divided by 10 after ``decay_fraction`` of the run
            (the paper's COCO schedule: 240k of 320k iterations), after a
            linear warm-up of ``warmup_iterations``.
        batch_size: the global batch (split among the replicas of
            ``strategy``: None, "mirrored" or "multiworker").
        deterministic: fixed seeds and deterministic TF ops (slower), so
            that a run, and a run killed and resumed, give the same weights.
        auto_shard: how multi-worker runs split the data
            (``resnet_tf.train.shard_options``).
        backup_every: back up every this many steps (default: every five
            minutes, ``resnet_tf.train.backup_policy``); a killed run
            resumes from the last backup, at that step
            of the same data stream.
        model_kwargs: ``FasterRCNN`` arguments; ``max_detections`` left out
            is the larger of 100 and the split's most boxes in one image.
    Every box of every image trains (targets padded to the split's largest
    count); the limits that met the data are printed as "Capped: ..." and
    saved as ``results["caps"]`` (``detection.data.pipeline.count_caps``).
    Returns:
        dict of results (history, epochs, seconds, skipped, caps).
    """
    t0 = time.time()
    strat = make_strategy(strategy)  # first: multi-worker set-up needs a fresh TF
    run_dir = worker_directory(out_dir, strat)
    if deterministic:
        keras.utils.set_random_seed(seed)
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    source = open_detection_source(data, seed=seed, **source_kwargs)
    train = source.split("train")
    mean_rgb = None
    kwargs = dict(model_kwargs or {})
    clf = None
    if init_from:
        clf = model_dir.load_classifier(init_from)
        depth = clf.model.depth
        if kwargs.get("width") not in (None, clf.model.width):
            raise ValueError(f"model_kwargs width={kwargs['width']} but the classifier in "
                             f"{init_from} has width {clf.model.width}; leave width out "
                             "when fine-tuning from a classifier.")
        kwargs["width"] = clf.model.width
        # The classifier's layout: imported weights are v1 with conv bias
        # (keras.applications) or v1.5 without (torchvision, timm).
        for key in ("stride_on", "conv_bias", "bn_epsilon"):
            have = getattr(clf.model, key)
            if kwargs.get(key) not in (None, have):
                raise ValueError(f"model_kwargs {key}={kwargs[key]!r} but the classifier in "
                                 f"{init_from} has {key}={have!r}; leave {key} out when "
                                 "fine-tuning from a classifier.")
            kwargs[key] = have
        if clf.mean_image is not None:
            mean_rgb = tuple(float(v) for v in np.asarray(clf.mean_image).mean(axis=(0, 1)))
    else:
        kwargs.setdefault("frozen_bn", False)
        kwargs.setdefault("freeze_at", 0)
    # Detections per image adapt to the data: an image with more objects
    # than the default 100 can still have every one returned.
    most = most_boxes(train.annotations)
    if kwargs.get("max_detections") is None and most > 100:
        kwargs["max_detections"] = most
    prep = DetectionPreprocessing(shorter_side=shorter_side, max_side=max_side, flip=flip,
                                  **({"mean_rgb": mean_rgb} if mean_rgb else {}))
    counter = SkipCounter()

    def train_stream(step):
        # The detector's input work is small next to its steps: a resumed run
        # always skips to the exact position of the seeded stream.
        ds = make_detection_dataset(train.annotations, prep, training=True,
                                    batch_size=batch_size, seed=seed, counter=counter,
                                    images=train.images,
                                    image_bytes=train.image_bytes and train.image_bytes()
                                    ).repeat()
        return shard_options(ds.skip(step) if step else ds, auto_shard)

    steps = max(1, len(train.annotations) // batch_size)
    if epochs is not None:
        iterations = epochs * steps
    iterations = iterations or 20 * steps
    steps = min(steps, iterations)  # a run shorter than one pass: one short epoch
    epochs = epochs_for(iterations, steps)
    with dtype_policy(policy), strat.scope():
        model = FasterRCNN(len(source.class_names), depth=depth,
                           class_names=source.class_names, weight_decay=weight_decay,
                           seed=seed, **kwargs)
        model.ensure_built()
        if clf is not None:
            load_backbone_weights(model, clf.model)
        model.compile(keras.optimizers.SGD(learning_rate, momentum=momentum,
                                           clipnorm=clipnorm))
    schedule = StepSchedule(learning_rate, [round(decay_fraction * iterations)],
                            linear_warmup=min(warmup_iterations, iterations // 2))
    callbacks = fine_tune_callbacks(run_dir, schedule, extra=extra_callbacks,
                                    backup=backup_policy(backup_every, steps, strat))
    print(f"Training Faster R-CNN {zoo.display_name(depth, model.width)}, C4, on {data} "
          f"[{len(train.annotations)} images, {len(source.class_names)} classes], "
          f"{'from ' + init_from if init_from else 'from scratch'}: {iterations} "
          f"iterations = {epochs} epochs of {steps}, batch {batch_size}, lr "
          f"{learning_rate:g} (/10 at {schedule.boundaries[0]}, warm-up "
          f"{schedule.linear_warmup})"
          + (f", {strat.num_replicas_in_sync} replicas ({type(strat).__name__})"
             if strat.num_replicas_in_sync > 1 else ""), flush=True)
    hist = fit_resumable(model, train_stream, epochs=epochs, steps_per_epoch=steps,
                         callbacks=callbacks, verbose=verbose)
    print(skip_summary({f"{data} annotations": train.report, "train images": counter}),
          flush=True)
    caps = count_caps(train.annotations, prep, proposals=model.proposal_config,
                      max_detections=model.max_detections,
                      anchors_per_location=model.anchor_generator.num_anchors)
    print(format_caps(caps), flush=True)
    # What actually ran (a callback may stop early, e.g. a time budget).
    results = {"epochs": len(hist.get("loss", [])),
               "iterations": int(model.optimizer.iterations.numpy()),
               "train_seconds": round(time.time() - t0, 1),
               "skipped_images": counter.count,
               "skipped_by_reason": {"annotations": train.report.by_reason
                                     if train.report else {},
                                     "images": counter.by_reason},
               "caps": caps,
               "final_loss": float(hist["loss"][-1]) if hist.get("loss") else None}
    save_detector(run_dir, model, prep, results=results,
                  training={"data": data, "init_from": init_from, "policy": policy,
                            "learning_rate": learning_rate, "batch_size": batch_size,
                            "seed": seed, "strategy": strategy or "default",
                            "replicas": strat.num_replicas_in_sync})
    return {"model": model, "history": {k: [float(v) for v in vs] for k, vs in hist.items()},
            "results": results, "directory": run_dir}


def save_detector(directory, model, prep, **fields):
    os.makedirs(directory, exist_ok=True)
    model_dir.atomic_write(os.path.join(directory, WEIGHTS),
                           lambda p: model.save_weights(p))
    return model_dir.write_meta(directory, "detector", config=model.get_config(),
                                policy=model_policy(model),
                                class_names=model.class_names,
                                preprocessing=prep.to_dict(), **fields)


def load_detector(directory):
    """``(model, preprocessing, meta)`` from a detector directory; the model
    is built under the dtype policy the directory records."""
    meta = model_dir.read_meta(directory, kind="detector")
    weights = os.path.join(directory, WEIGHTS)
    if not os.path.exists(weights):
        raise ValueError(f"{weights} is missing from the detector directory.")
    with policy_scope(model_dir.recorded_policy(directory, meta)):
        model = FasterRCNN.from_config(meta["config"])
        model.ensure_built()
    prep = DetectionPreprocessing(**{**meta["preprocessing"],
                                     "mean_rgb": tuple(meta["preprocessing"]["mean_rgb"])})
    model_dir.load_weights_file(model, weights, "detector")
    return model, prep, meta
