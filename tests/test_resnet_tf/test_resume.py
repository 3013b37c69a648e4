"""Crash safety: a SIGKILLed run resumes to the weights of an uninterrupted
one, checkpoint files survive SIGKILL at any moment, and a NaN/Inf loss
stops training with the last good state kept.

The training runs are child processes (``test_distributed.start_child``),
killed with SIGKILL, in deterministic mode (fixed seeds, deterministic TF
ops, the data stream skipped to the backed-up step).
"""

import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest

import keras

from conftest import REPO
from resnet_tf.callbacks import NonFiniteLossError, StopOnNonFiniteLoss
from test_distributed import (CLASSIFIER, TINY_DETECTOR, kill, load_result, start_child,
                              wait_all)


def wait_for(path, proc, log, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            pytest.fail(f"{log.name} ended ({proc.returncode}) before the kill point:\n"
                        + log.read_text()[-3000:])
        if time.monotonic() > deadline:
            pytest.fail(f"{log.name}: no kill point after {timeout}s")
        time.sleep(0.2)


def kill_and_resume(tmp_path, kind, kwargs, freeze_at, timeout=240, **child):
    """An uninterrupted run and a run SIGKILLed after step ``freeze_at`` (in
    parallel), then the killed run's command again. Returns the weights and
    logs of both, and the resumed run's log text."""
    out = str(tmp_path / "killed")
    marker = str(tmp_path / "marker")
    ref = start_child(tmp_path, "reference", kind=kind, out=str(tmp_path / "ref"),
                      kwargs=kwargs, **child)
    victim = start_child(tmp_path, "victim", kind=kind, out=out, kwargs=kwargs,
                         freeze_at=freeze_at, marker=marker, **child)
    resumed = None
    try:
        wait_for(marker, victim[0], victim[2], timeout)
        kill(victim[0])  # SIGKILL in the middle of an epoch
        assert os.path.exists(os.path.join(out, "backup", "state.json"))
        resumed = start_child(tmp_path, "resumed", kind=kind, out=out, kwargs=kwargs,
                              **child)
        wait_all([ref, resumed], timeout=timeout)
    finally:
        for c in (ref, victim, resumed):
            if c is not None:
                kill(c[0])
    assert not os.path.exists(os.path.join(out, "backup"))  # deleted when complete
    return load_result(ref[1]), load_result(resumed[1]), resumed[2].read_text()


def test_killed_classifier_resumes_to_the_uninterrupted_weights(tmp_path):
    """9 steps (3 epochs of 3), backed up every 2 steps and at epoch ends
    (steps 3, 5, 6, 8, 9), SIGKILLed after step 5 (epoch 2, step 2 of 3):
    the same command resumes at the backup of step 5 (epoch 2, step 3) and
    ends with exactly the weights of an uninterrupted run."""
    kwargs = {**CLASSIFIER, "iterations": 9, "backup_every": 2}
    (w_ref, r_ref), (w_res, r_res), log = kill_and_resume(
        tmp_path, "classifier", kwargs, freeze_at=5)
    assert "Resuming from the backup of step 5" in log and "epoch 2, step 3 of 3" in log
    for a, b in zip(w_ref, w_res):
        np.testing.assert_array_equal(a, b)
    # The resumed run: the rest of epoch 2 (1 step), then epoch 3.
    assert len(r_res["history"]["loss"]) == 2
    assert r_res["history"]["loss"][-1] == r_ref["history"]["loss"][-1]


def test_killed_detector_resumes_to_the_uninterrupted_weights(tmp_path):
    """Faster R-CNN under MirroredStrategy on two logical CPUs (2 images a
    replica): 4 steps (2 epochs of 2), backed up every step, SIGKILLed after
    step 3; the resumed run ends with the uninterrupted run's weights, and
    every loss term was finite."""
    kwargs = {**TINY_DETECTOR, "iterations": 4, "backup_every": 1,
              "deterministic": True, "strategy": "mirrored"}
    (w_ref, r_ref), (w_res, r_res), log = kill_and_resume(
        tmp_path, "detector", kwargs, freeze_at=3, logical_cpus=2)
    assert "Resuming from the backup of step 3" in log
    assert r_ref["replicas"] == r_res["replicas"] == 2
    for term in ("loss", "rpn_objectness", "rpn_box", "head_class", "head_box"):
        assert np.isfinite(r_ref["history"][term]).all(), term
    for a, b in zip(w_ref, w_res):
        np.testing.assert_array_equal(a, b)


WRITER = r'''
import json, os, sys
sys.path.insert(0, sys.argv[2])
os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
import numpy as np
import keras
from resnet_tf.callbacks import AtomicModelCheckpoint, StepBackup
folder = sys.argv[1]
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(256),
                          keras.layers.Dense(256), keras.layers.Dense(4)])
model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
model.fit(np.ones((4, 8)), np.ones((4, 4)), verbose=0)
cbs = [AtomicModelCheckpoint(os.path.join(folder, "best.keras")),
       AtomicModelCheckpoint(os.path.join(folder, "last.keras")),
       AtomicModelCheckpoint(os.path.join(folder, "last.weights.h5"),
                             save_weights_only=True),
       StepBackup(os.path.join(folder, "backup"), save_freq=1)]
for cb in cbs:
    cb.set_model(model)
    cb.on_train_begin()
i = 0
while True:
    for w in model.weights:
        w.assign(np.full(w.shape, i % 7, "float32"))
    for cb in cbs[:3]:
        cb._save_model(i, None, {})
    cbs[3].on_train_batch_end(i)
    if i == 0:
        open(os.path.join(folder, "ready"), "w").close()
    i += 1
'''


def test_checkpoint_files_load_after_sigkill_at_random_moments(tmp_path):
    """A child writes best.keras, last.keras, last.weights.h5 and the
    StepBackup pair in a loop; it is SIGKILLed at random moments, 4 times
    (each time on the files the last one left). Every file present loads,
    and holds one consistent save (all weights equal to one loop index)."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    rng = random.Random(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(256),
                              keras.layers.Dense(256), keras.layers.Dense(4)])
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    model.optimizer.build(model.trainable_variables)
    for round_ in range(4):
        if (folder / "ready").exists():
            os.remove(folder / "ready")
        proc = subprocess.Popen([sys.executable, str(script), str(folder), str(REPO)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not (folder / "ready").exists():
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the writer never got ready"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
        finally:
            kill(proc)
            proc.stderr.close()
        for name in ("best.keras", "last.keras"):
            loaded = keras.saving.load_model(folder / name)
            values = {float(np.unique(w)[0]) for w in loaded.weights}
            assert len(values) == 1, (round_, name, values)
        model.load_weights(folder / "last.weights.h5")
        assert len({float(np.unique(w)[0]) for w in model.weights}) == 1
        state = json.loads((folder / "backup" / "state.json").read_text())
        model.load_weights(folder / "backup" / state["weights"])


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    """The learning rate jumps to 1e30 from step 4 on (epoch 2 of 3-step
    epochs): training stops with NonFiniteLossError naming the step and the
    terms, and checkpoints/last.keras (epoch 1) and the backup still load
    with finite weights."""
    from resnet_tf.train import train_classifier

    class Explode(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) >= 3:
                self.model.optimizer.learning_rate.assign(1e30)

    out = str(tmp_path / "m")
    with pytest.raises(NonFiniteLossError,
                       match=r"not finite at step \d+ \(epoch 2, batch \d\): loss=(nan|inf)"
                       ) as e:
        train_classifier("synthetic", out, model="resnet8", iterations=9, batch_size=32,
                         synthetic_train=96, synthetic_eval=32, backup_every=1,
                         extra_callbacks=[Explode()], verbose=0)
    assert "weight_decay=" in str(e.value)
    last = keras.saving.load_model(os.path.join(out, "checkpoints", "last.keras"))
    assert all(np.isfinite(w).all() for w in last.get_weights())
    state = json.load(open(os.path.join(out, "backup", "state.json")))
    assert state["step"] >= 3
    last.load_weights(os.path.join(out, "backup", state["weights"]),
                      skip_mismatch=True)
    assert all(np.isfinite(w).all() for w in last.get_weights())


def test_nan_stop_names_the_detector_loss_terms():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    cb = StopOnNonFiniteLoss("DIR")
    cb.set_model(model)
    cb.on_epoch_begin(2)
    cb.on_train_batch_end(0, {"loss": 1.0, "rpn_box": 0.5, "head_box": 0.1})
    with pytest.raises(NonFiniteLossError,
                       match=r"epoch 3, batch 5\): loss=nan, rpn_box=inf, head_class=nan"
                             r".*DIR are the last good state"):
        cb.on_train_batch_end(4, {"loss": float("nan"), "rpn_objectness": 0.3,
                                  "rpn_box": float("inf"), "head_class": float("nan"),
                                  "head_box": 0.2})


def test_default_backups_are_timed_and_explicit_ones_count_steps(tmp_path, monkeypatch):
    """Default: a backup at the first step or epoch end five minutes after
    the last (a short run writes none); --backup-every N: every N steps and
    at epoch ends; multi-worker runs count steps (their clocks differ)."""
    from resnet_tf import callbacks
    from resnet_tf.callbacks import StepBackup
    from resnet_tf.runner import BACKUP_SECONDS, backup_policy

    assert backup_policy(None, 40) == {"every_seconds": BACKUP_SECONDS}
    assert backup_policy(7, 40) == {"save_freq": 7}
    multi = type("MultiWorker", (), {"cluster_resolver": object()})()
    assert backup_policy(None, 40, multi) == {"save_freq": 10}
    with pytest.raises(ValueError, match="save_freq.*every_seconds"):
        StepBackup(str(tmp_path / "x"))

    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    def saved_steps(backup, epochs, steps, seconds_per_step):
        backup.set_model(model)
        saved = []
        backup.save = lambda: (saved.append(backup.step),
                               setattr(backup, "_since_save", 0),
                               setattr(backup, "_last_save", clock[0]))
        backup.on_train_begin()
        for epoch in range(epochs):
            for batch in range(steps):
                clock[0] += seconds_per_step
                backup.on_train_batch_end(batch)
            backup.on_epoch_end(epoch)
        return saved

    timed = StepBackup(str(tmp_path / "t"), **backup_policy(None, 5))
    assert saved_steps(timed, 3, 5, 1.0) == []  # 15 s: nothing
    timed = StepBackup(str(tmp_path / "t2"), every_seconds=10)
    assert saved_steps(timed, 3, 5, 3.0) == [4, 8, 12]  # every 12 s of 3 s steps
    counted = StepBackup(str(tmp_path / "c"), save_freq=2)
    assert saved_steps(counted, 2, 5, 1.0) == [2, 4, 5, 7, 9, 10]  # + epoch ends
    # The real save writes the weights and state.json.
    real = StepBackup(str(tmp_path / "r"), every_seconds=1)
    real.set_model(model)
    real.on_train_begin()
    clock[0] += 2
    real.on_train_batch_end(0)
    state = json.load(open(tmp_path / "r" / "state.json"))
    assert state["step"] == 1 and (tmp_path / "r" / state["weights"]).exists()
