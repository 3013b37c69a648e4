"""Train a classifier with ``model.fit``, as the paper did.

``train_classifier`` is what ``resnet-tf train classifier`` calls; notebooks
call it too (or use its parts: ``open_source``, ``make_dataset``,
``compile_classifier``, ``default_callbacks``).
"""

import contextlib
import dataclasses
import logging
import os
import time

import numpy as np

import keras

from resnet_tf import model_dir, zoo
from resnet_tf.backbone import ResNet
from resnet_tf.data.report import skip_summary
from resnet_tf.callbacks import (AtomicModelCheckpoint, SkippedImagesReport,
                                 StepBackup, StepSchedule, StopOnNonFiniteLoss,
                                 epochs_for)
from resnet_tf.data.decode import SkipCounter
from resnet_tf.data.pipeline import compute_mean_image, make_dataset
from resnet_tf.data.preprocessing import Preprocessing
from resnet_tf.data.sources import open_source
from resnet_tf.losses import SparseCrossEntropy
from resnet_tf.precision import POLICIES  # noqa: F401  (the list lives in precision)
from resnet_tf.recipes import get_recipe

log = logging.getLogger("resnet_tf.train")

SHARD_POLICIES = ("data", "file", "off", "auto")


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


def make_strategy(name):
    """None/"default", "mirrored" (all local GPUs, or every logical CPU), or
    "multiworker" (MultiWorkerMirroredStrategy from TF_CONFIG).

    Call it before anything else touches TensorFlow: MultiWorkerMirroredStrategy
    configures collective ops, which TF allows only at program start-up (the
    trainers create their strategy first for that reason).
    """
    import tensorflow as tf

    if name in (None, "", "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multiworker needs TF_CONFIG (the cluster's "
                             "workers and this process's task); see the README, "
                             "'Training on several machines'.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; use default, mirrored or multiworker.")


def worker_directory(out_dir, strategy):
    """Where this process writes: ``out_dir`` on the chief (or without a
    multi-worker strategy), ``out_dir/workers/TYPE-ID`` on the other workers.

    Every worker must run the checkpoint and backup callbacks (each restores
    its own copy of the state after a crash), but they must not write the
    same files; the chief's directory is the run's model directory, the
    others hold identical copies.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or getattr(strategy.extended, "should_checkpoint", True):
        return out_dir
    return os.path.join(out_dir, "workers", f"{resolver.task_type}-{resolver.task_id}")


def shard_options(ds, policy="data"):
    """Set how ``MultiWorkerMirroredStrategy`` splits ``ds`` among workers
    (one-worker strategies never shard).

    "data" (the trainers' default): every worker runs the whole pipeline and
    keeps its share of each global batch. The global batches are then exactly
    those of a one-process run with the same seed (what makes multi-worker
    runs reproducible and lets the tests compare them), and it works for the
    in-memory sets (synthetic, TFDS as arrays, the cached decoded images),
    which have no files to split. It costs each worker the input work of the
    whole batch. "file": each worker reads its own files (less input work;
    needs at least as many files as workers, TFRecord shards of similar
    size, and gives different batches than one process). "off", "auto": as
    in ``tf.data.experimental.AutoShardPolicy``.
    """
    import tensorflow as tf

    if policy not in SHARD_POLICIES:
        raise ValueError(f"Unknown auto-shard policy {policy!r}; use one of "
                         f"{SHARD_POLICIES}.")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(
        tf.data.experimental.AutoShardPolicy, policy.upper())
    return ds.with_options(options)


BACKUP_SECONDS = 300  # the default backup interval of a one-worker run


def backup_policy(backup_every, steps_per_epoch, strategy=None):
    """``StepBackup``'s schedule (its keyword arguments) for a run.

    ``backup_every`` (``--backup-every``) given: every that many steps and at
    each epoch end. Default: at the first step or epoch end
    ``BACKUP_SECONDS`` after the last backup, so a kill repeats at most about
    five minutes of work and a short run writes no backups at all (a
    backup of a ResNet-18 detector, ~90 MB with the momenta, takes ~0.5 s:
    four an epoch used to cost a small run more than its training steps).
    Multi-worker runs count steps instead, four backups an epoch (at most
    every 1000 steps): every worker must back up the same steps, and their
    clocks differ.
    """
    if backup_every:
        return {"save_freq": int(backup_every)}
    if getattr(strategy, "cluster_resolver", None) is not None:
        return {"save_freq": max(1, min(1000, steps_per_epoch // 4))}
    return {"every_seconds": BACKUP_SECONDS}


def fit_resumable(model, train_stream, *, epochs, steps_per_epoch, callbacks,
                  **fit_kwargs):
    """``model.fit`` that resumes an interrupted run at the step it was
    backed up, not at the start of its epoch.

    Args:
        train_stream: ``f(step) -> tf.data.Dataset`` of the training batches
            from batch number ``step`` of the run on (the trainers skip the
            first ``step`` batches of the seeded stream, or reseed it).
        callbacks: must contain one ``StepBackup``.
    Returns:
        the history dict of the epochs run now (a resumed partial epoch is
        one entry, its metrics over the steps after the restore).

    A backup at step ``s`` (epoch ``e = s // steps_per_epoch``, ``b = s %
    steps_per_epoch`` steps into it) resumes with a ``fit`` of the remaining
    ``steps_per_epoch - b`` steps of epoch ``e``, then one for the remaining
    epochs; the optimizer's step counter (and with it the learning-rate
    schedule) comes from the backup. The backup is deleted when the run is
    complete.
    """
    backups = [cb for cb in callbacks if isinstance(cb, StepBackup)]
    if len(backups) != 1:
        raise ValueError("fit_resumable needs exactly one StepBackup callback.")
    backup = backups[0]
    step = backup.restore(model)
    total = epochs * steps_per_epoch
    if step > total:
        raise ValueError(f"{backup.backup_dir}: the backup is at step {step}, past "
                         f"this run's {total} steps; delete it or train longer.")
    if step:
        print(f"Resuming from the backup of step {step} ({backup.backup_dir}): epoch "
              f"{step // steps_per_epoch + 1}, step {step % steps_per_epoch + 1} of "
              f"{steps_per_epoch}.", flush=True)
    history = {}

    def run(first_epoch, last_epoch, steps):
        ds = train_stream(backup.step)
        _build_before_distributed_fit(model, ds)
        h = model.fit(ds, initial_epoch=first_epoch,
                      epochs=last_epoch, steps_per_epoch=steps, callbacks=callbacks,
                      shuffle=False, **fit_kwargs).history
        for k, v in h.items():
            history.setdefault(k, []).extend(v)
        return not model.stop_training

    epoch, done = divmod(step, steps_per_epoch)
    go_on = True
    if done:
        go_on = run(epoch, epoch + 1, steps_per_epoch - done)
        epoch += 1
    if go_on and epoch < epochs:
        run(epoch, epochs, steps_per_epoch)
    backup.finish()
    return history


def _build_before_distributed_fit(model, dataset):
    """Build the model, its compiled metrics and optimizer from the dataset's
    ``element_spec`` before a distributed ``fit``, and work around a fault of
    Keras 3.15's ``fit`` under MultiWorkerMirroredStrategy. Models trained
    without a strategy are left alone.

    - Under a strategy, Keras's ``fit`` builds the model from a real batch:
      it opens an iterator on the training set, "MEAN"-reduces a batch over
      the replicas, then opens a new iterator. The first iterator advances
      the random stream of the augmentation (``rerandomize_each_iteration``),
      so distributed runs would train on other crops than one-device and
      resumed runs; under MultiWorkerMirroredStrategy the reduce even fails
      (``cross_device_ops`` cannot convert a nest of ``PerReplica``). The
      shapes are all the build needs, and the element spec has them.
    - Under MultiWorkerMirroredStrategy Keras averages each step's scalar
      logs with ``reduce("MEAN", v, axis=0)``, which fails on scalars: they
      are averaged over the replicas with ``axis=None`` instead (a
      cross-worker all-reduce of a few scalars a step). The training step
      itself (``strategy.run(model.train_step)``, gradients all-reduced by
      the optimizer) is Keras's own.
    """
    import tensorflow as tf

    strategy = getattr(model, "_distribute_strategy", None)
    if strategy is None or getattr(model, "_built_for_distribution", False):
        return
    x, y = dataset.element_spec[:2]
    with strategy.scope():
        model._symbolic_build(data_batch=(x, y))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    model._built_for_distribution = True
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def make_function(step_function):
        def mean(v):
            if isinstance(v, tf.distribute.DistributedValues):
                return strategy.reduce("MEAN", v, axis=None)
            return v

        @tf.function(reduce_retracing=True)
        def one_step(iterator):
            outputs = strategy.run(step_function, args=(iterator.get_next(),))
            return tf.nest.map_structure(mean, outputs)

        return one_step

    model._make_function = make_function


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


def fine_tune_callbacks(out_dir, *first, extra=(), backup=None):
    """The callbacks of a detector/localizer fine-tuning run: the stop on a
    NaN/Inf loss, ``first`` (e.g. the schedule), the last weights in
    checkpoints/ (atomic), the step-level backup (``backup``: its schedule,
    ``backup_policy``), CSV history, TensorBoard, then ``extra``."""
    os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
    return [
        StopOnNonFiniteLoss(out_dir), *first,
        AtomicModelCheckpoint(os.path.join(out_dir, "checkpoints", "last.weights.h5"),
                              save_weights_only=True),
        StepBackup(os.path.join(out_dir, "backup"), **(backup or backup_policy(None, 1))),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), profile_batch=0),
        *extra,
    ]


@contextlib.contextmanager
def dtype_policy(policy):
    """``precision.policy_scope(policy)`` for building a model to train,
    with a warning where ``policy`` trains slower than float32 here."""
    from resnet_tf.precision import check_policy, policy_scope, slow_bfloat16_reason

    reason = slow_bfloat16_reason(check_policy(policy, "--precision"))
    if reason:
        log.warning(reason)
    with policy_scope(policy):
        yield


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
        epochs / iterations: shorten or lengthen the run (default: the
            recipe's ``max_iterations``); step boundaries scale with it.
        batch_size, learning_rate, clipnorm, label_smoothing, val_fraction:
            recipe overrides (the learning rate scales with the batch size
            unless given).
        policy: "float32", "mixed_bfloat16" or "mixed_float16".
        strategy: None, "mirrored" or "multiworker". ``batch_size`` is the
            global batch, split among the replicas; the learning rate follows
            the global batch as without a strategy (see the README,
            "Distributed training").
        auto_shard: how multi-worker runs split the data (``shard_options``).
        backup_every: back up the run every this many steps (default: every
            five minutes, ``backup_policy``); a killed run resumes from the
            last backup.
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
    strat = make_strategy(strategy)  # first: multi-worker set-up needs a fresh TF
    run_dir = worker_directory(out_dir, strat)
    recipe = get_recipe(recipe, batch_size=batch_size, clipnorm=clipnorm,
                        label_smoothing=label_smoothing,
                        val_fraction=val_fraction, step_epochs=step_epochs,
                        schedule="steps" if step_epochs else None)
    lr = learning_rate or recipe.learning_rate
    if deterministic:
        keras.utils.set_random_seed(seed)
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

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

    steps_per_epoch = train_split.num_examples // recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{source.spec}: {train_split.num_examples} training images "
                         f"are fewer than one batch of {recipe.batch_size}; lower "
                         "--batch-size.")
    if epochs is not None and iterations is not None:
        raise ValueError("give epochs or iterations, not both.")
    if epochs is not None:
        iterations = epochs * steps_per_epoch
    iterations = iterations or recipe.max_iterations
    # A run shorter than one pass over the data is one short epoch.
    steps_per_epoch = min(steps_per_epoch, iterations)
    epochs = epochs_for(iterations, steps_per_epoch)
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
        return shard_options(ds, auto_shard)

    val_ds = None
    if val_split is not None:
        val_ds = make_dataset(val_split, prep, mean_image, training=False,
                              batch_size=recipe.batch_size, cache=cache,
                              counter=counters["val"], label_map=label_map)
        val_ds = shard_options(val_ds, auto_shard)

    with dtype_policy(policy), strat.scope():
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
          + (f", {strat.num_replicas_in_sync} replicas ({type(strat).__name__}, "
             f"{recipe.batch_size // strat.num_replicas_in_sync} images each)"
             if strat.num_replicas_in_sync > 1 else ""), flush=True)
    callbacks = default_callbacks(run_dir, counters, schedule, recipe,
                                  monitor="val_top1" if val_ds is not None else "top1",
                                  backup=backup_policy(backup_every, steps_per_epoch,
                                                       strat))
    callbacks += list(extra_callbacks)
    history = fit_resumable(net, train_stream, epochs=epochs,
                            steps_per_epoch=steps_per_epoch, validation_data=val_ds,
                            callbacks=callbacks, verbose=verbose)
    hist = {k: [float(v) for v in vals] for k, vals in history.items()}
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
        run_dir, net, class_names, mean_image, prep, recipe=recipe, results=results,
        extra={"training": {"data": data, "val_data": val_data, "model": model,
                            "policy": policy, "seed": seed, "learning_rate": lr,
                            "strategy": strategy or "default",
                            "replicas": strat.num_replicas_in_sync,
                            "boundaries": list(boundaries), "warmup_lr": warmup}})
    return TrainResult(run_dir, hist, results, net)


def label_map_for(source_names, model_names, what):
    """int32 [len(source_names)]: the model index of each source class."""
    index = {n: i for i, n in enumerate(model_names)}
    missing = [n for n in source_names if n not in index]
    if missing:
        raise ValueError(f"{what}: classes {missing[:5]} are not among the model's "
                         f"{len(model_names)} classes (e.g. {model_names[:5]}).")
    return np.array([index[n] for n in source_names], np.int32)


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
