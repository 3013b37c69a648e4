"""Fine-tune Faster R-CNN with ``model.fit`` (from a classifier directory or
from scratch) and write a detector directory (``detection.model_dir``).
The run around ``fit`` (strategy, the run's length, backups, resume, the SGD
recipe) is ``resnet_tf.runner``'s.
"""

import time

import numpy as np

from detection.data.pipeline import (DetectionPreprocessing, count_caps, format_caps,
                                     make_detection_dataset, most_boxes)
from detection.data.sources import open_detection_source
from detection.heads import load_backbone_weights
from detection.model import FasterRCNN
from detection.model_dir import save_detector
from resnet_tf import model_dir, zoo
from resnet_tf.data.decode import SkipCounter
from resnet_tf.data.report import skip_summary
from resnet_tf.runner import TrainingRun


def train_detector(data, out_dir, *, init_from=None, depth=50, epochs=None,
                   iterations=None, batch_size=2, learning_rate=0.001,
                   decay_fraction=0.75, warmup_iterations=100, momentum=0.9,
                   weight_decay=1e-4, clipnorm=None, policy="float32", strategy=None,
                   shorter_side=600, max_side=1000, flip=True, train_scales=None,
                   batching="grouped", seed=0,
                   deterministic=False, auto_shard="data", backup_every=None,
                   model_kwargs=None, extra_callbacks=(), verbose=1, **source_kwargs):
    """Train a detector.

    Args:
        data: ``voc:``, ``coco:``, ``tfds:`` or ``synthetic`` (see
            ``detection.data.sources``); the training split.
        epochs / iterations: the run's length, one of them (default: 20
            epochs); both given: ValueError
            (``resnet_tf.runner.check_run_length``).
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
            (``resnet_tf.runner.shard_options``).
        backup_every: back up every this many steps (default: every five
            minutes, ``resnet_tf.runner.backup_policy``); a killed run
            resumes from the last backup, at that step
            of the same data stream.
        train_scales, batching: ``DetectionPreprocessing``'s (multi-scale
            training, off by default; aspect-ratio grouped batches or the
            square), recorded in the directory's ``preprocessing``.
        model_kwargs: ``FasterRCNN`` arguments; ``max_detections`` left out
            is the larger of 100 and the split's most boxes in one image.
    Every box of every image trains (targets padded to the split's largest
    count); the limits that met the data are printed as "Capped: ..." and
    saved as ``results["caps"]`` (``detection.data.pipeline.count_caps``).
    Returns:
        dict of results (history, epochs, seconds, skipped, caps).
    """
    t0 = time.time()
    run = TrainingRun(out_dir, epochs=epochs, iterations=iterations, strategy=strategy,
                      policy=policy, seed=seed, deterministic=deterministic,
                      auto_shard=auto_shard, backup_every=backup_every)
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
                                  train_scales=train_scales, batching=batching,
                                  **({"mean_rgb": mean_rgb} if mean_rgb else {}))
    counter = SkipCounter()

    def train_stream(step):
        # The detector's input work is small next to its steps: a resumed run
        # always skips to the exact position of the seeded stream.
        ds = make_detection_dataset(train.annotations, prep, training=True,
                                    batch_size=batch_size, seed=seed, counter=counter,
                                    images=train.images,
                                    image_bytes=train.image_bytes and train.image_bytes(),
                                    repeat=True)
        return run.shard(ds.skip(step) if step else ds)

    plan = run.plan(len(train.annotations), batch_size, default_epochs=20, what=data)

    def build_model():
        model = FasterRCNN(len(source.class_names), depth=depth,
                           class_names=source.class_names, weight_decay=weight_decay,
                           seed=seed, **kwargs)
        model.ensure_built()
        if clf is not None:
            load_backbone_weights(model, clf.model)
        return model

    def describe(model, lr_schedule):
        return (f"Training Faster R-CNN {zoo.display_name(depth, model.width)}, C4, on "
                f"{data} [{len(train.annotations)} images, {len(source.class_names)} "
                f"classes], {'from ' + init_from if init_from else 'from scratch'}: "
                f"{plan.iterations} iterations = {plan.epochs} epochs of "
                f"{plan.steps_per_epoch}, batch {batch_size}, lr {learning_rate:g} (/10 at "
                f"{lr_schedule.boundaries[0]}, warm-up {lr_schedule.linear_warmup})")

    model, hist = run.fine_tune(build_model, train_stream, learning_rate=learning_rate,
                                momentum=momentum, clipnorm=clipnorm,
                                decay_fraction=decay_fraction,
                                warmup_iterations=warmup_iterations,
                                extra_callbacks=extra_callbacks, describe=describe,
                                verbose=verbose)
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
               "final_loss": hist["loss"][-1] if hist.get("loss") else None}
    save_detector(run.directory, model, prep, results=results,
                  training=run.record(data=data, init_from=init_from,
                                      learning_rate=learning_rate, batch_size=batch_size))
    return {"model": model, "history": hist, "results": results,
            "directory": run.directory}
