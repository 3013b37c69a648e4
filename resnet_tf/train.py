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
from resnet_tf.callbacks import SkippedImagesReport, StepSchedule, epochs_for
from resnet_tf.data.decode import SkipCounter
from resnet_tf.data.pipeline import compute_mean_image, make_dataset
from resnet_tf.data.preprocessing import Preprocessing
from resnet_tf.data.sources import open_source
from resnet_tf.losses import SparseCrossEntropy
from resnet_tf.recipes import get_recipe

log = logging.getLogger("resnet_tf.train")

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


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
    "multiworker" (MultiWorkerMirroredStrategy from TF_CONFIG)."""
    import tensorflow as tf

    if name in (None, "", "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; use default, mirrored or multiworker.")


def default_callbacks(out_dir, counters, schedule, recipe, monitor="val_top1"):
    """Best and last checkpoints, BackupAndRestore, TensorBoard, CSV history,
    TerminateOnNaN, the learning-rate schedule and skipped-image reports."""
    ckpt = os.path.join(out_dir, "checkpoints")
    os.makedirs(ckpt, exist_ok=True)
    cbs = [SkippedImagesReport(counters)]
    if schedule is not None:
        cbs.append(schedule)
    if recipe.schedule == "plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode="max", factor=recipe.lr_factor,
            patience=recipe.plateau_patience, verbose=1))
    cbs += [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(os.path.join(ckpt, "best.keras"),
                                        monitor=monitor, mode="max",
                                        save_best_only=True),
        keras.callbacks.ModelCheckpoint(os.path.join(ckpt, "last.keras")),
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"),
                                    update_freq="epoch", profile_batch=0),
    ]
    return cbs


def fine_tune_callbacks(out_dir, *first, extra=()):
    """The callbacks of a detector/localizer fine-tuning run: ``first`` (e.g.
    the schedule), TerminateOnNaN, the last weights in checkpoints/,
    BackupAndRestore, CSV history, TensorBoard, then ``extra``."""
    os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
    return [
        *first, keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "checkpoints",
                                                     "last.weights.h5"),
                                        save_weights_only=True),
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), profile_batch=0),
        *extra,
    ]


@contextlib.contextmanager
def dtype_policy(policy):
    if policy not in POLICIES:
        raise ValueError(f"Unknown precision policy {policy!r}; use one of {POLICIES}.")
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old)


def train_classifier(data, out_dir, *, model="resnet20", recipe="cifar", epochs=None,
                     iterations=None, batch_size=None, learning_rate=None,
                     policy="float32", strategy=None, clipnorm=None,
                     label_smoothing=None, val_fraction=None, val_data=None,
                     step_epochs=None,
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
        strategy: None, "mirrored" or "multiworker".
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
        print(f"Computing the mean image over {train_split.num_examples if not mean_images else min(mean_images, train_split.num_examples)} "
              f"training images of {source.spec} ...", flush=True)
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

    train_ds = make_dataset(train_split, prep, mean_image, training=True,
                            batch_size=recipe.batch_size, seed=seed,
                            deterministic=deterministic, cache=cache,
                            counter=counters["train"], repeat=True)
    val_ds = None
    if val_split is not None:
        val_ds = make_dataset(val_split, prep, mean_image, training=False,
                              batch_size=recipe.batch_size, cache=cache,
                              counter=counters["val"], label_map=label_map)

    strat = make_strategy(strategy)
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
             if scale != 1 else ""), flush=True)
    callbacks = default_callbacks(out_dir, counters, schedule, recipe,
                                  monitor="val_top1" if val_ds is not None else "top1")
    callbacks += list(extra_callbacks)
    history = net.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                      validation_data=val_ds, callbacks=callbacks, verbose=verbose,
                      shuffle=False)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    results = {
        "epochs": epochs, "iterations": iterations,
        "train_seconds": round(time.time() - t_start, 1),
        "skipped_images": callbacks[0].totals,
    }
    if "val_top1" in hist and hist["val_top1"]:
        results["val_top1_error"] = 1 - hist["val_top1"][-1]
        results["val_top5_error"] = 1 - hist["val_top5"][-1]
    results["train_top1_error"] = 1 - hist["top1"][-1] if hist.get("top1") else None
    model_dir.save_classifier(
        out_dir, net, class_names, mean_image, prep, recipe=recipe, results=results,
        extra={"training": {"data": data, "val_data": val_data, "model": model,
                            "policy": policy, "seed": seed, "learning_rate": lr,
                            "boundaries": list(boundaries), "warmup_lr": warmup}})
    return TrainResult(out_dir, hist, results, net)


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
    # A folder without a validation folder or hold-out: no validation.
    if split.name == "all":
        return None
    return split
