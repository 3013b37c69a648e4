"""The training run around ``model.fit``, one for all three trainers
(``resnet_tf.train``, ``detection.train``, ``localization.train``):

- the distribution strategy and where each worker writes
  (``make_strategy``, ``worker_directory``), how workers split the data
  (``shard_options``);
- the run's length: ``epochs`` or ``iterations`` (never both), the steps of
  an epoch, a run shorter than an epoch (``check_run_length``,
  ``plan_schedule``);
- backups and the exact resume of a killed run (``backup_policy``,
  ``fit_resumable``);
- the fine-tuning recipe of the detector and the localizer: SGD with
  momentum, the rate /10 after a fraction of the run, a linear warm-up, the
  crash-safe callbacks (``fine_tune_callbacks``, ``TrainingRun.fine_tune``).

``TrainingRun`` ties them together::

    run = TrainingRun(out_dir, epochs=epochs, iterations=iterations,
                      strategy=strategy, policy=policy, seed=seed)
    ...open the data...
    schedule = run.plan(len(train), batch_size, default_epochs=20, what=data)
    model, history = run.fine_tune(build_model, train_stream, learning_rate=0.001)

The files are written by ``resnet_tf.atomic`` (through the callbacks and
``resnet_tf.model_dir``).
"""

import contextlib
import dataclasses
import logging
import math
import os

import keras

from resnet_tf.callbacks import (AtomicModelCheckpoint, StepBackup, StepSchedule,
                                 StopOnNonFiniteLoss)
from resnet_tf.precision import resolve_precision

log = logging.getLogger("resnet_tf.train")

SHARD_POLICIES = ("data", "file", "off", "auto")
BACKUP_SECONDS = 300  # the default backup interval of a one-worker run


# --- strategy, workers, sharding ------------------------------------------------


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
                             "workers and this process's task); see docs/distributed.md, "
                             "'Several machines'.")
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


def _check_shard_policy(policy):
    if policy not in SHARD_POLICIES:
        raise ValueError(f"Unknown auto-shard policy {policy!r}; use one of "
                         f"{SHARD_POLICIES}.")


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

    _check_shard_policy(policy)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(
        tf.data.experimental.AutoShardPolicy, policy.upper())
    return ds.with_options(options)


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


# --- the run's length -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A run's length: ``iterations`` optimizer steps in ``epochs`` epochs of
    ``steps_per_epoch`` steps (``fit`` runs whole epochs, so the run may end
    up to ``steps_per_epoch - 1`` steps after ``iterations``)."""

    iterations: int
    epochs: int
    steps_per_epoch: int


def epochs_for(iterations, steps_per_epoch):
    """The epochs of ``steps_per_epoch`` steps that hold ``iterations`` steps
    (at least one)."""
    return max(1, math.ceil(iterations / steps_per_epoch))


def check_run_length(epochs=None, iterations=None):
    """The one rule of every trainer: a run's length is given as ``epochs``
    or as ``iterations``, or neither (the trainer's default), never both.

    Raises:
        ValueError naming both values when both are given, or naming a value
        that is not a whole number >= 1.
    """
    if epochs is not None and iterations is not None:
        raise ValueError(
            f"give epochs or iterations, not both (got epochs={epochs!r} and "
            f"iterations={iterations!r}): epochs counts passes over the training "
            "set, iterations counts steps; pass one (--epochs or --iterations) and "
            "leave the other out.")
    for name, value in (("epochs", epochs), ("iterations", iterations)):
        if value is None:
            continue
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name}={value!r}: give a whole number >= 1, or leave "
                             f"{name} out for the default length.")


def plan_schedule(num_examples, batch_size, *, epochs=None, iterations=None,
                  default_iterations=None, default_epochs=None, what="the training set"):
    """The length of a run over ``num_examples`` training examples in
    batches of ``batch_size`` (the global batch).

    Args:
        epochs / iterations: the run's length, at most one of them
            (``check_run_length``).
        default_iterations / default_epochs: the length when neither is given
            (the classifier: its recipe's iterations; the fine-tuning
            trainers: 20 epochs).
        what: the data, named in errors (a data spec).
    Returns:
        ``Schedule``. A run shorter than one pass over the data is one short
        epoch of ``iterations`` steps.
    Raises:
        ValueError: both ``epochs`` and ``iterations``; fewer examples than
        one batch (naming ``what`` and the batch size).
    """
    check_run_length(epochs, iterations)
    steps = num_examples // batch_size
    if steps < 1:
        raise ValueError(f"{what}: {num_examples} training images are fewer than one "
                         f"batch of {batch_size}; lower --batch-size.")
    if epochs is not None:
        iterations = epochs * steps
    if iterations is None:
        if default_iterations is None and default_epochs is None:
            raise ValueError("plan_schedule needs default_iterations or default_epochs.")
        iterations = default_iterations or default_epochs * steps
    iterations = int(iterations)
    steps = min(steps, iterations)  # a run shorter than one pass: one short epoch
    return Schedule(iterations=iterations, epochs=epochs_for(iterations, steps),
                    steps_per_epoch=steps)


# --- backups and the resumable fit ----------------------------------------------


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


# --- the run ----------------------------------------------------------------------


class TrainingRun:
    """One training run: strategy, worker directory, seeds, length, model
    building, backups and the resumable ``fit``. Every trainer makes one
    first (before anything else touches TensorFlow), opens its data, calls
    ``plan``, then ``fine_tune`` (detector, localizer) or ``build`` and
    ``fit`` with its own compile and callbacks (classifier).

    Args:
        out_dir: the model directory (the chief's; other workers write
            ``out_dir/workers/TYPE-ID``, ``directory``).
        epochs / iterations: the run's length, at most one of them (checked
            here, before any work: ``check_run_length``).
        strategy: None, "mirrored" or "multiworker" (``make_strategy``).
        policy: the dtype policy to build the model under, or "auto": the
            fastest on this machine (``precision.resolve_precision``,
            resolved here, once for every trainer; the choice and its
            reason are printed, and ``record`` keeps both).
        seed, deterministic: with ``deterministic``, Keras's seeds are set
            from ``seed`` and TF's ops made deterministic (slower).
        auto_shard: how multi-worker runs split the data (``shard_options``).
        backup_every: back up every this many steps (default:
            ``backup_policy``).
    Raises:
        ValueError: both ``epochs`` and ``iterations``, or an unknown
        strategy, shard policy or precision.
    """

    def __init__(self, out_dir, *, epochs=None, iterations=None, strategy=None,
                 policy="float32", seed=0, deterministic=False, auto_shard="data",
                 backup_every=None):
        check_run_length(epochs, iterations)
        _check_shard_policy(auto_shard)
        self.strategy = make_strategy(strategy)  # first: multi-worker set-up needs a fresh TF
        self.strategy_name = strategy or "default"
        self.directory = worker_directory(out_dir, self.strategy)
        self.epochs, self.iterations = epochs, iterations
        self.requested_policy = policy
        self.policy, self.policy_reason = resolve_precision(policy)
        if self.policy_reason:
            print(f"Precision: {policy} -> {self.policy} ({self.policy_reason}).", flush=True)
        self.seed, self.deterministic = seed, deterministic
        self.auto_shard, self.backup_every = auto_shard, backup_every
        self.schedule = None
        if deterministic:
            import tensorflow as tf

            keras.utils.set_random_seed(seed)
            tf.config.experimental.enable_op_determinism()

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync

    def replicas_note(self, batch_size=None):
        """", N replicas (Strategy)" for a header line; "" with one replica."""
        if self.replicas <= 1:
            return ""
        each = f", {batch_size // self.replicas} images each" if batch_size else ""
        return f", {self.replicas} replicas ({type(self.strategy).__name__}{each})"

    def record(self, **fields):
        """The model directory's ``training`` record: the run's own settings
        (policy: the dtype policy used; requested_policy: as asked, e.g.
        "auto", with policy_reason for "auto"; seed, strategy, replicas)
        plus the trainer's ``fields`` (data, init_from, learning_rate,
        batch_size, ...)."""
        reason = {"policy_reason": self.policy_reason} if self.policy_reason else {}
        return {**fields, "policy": self.policy, "requested_policy": self.requested_policy,
                **reason, "seed": self.seed, "strategy": self.strategy_name,
                "replicas": self.replicas}

    def plan(self, num_examples, batch_size, *, default_iterations=None,
             default_epochs=None, what="the training set"):
        """The run's ``Schedule`` (``plan_schedule`` with the run's epochs or
        iterations); kept as ``self.schedule``."""
        self.schedule = plan_schedule(num_examples, batch_size, epochs=self.epochs,
                                      iterations=self.iterations,
                                      default_iterations=default_iterations,
                                      default_epochs=default_epochs, what=what)
        return self.schedule

    def shard(self, ds):
        """``ds`` with the run's auto-shard policy (``shard_options``)."""
        return shard_options(ds, self.auto_shard)

    @contextlib.contextmanager
    def building(self):
        """Build the model inside: the run's dtype policy and strategy scope."""
        with dtype_policy(self.policy), self.strategy.scope():
            yield

    def backup(self):
        """``StepBackup``'s keyword arguments for this run (``backup_policy``)."""
        return backup_policy(self.backup_every, self._planned().steps_per_epoch,
                             self.strategy)

    def fine_tune_callbacks(self, *first, extra=()):
        """``fine_tune_callbacks`` in the run's directory, with its backups."""
        return fine_tune_callbacks(self.directory, *first, extra=extra,
                                   backup=self.backup())

    def fit(self, model, train_stream, callbacks, **fit_kwargs):
        """``fit_resumable`` over the planned schedule; returns the history
        as ``{metric: [float per epoch]}``."""
        schedule = self._planned()
        history = fit_resumable(model, train_stream, epochs=schedule.epochs,
                                steps_per_epoch=schedule.steps_per_epoch,
                                callbacks=callbacks, **fit_kwargs)
        return {k: [float(v) for v in vs] for k, vs in history.items()}

    def fine_tune(self, build_model, train_stream, *, learning_rate, momentum=0.9,
                  clipnorm=None, decay_fraction=0.75, warmup_iterations=0,
                  first_callbacks=(), extra_callbacks=(), describe=None, verbose=1):
        """Fine-tune with SGD: the detector's and the localizer's recipe.

        Args:
            build_model: ``f() -> keras.Model``, called under the run's dtype
                policy and strategy scope; the model comes back built and
                initialised (e.g. from a classifier), not compiled.
            train_stream: ``f(step) -> tf.data.Dataset`` (``fit_resumable``).
            learning_rate: SGD with ``momentum`` (and ``clipnorm``), divided
                by 10 after ``decay_fraction`` of the planned iterations,
                after a linear warm-up of ``warmup_iterations`` (at most half
                the run).
            first_callbacks: callbacks run before the schedule (e.g. a
                ``SkippedImagesReport``); ``extra_callbacks`` after the
                default ones.
            describe: ``f(model, lr_schedule) -> str``, the header line
                printed before training (the replicas are added to it).
        Returns:
            ``(model, history)``, the history ``{metric: [float per epoch]}``.
        """
        schedule = self._planned()
        with self.building():
            model = build_model()
            model.compile(keras.optimizers.SGD(learning_rate, momentum=momentum,
                                               clipnorm=clipnorm))
        lr_schedule = StepSchedule(
            learning_rate, [round(decay_fraction * schedule.iterations)],
            linear_warmup=min(warmup_iterations, schedule.iterations // 2))
        callbacks = self.fine_tune_callbacks(*first_callbacks, lr_schedule,
                                             extra=extra_callbacks)
        if describe is not None:
            print(describe(model, lr_schedule) + self.replicas_note(), flush=True)
        return model, self.fit(model, train_stream, callbacks, verbose=verbose)

    def _planned(self):
        if self.schedule is None:
            raise RuntimeError("TrainingRun: call plan() before fitting.")
        return self.schedule
