"""Train a classifier with ``model.fit``, as the paper did.

``train_classifier`` is what ``resnet-tf train classifier`` calls; notebooks
call it too (or use its parts: ``open_source``, ``make_dataset``,
``compile_classifier``, ``default_callbacks``). The run around ``fit``
(strategy, the run's length, backups, resume) is ``resnet_tf.runner``'s,
shared with the detector's and the localizer's trainers.
"""

import dataclasses
import os
import time

import keras

from resnet_tf import model_dir, zoo
from resnet_tf.backbone import ResNet
from resnet_tf.callbacks import (AtomicModelCheckpoint, SkippedImagesReport,
                                 StepBackup, StepSchedule, StopOnNonFiniteLoss)
from resnet_tf.data.decode import SkipCounter
from resnet_tf.data.labels import label_map_for
from resnet_tf.data.pipeline import compute_mean_image, make_dataset
from resnet_tf.data.preprocessing import Preprocessing
from resnet_tf.data.report import skip_summary
from resnet_tf.data.sources import open_source
from resnet_tf.losses import SparseCrossEntropy
from resnet_tf.recipes import get_recipe
from resnet_tf.runner import TrainingRun, backup_policy


@dataclasses.dataclass
class TrainResult:
    directory: str
    history: dict
    results: dict
    model: object


def top_k_metrics(num_classes):
    k = min(5, num_classes)
    return [keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=k, name="top5")]


def compile_classifier(model, recipe, learning_rate=None):
    """SGD with momentum, cross-entropy (weight decay lives in the model's
    kernel regularizers), top-1 and top-5 accuracy."""
    optimizer = keras.optimizers.SGD(
        learning_rate=learning_rate or recipe.learning_rate,
        momentum=recipe.momentum, clipnorm=recipe.clipnorm)
    model.compile(optimizer=optimizer,
                  loss=SparseCrossEntropy(label_smoothing=recipe.label_smoothing),
                  metrics=top_k_metrics(model.output.shape[-1]))
    return model


def default_callbacks(out_dir, counters, schedule, recipe, monitor="val_top1",
                      backup=None):
    """The stop on a NaN/Inf loss (first, so nothing after it saves a broken
    state), skipped-image reports, the learning-rate schedule, best and last
    checkpoints (atomic), the step-level backup (``backup``: its schedule,
    ``backup_policy``), CSV history and TensorBoard."""
    ckpt = os.path.join(out_dir, "checkpoints")
    os.makedirs(ckpt, exist_ok=True)
    cbs = [StopOnNonFiniteLoss(out_dir), SkippedImagesReport(counters)]
    if schedule is not None:
        cbs.append(schedule)
    if recipe.schedule == "plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode="max", factor=recipe.lr_factor,
            patience=recipe.plateau_patience, verbose=1))
    cbs += [
        AtomicModelCheckpoint(os.path.join(ckpt, "best.keras"), monitor=monitor,
                              mode="max", save_best_only=True),
        AtomicModelCheckpoint(os.path.join(ckpt, "last.keras")),
        StepBackup(os.path.join(out_dir, "backup"), **(backup or backup_policy(None, 1))),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"),
                                    update_freq="epoch", profile_batch=0),
    ]
    return cbs


def train_classifier(data, out_dir, *, model="resnet20", recipe="cifar", epochs=None,
                     iterations=None, batch_size=None, learning_rate=None,
                     policy="float32", strategy=None, clipnorm=None,
                     label_smoothing=None, val_fraction=None, val_data=None,
                     step_epochs=None, auto_shard="data", backup_every=None,
                     seed=0, deterministic=False, cache="auto", mean_images=None,
                     data_dir=None, manual_dir=None, download=False,
                     synthetic_size=32, synthetic_train=2000, synthetic_eval=500,
                     model_kwargs=None, preprocessing_overrides=None,
                     extra_callbacks=(), verbose=1):
    """Train a ResNet classifier and write a model directory.

    Args:
        data: a data spec (``tfds:NAME[:SPLIT]``, ``folder:PATH``, ``synthetic``).
        out_dir: the model directory to write (see ``model_dir``); an
            unfinished run in it is resumed (BackupAndRestore).
        model: an architecture name (``resnet20``, ``plain56``, ``resnet50``...).
        recipe: "cifar" or "imagenet" (see ``recipes``).
        epochs / iterations: shorten or lengthen the run, one of them
            (default: the recipe's ``max_iterations``); step boundaries scale
            with it. Both given: ValueError
            (``resnet_tf.runner.check_run_length``).
        batch_size, learning_rate, clipnorm, label_smoothing, val_fraction:
            recipe overrides (the learning rate scales with the batch size
            unless given).
        policy: "float32", "mixed_bfloat16", "mixed_float16", or "auto"
            (``resnet_tf.precision.resolve_precision``).
        strategy: None, "mirrored" or "multiworker". ``batch_size`` is the
            global batch, split among the replicas; the learning rate follows
            the global batch as without a strategy (see
            docs/distributed.md).
        auto_shard: how multi-worker runs split the data
            (``resnet_tf.runner.shard_options``).
        backup_every: back up the run every this many steps (default: every
            five minutes, ``resnet_tf.runner.backup_policy``); a killed run
            resumes from the last backup.
        val_data: a separate data spec for validation.
        step_epochs: divide the learning rate by 10 at these epochs (a
            "steps" schedule, whatever the recipe's).
        deterministic: fixed seeds and element order (slower input pipeline).
        mean_images: compute the mean image over at most this many images.
        model_kwargs: extra ``ResNet`` arguments (``shortcut``, ``stride_on``...).
        extra_callbacks: Keras callbacks added after the default ones.
    Returns:
        ``TrainResult`` with the directory, the history and final metrics.
    """
    t_start = time.time()
    run = TrainingRun(out_dir, epochs=epochs, iterations=iterations, strategy=strategy,
                      policy=policy, seed=seed, deterministic=deterministic,
                      auto_shard=auto_shard, backup_every=backup_every)
    recipe = get_recipe(recipe, batch_size=batch_size, clipnorm=clipnorm,
                        label_smoothing=label_smoothing,
                        val_fraction=val_fraction, step_epochs=step_epochs,
                        schedule="steps" if step_epochs else None)
    lr = learning_rate or recipe.learning_rate

    source = open_source(data, val_fraction=recipe.val_fraction, seed=seed,
                         data_dir=data_dir, manual_dir=manual_dir, download=download,
                         synthetic_size=synthetic_size,
                         synthetic_train=synthetic_train, synthetic_eval=synthetic_eval)
    class_names = source.class_names
    train_split = source.split("train")
    val_source = (open_source(val_data, data_dir=data_dir, manual_dir=manual_dir,
                              download=download, seed=seed) if val_data else source)
    val_split = _eval_split_or_none(val_source, source, recipe)
    label_map = None
    if val_data and val_split is not None:
        label_map = label_map_for(val_source.class_names, class_names, val_data)

    prep = Preprocessing.for_style(recipe.preprocessing,
                                   **(preprocessing_overrides or {}))
    counters = {"train": SkipCounter(), "val": SkipCounter()}
    mean_counter = SkipCounter()
    if prep.mean_subtraction:
        n_mean = min(mean_images or train_split.num_examples, train_split.num_examples)
        print(f"Computing the mean image over {n_mean} training images of {source.spec} "
              "...", flush=True)
        mean_image = compute_mean_image(train_split, prep, mean_counter,
                                        max_images=mean_images)
        skipped_mean = mean_counter.reset()
        if skipped_mean:
            print(f"Mean image: skipped {skipped_mean} unreadable images "
                  "(named in the warnings above).", flush=True)
    else:
        mean_image = None

    plan = run.plan(train_split.num_examples, recipe.batch_size,
                    default_iterations=recipe.max_iterations, what=source.spec)
    iterations, epochs, steps_per_epoch = (plan.iterations, plan.epochs,
                                           plan.steps_per_epoch)
    scale = iterations / recipe.max_iterations

    depth, residual = zoo.parse_name(model)
    family = (model_kwargs or {}).get("family") or (
        "cifar" if recipe.preprocessing == "cifar" and depth not in zoo.IMAGENET_STAGES
        else None)
    layout = zoo.stage_layout(depth, family)
    warmup = recipe.resolved_warmup(layout.family, depth)
    boundaries = ()
    if recipe.schedule == "steps":
        if recipe.step_epochs:
            boundaries = [e * steps_per_epoch for e in recipe.step_epochs]
        else:
            boundaries = [round(f * iterations) for f in recipe.step_fractions]
    schedule = StepSchedule(lr, boundaries, recipe.lr_factor, warmup_lr=warmup,
                            warmup_until_error=recipe.warmup_until_error)

    def train_stream(step):
        # Resuming at batch `step`: deterministic runs skip to the exact
        # position of the seeded stream (the input work of `step` batches,
        # no model work); others reseed instead, which costs nothing and
        # repeats no batch, as their order is not reproducible anyway.
        ds = make_dataset(train_split, prep, mean_image, training=True,
                          batch_size=recipe.batch_size,
                          seed=seed if deterministic else seed + step,
                          deterministic=deterministic, cache=cache,
                          counter=counters["train"], repeat=True)
        if deterministic and step:
            ds = ds.skip(step)
        return run.shard(ds)

    val_ds = None
    if val_split is not None:
        val_ds = make_dataset(val_split, prep, mean_image, training=False,
                              batch_size=recipe.batch_size, cache=cache,
                              counter=counters["val"], label_map=label_map)
        val_ds = run.shard(val_ds)

    with run.building():
        kwargs = dict(model_kwargs or {})
        kwargs.setdefault("family", layout.family)
        net = ResNet(depth=depth, residual=residual, classes=len(class_names),
                     weight_decay=recipe.weight_decay, **kwargs)
        compile_classifier(net, recipe, lr)

    print(f"Training {net.name} ({layout.family}, {len(class_names)} classes) on "
          f"{source.spec} [{train_split.name}: {train_split.num_examples} images], "
          f"recipe {recipe.name}: batch {recipe.batch_size}, lr {lr:g}, "
          f"{iterations} iterations = {epochs} epochs of {steps_per_epoch} steps"
          + (f", lr /10 at iterations {list(boundaries)}" if boundaries else "")
          + (f", warm-up at {warmup}" if warmup else "")
          + (f", scaled x{scale:.3g} from the paper's {recipe.max_iterations}"
             if scale != 1 else "")
          + run.replicas_note(recipe.batch_size), flush=True)
    callbacks = default_callbacks(run.directory, counters, schedule, recipe,
                                  monitor="val_top1" if val_ds is not None else "top1",
                                  backup=run.backup())
    callbacks += list(extra_callbacks)
    hist = run.fit(net, train_stream, callbacks, validation_data=val_ds, verbose=verbose)
    skipped = next(cb for cb in callbacks if isinstance(cb, SkippedImagesReport))
    results = {
        "epochs": epochs, "iterations": iterations,
        "train_seconds": round(time.time() - t_start, 1),
        "skipped_images": skipped.totals,
        "skipped_by_reason": {k: c.by_reason for k, c in
                              {**counters, "mean": mean_counter}.items()},
    }
    print(skip_summary({"train images": counters["train"], "val images": counters["val"],
                        "mean-image pass": mean_counter}), flush=True)
    if "val_top1" in hist and hist["val_top1"]:
        results["val_top1_error"] = 1 - hist["val_top1"][-1]
        results["val_top5_error"] = 1 - hist["val_top5"][-1]
    results["train_top1_error"] = 1 - hist["top1"][-1] if hist.get("top1") else None
    model_dir.save_classifier(
        run.directory, net, class_names, mean_image, prep, recipe=recipe, results=results,
        extra={"training": run.record(data=data, val_data=val_data, model=model,
                                      learning_rate=lr, boundaries=list(boundaries),
                                      warmup_lr=warmup)})
    return TrainResult(run.directory, hist, results, net)


def _eval_split_or_none(val_source, source, recipe):
    if val_source is not source:
        return val_source.split("eval")
    try:
        split = source.split("eval")
    except ValueError:
        return None
    # A folder without a validation folder or hold-out: no validation (its
    # "evaluation" split is the training images).
    if split.name == "all" or getattr(split, "training_images", False):
        return None
    return split
