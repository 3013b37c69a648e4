"""Fine-tune the per-class RPN localizer from a classifier directory with
``model.fit`` and write a localizer directory (``localization.model_dir``).
The run around ``fit`` (strategy, the run's length, backups, resume, the SGD
recipe) is ``resnet_tf.runner``'s.
"""

import time

from detection.data.pipeline import format_caps
from localization.data.pipeline import count_caps, make_training_dataset
from localization.data.sources import open_localization_source
from localization.model import DEFAULT_RATIOS, DEFAULT_SCALES, Localizer
from localization.model_dir import save_localizer
from resnet_tf import model_dir
from resnet_tf.callbacks import SkippedImagesReport
from resnet_tf.data.decode import SkipCounter
from resnet_tf.data.labels import label_map_for
from resnet_tf.runner import TrainingRun


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
        epochs / iterations: the run's length, one of them (default: 20
            epochs); both given: ValueError
            (``resnet_tf.runner.check_run_length``).
        batch_size: images per step (the paper: 256), the global batch split
            among the replicas of ``strategy`` (None, "mirrored",
            "multiworker").
        auto_shard: how multi-worker runs split the data
            (``resnet_tf.runner.shard_options``).
        backup_every: back up every this many steps (default: every five
            minutes, ``resnet_tf.runner.backup_policy``); a killed run
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
    run = TrainingRun(out_dir, epochs=epochs, iterations=iterations, strategy=strategy,
                      policy=policy, seed=seed, auto_shard=auto_shard,
                      backup_every=backup_every)
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
        return run.shard(ds.skip(step) if step else ds)

    plan = run.plan(len(train.annotations), batch_size, default_epochs=20, what=data)

    def build_model():
        model = Localizer(clf.model.get_config(), class_names=clf.class_names,
                          feature_level=feature_level, anchor_scales=anchor_scales,
                          anchor_ratios=anchor_ratios, head_channels=head_channels,
                          anchors_per_image=anchors_per_image, weight_decay=weight_decay,
                          seed=seed, **dict(model_kwargs or {}))
        model.ensure_built(clf.preprocessing.crop_size)
        model.load_classifier_weights(clf.model)
        return model

    def describe(model, lr_schedule):
        return (f"Fine-tuning a per-class RPN localizer ({model.classifier.name} trunk to "
                f"{model.feature_level}, stride {model.stride}, "
                f"{model.anchor_generator.num_anchors} anchors per cell, "
                f"{model.num_classes} classes) from {init_from} on {data} "
                f"[{len(train.annotations)} images]: {plan.iterations} iterations = "
                f"{plan.epochs} epochs of {plan.steps_per_epoch}, batch {batch_size}, "
                f"{anchors_per_image} anchors per image, lr {learning_rate:g} (/10 at "
                f"{lr_schedule.boundaries[0]})")

    model, hist, results = fit_counted(run, build_model, train_stream, counter, train, plan, t0,
                                       describe, learning_rate=learning_rate,
                                       momentum=momentum, clipnorm=clipnorm,
                                       decay_fraction=decay_fraction,
                                       warmup_iterations=warmup_iterations,
                                       extra_callbacks=extra_callbacks, verbose=verbose)
    save_localizer(run.directory, model, clf.preprocessing, clf.mean_image, results=results,
                   display_names=_display_names(source, clf.class_names),
                   training=run.record(data=data, init_from=init_from,
                                       learning_rate=learning_rate, batch_size=batch_size))
    return {"model": model, "history": hist, "results": results,
            "directory": run.directory}


def _display_names(source, class_names):
    names = getattr(source, "display_names", None)
    if not names:
        return None
    by_wnid = dict(zip(source.class_names, names))
    return [by_wnid.get(n, n) for n in class_names]


def fit_counted(run, build_model, train_stream, counter, train, plan, t0, describe,
                **fit_options):
    """``run.fine_tune`` with the skipped-images report first among the
    callbacks, then the caps printed; shared by both localizer stages.

    Args:
        run: the ``resnet_tf.runner.TrainingRun``.
        build_model, train_stream, describe: as ``TrainingRun.fine_tune``.
        counter: the training stream's ``SkipCounter``.
        train: the training split (its ``annotations`` and ``report``).
        plan: the run's schedule (``epochs``, ``iterations``).
        t0: ``time.time()`` at the start of the command (seconds).
        **fit_options: the rest of ``fine_tune``'s keyword arguments.
    Returns:
        ``(model, history, results)``: the trained model, ``fit``'s history
        dict, and the directory's results
        record (epochs, iterations, train_seconds, skipped images by reason,
        final loss, the data report and the caps).
    """
    skipped = SkippedImagesReport({"train": counter})
    model, hist = run.fine_tune(build_model, train_stream, first_callbacks=[skipped],
                                describe=describe, **fit_options)
    caps = count_caps(train.annotations)
    print(format_caps(caps), flush=True)
    results = {"epochs": plan.epochs, "iterations": plan.iterations,
               "train_seconds": round(time.time() - t0, 1),
               "skipped_images": skipped.totals["train"],
               "skipped_images_by_reason": counter.by_reason,
               "final_loss": hist["loss"][-1] if hist.get("loss") else None,
               "data_report": train.report.to_dict() if train.report else None,
               "caps": caps}
    return model, hist, results

