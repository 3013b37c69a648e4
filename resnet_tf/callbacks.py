"""Callbacks for the paper's training runs."""

import logging
import math

import keras

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


def epochs_for(iterations, steps_per_epoch):
    return max(1, math.ceil(iterations / steps_per_epoch))
