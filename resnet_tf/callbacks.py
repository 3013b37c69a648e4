"""Callbacks for the paper's training runs, and the crash-safety ones every
trainer uses: atomic checkpoints, step-level backups, a stop on NaN/Inf.

The files are written by ``resnet_tf.atomic``; the run around these
callbacks (strategy, schedule arithmetic, resume) is ``resnet_tf.runner``.
"""

import contextlib
import json
import logging
import math
import os
import shutil
import time

import numpy as np

import keras

from resnet_tf.atomic import atomic_write, remove_stale_temporaries, write_json

log = logging.getLogger("resnet_tf.train")


class StepSchedule(keras.callbacks.Callback):
    """Piecewise-constant learning rate by iteration, with the paper's warm-up.

    The rate is ``lr * factor ** k`` after ``k`` of ``boundaries`` (iteration
    counts) have passed. With ``warmup_lr``, training starts at that rate and
    switches to the schedule's once the running training error of the epoch
    falls below ``warmup_until_error`` (Sec. 4.2, ResNet-110: 0.01 until the
    error is below 80%, about 400 iterations). ``linear_warmup`` ramps the
    rate linearly over the first iterations instead (the detector's
    warm-up). The iteration count comes from
    the optimizer, so a run restored by BackupAndRestore resumes at the right
    rate; the warm-up re-checks the error after a restore.
    """

    def __init__(self, lr, boundaries=(), factor=0.1, warmup_lr=None,
                 warmup_until_error=0.8, accuracy_key="top1", linear_warmup=0):
        super().__init__()
        self.linear_warmup = int(linear_warmup)
        self.lr, self.factor = float(lr), float(factor)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.warmup_lr = warmup_lr
        self.warming = warmup_lr is not None
        self.warmup_until_error = warmup_until_error
        self.accuracy_key = accuracy_key

    def rate_at(self, iteration):
        k = sum(iteration >= b for b in self.boundaries)
        rate = self.lr * self.factor ** k
        if iteration < self.linear_warmup:  # linear ramp over the first steps
            rate *= (iteration + 1) / self.linear_warmup
        return rate

    def on_train_batch_begin(self, batch, logs=None):
        it = int(self.model.optimizer.iterations.numpy())
        if not (self.boundaries or self.warming or it < self.linear_warmup):
            # Nothing scheduled: leave the rate to others (ReduceLROnPlateau).
            return
        rate = self.warmup_lr if self.warming else self.rate_at(it)
        self.model.optimizer.learning_rate.assign(rate)

    def on_train_batch_end(self, batch, logs=None):
        if self.warming and logs and self.accuracy_key in logs:
            error = 1.0 - float(logs[self.accuracy_key])
            if error < self.warmup_until_error:
                self.warming = False
                it = int(self.model.optimizer.iterations.numpy())
                self.model.optimizer.learning_rate.assign(self.rate_at(it))
                log.info("warm-up done at iteration %d (training error %.3f < %.2f); "
                         "learning rate %.4g", it, error, self.warmup_until_error,
                         self.rate_at(it))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())


class SkippedImagesReport(keras.callbacks.Callback):
    """Reports, at the end of each epoch, how many unreadable images the
    input pipelines skipped (each is also named in a warning as it happens).
    ``totals`` keeps the run's sums; they go into the model directory's
    results (not into the per-epoch metrics, which would show zeros in every
    progress bar)."""

    def __init__(self, counters):
        super().__init__()
        self.counters = counters  # {"train": SkipCounter, "val": SkipCounter}
        self.totals = {k: 0 for k in counters}

    def on_epoch_end(self, epoch, logs=None):
        parts = []
        for key, counter in self.counters.items():
            n = counter.reset()
            self.totals[key] += n
            if n:
                parts.append(f"{n} {key}")
        if parts:
            print(f"\nEpoch {epoch + 1}: skipped unreadable images: "
                  f"{', '.join(parts)} (each named in a warning above).", flush=True)


# --- crash safety: atomic checkpoints, step-level backups, non-finite losses --


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``keras.callbacks.ModelCheckpoint`` whose files are written with
    ``resnet_tf.atomic.atomic_write``: killing the run while it saves leaves
    the previous checkpoint, still loadable. Same arguments as
    ModelCheckpoint."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        remove_stale_temporaries(os.path.dirname(os.path.abspath(self.filepath)) or ".")

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        if self.save_weights_only:
            atomic_write(filepath, lambda p: self.model.save_weights(p, overwrite=True))
        else:
            atomic_write(filepath, lambda p: self.model.save(p, overwrite=True))
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saved {filepath}", flush=True)


def _seed_generators(model):
    """Every ``keras.random.SeedGenerator`` of ``model`` (their states are not
    in ``save_weights`` files, but the detector's anchor/RoI sampling draws
    from them, so an exact resume needs them)."""
    found, seen = [], set()
    for layer in [model, *model._flatten_layers(include_self=False)]:
        for sg in getattr(layer, "_seed_generators", ()):
            if id(sg) not in seen:
                seen.add(id(sg))
                found.append(sg)
    return found


class StepBackup(keras.callbacks.Callback):
    """Step-level backup and restore of a training run (what
    ``keras.callbacks.BackupAndRestore`` does per epoch, made exact and
    crash-safe).

    Every ``save_freq`` steps and at the end of each epoch, or (with
    ``every_seconds`` instead) at the first step or epoch end that many
    seconds after the last backup, it writes

        DIR/step-NNNNNNNNN.weights.h5   model and optimizer variables
                                        (iterations, momenta)
        DIR/state.json                  {"step", "weights", "seeds"}: the
                                        number of finished steps, which
                                        weights file goes with it, and the
                                        states of the model's seed generators

    each with ``resnet_tf.atomic``; ``state.json`` is replaced only after its
    weights file is complete, and names it, so a kill between the two writes
    leaves the previous pair. Older weights files are deleted afterwards.

    ``restore()`` (the trainers call it before ``fit``) loads the last state
    and returns its step; the trainer derives the epoch and the position in
    it from the step and feeds the data stream from that point (see
    ``resnet_tf.runner.fit_resumable``). ``finish()`` deletes the backup once
    the run is complete. Metrics averaged over a resumed epoch cover only
    the steps run after the restore.
    """

    STATE = "state.json"

    def __init__(self, backup_dir, save_freq=None, every_seconds=None):
        super().__init__()
        if (save_freq is None) == (every_seconds is None):
            raise ValueError("StepBackup: give save_freq (steps) or every_seconds, not "
                             f"both or neither (got {save_freq!r}, {every_seconds!r}).")
        if save_freq is not None and int(save_freq) < 1:
            raise ValueError(f"StepBackup: save_freq must be >= 1 steps, got {save_freq}.")
        if every_seconds is not None and not every_seconds > 0:
            raise ValueError(f"StepBackup: every_seconds must be > 0, got {every_seconds}.")
        self.backup_dir = backup_dir
        self.save_freq = None if save_freq is None else int(save_freq)
        self.every_seconds = every_seconds
        self.step = 0
        self._since_save = 0
        self._last_save = time.monotonic()

    def restore(self, model=None):
        """Load the last backup into ``model`` (default: the callback's) and
        return its step; 0 when there is no backup."""
        model = model or self.model
        path = os.path.join(self.backup_dir, self.STATE)
        if not os.path.exists(path):
            self.step = 0
            return 0
        with open(path) as f:
            state = json.load(f)
        strategy = getattr(model, "_distribute_strategy", None)
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        weights = os.path.join(self.backup_dir, state["weights"])
        try:
            with scope:  # optimizer variables are created under the strategy
                if model.optimizer is not None and not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(weights)
        except Exception as e:
            raise ValueError(f"{weights}: the backup of step {state['step']} does not "
                             f"load ({type(e).__name__}: {e}); delete {self.backup_dir} "
                             "to start the run over.") from e
        gens = _seed_generators(model)
        for sg, value in zip(gens, state.get("seeds", [])):
            sg.state.assign(np.asarray(value, sg.state.dtype))
        self.step = int(state["step"])
        return self.step

    def on_train_begin(self, logs=None):
        remove_stale_temporaries(self.backup_dir)
        self._since_save = 0
        self._last_save = time.monotonic()

    def _due(self):
        if self.save_freq is not None:
            return self._since_save >= self.save_freq
        return time.monotonic() - self._last_save >= self.every_seconds

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self._since_save += 1
        if self._due():
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if self._since_save and (self.save_freq is not None or self._due()):
            self.save()

    def save(self):
        self._since_save = 0
        self._last_save = time.monotonic()
        name = f"step-{self.step:09d}.weights.h5"
        atomic_write(os.path.join(self.backup_dir, name),
                     lambda p: self.model.save_weights(p, overwrite=True))
        seeds = [np.asarray(sg.state.numpy()).tolist()
                 for sg in _seed_generators(self.model)]
        write_json(os.path.join(self.backup_dir, self.STATE),
                   {"step": self.step, "weights": name, "seeds": seeds})
        for old in os.listdir(self.backup_dir):
            if old.startswith("step-") and old != name:
                os.remove(os.path.join(self.backup_dir, old))

    def finish(self):
        """The run is complete: delete the backup."""
        if os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir)


class NonFiniteLossError(ValueError):
    """Training produced a NaN or Inf loss (see ``StopOnNonFiniteLoss``)."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or Inf, naming the
    step and the loss terms that are not finite (the detector's
    ``rpn_objectness``, ``rpn_box``, ``head_class``, ``head_box``; the
    classifier's cross-entropy ``loss`` and its ``weight_decay``).

    Unlike ``keras.callbacks.TerminateOnNaN`` it raises
    ``NonFiniteLossError`` instead of setting ``stop_training``: with
    ``stop_training`` Keras still ends the epoch, and the checkpoint and
    backup callbacks after this one would save the broken weights over the
    last good ones. Raising here, first among the callbacks, leaves every
    checkpoint and backup as it was after the last finite step. Put it
    before them in the callback list.

    ``where``: a folder named in the message (the kept checkpoints).
    """

    def __init__(self, where=None):
        super().__init__()
        self.where = where
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not logs:
            return
        values = {}
        for key, value in logs.items():
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                continue
        if all(math.isfinite(v) for v in values.values()):
            return
        terms = {k: v for k, v in values.items() if not math.isfinite(v)}
        # The classifier logs one total; say whether its weight decay (the
        # kernel regularizers) is part of the damage.
        if "loss" in terms and self.model.losses:
            decay = float(sum(float(keras.ops.convert_to_numpy(x))
                              for x in self.model.losses))
            terms["weight_decay"] = decay
        step = int(self.model.optimizer.iterations.numpy())
        named = ", ".join(f"{k}={v}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"training stopped: the loss is not finite at step {step} (epoch "
            f"{self.epoch + 1}, batch {batch + 1}): {named}. Nothing was saved after "
            f"the last finite step"
            + (f"; the checkpoints and backup in {self.where} are the last good state"
               if self.where else "")
            + ". Lower the learning rate, set --clipnorm, or check the data.")
