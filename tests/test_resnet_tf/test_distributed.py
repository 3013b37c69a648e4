"""Distributed training on tf.distribute: two worker processes on
127.0.0.1 (MultiWorkerMirroredStrategy from TF_CONFIG) and MirroredStrategy
over two logical CPU devices.

Each run is a child process: a strategy (and the logical devices) must be
set up before TensorFlow initialises, which has happened in the test
process. ``run_child``/``CHILD`` are shared with ``test_resume``.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO

CHILD = r'''
import json, os, sys, time
cfg = json.loads(sys.argv[1])
os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow",
                   "CUDA_VISIBLE_DEVICES": ""})
if cfg.get("tf_config"):
    os.environ["TF_CONFIG"] = json.dumps(cfg["tf_config"])
sys.path.insert(0, cfg["repo"])
import numpy as np
import tensorflow as tf
import keras
if cfg.get("logical_cpus"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * cfg["logical_cpus"])


class Freeze(keras.callbacks.Callback):
    """After the backup of step `freeze_at` (it comes later in the callback
    list): write the marker and wait to be killed."""

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step == cfg["freeze_at"]:
            with open(cfg["marker"], "w") as f:
                f.write(str(step))
            time.sleep(600)


class StepTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


class SaveInitial(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        np.savez(cfg["result"] + "-initial.npz", *[np.asarray(w) for w in self.model.weights])


extra = [Freeze()] if cfg.get("freeze_at") else []
timer = StepTimes()
extra += [timer, SaveInitial()]
if cfg["kind"] == "localizer":
    from localization.train import train_localizer
    from resnet_tf.train import train_classifier
    clf = cfg.get("classifier") or (cfg["out"] + "-clf")
    if not os.path.exists(os.path.join(clf, "model.keras")):
        train_classifier("synthetic", clf, model="resnet8", recipe="cifar", epochs=1,
                         batch_size=16, synthetic_train=32, synthetic_eval=8, verbose=0)
    r = train_localizer("synthetic", cfg["out"], init_from=clf, extra_callbacks=extra,
                        verbose=0, **cfg["kwargs"])
    model, history = r["model"], r["history"]
elif cfg["kind"] == "classifier":
    from resnet_tf.train import train_classifier
    r = train_classifier("synthetic", cfg["out"], extra_callbacks=extra, verbose=0,
                         **cfg["kwargs"])
    model, history = r.model, r.history
else:
    from detection.train import train_detector
    r = train_detector("synthetic", cfg["out"], extra_callbacks=extra, verbose=0,
                       **cfg["kwargs"])
    model, history = r["model"], r["history"]
np.savez(cfg["result"] + ".npz", *[np.asarray(w) for w in model.weights])
with open(cfg["result"] + ".json", "w") as f:
    json.dump({"history": history, "replicas":
               model.distribute_strategy.num_replicas_in_sync,
               "step_times": np.diff(timer.times).tolist()}, f)
'''


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_child(tmp_path, name, **cfg):
    """Start one training child; returns (process, result prefix, log path)."""
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    result = str(tmp_path / name)
    cfg = {"repo": str(REPO), "result": result, **cfg}
    log = open(tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(cfg)],
                            stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    return proc, result, tmp_path / f"{name}.log"


def kill(proc):
    """SIGKILL the child's whole process group (it started a new session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def wait_all(children, timeout):
    """Wait for every child; on a timeout or a failure show the logs."""
    deadline = time.monotonic() + timeout
    for proc, _, log in children:
        try:
            rc = proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{log.name} still running after {timeout}s:\n"
                        + log.read_text()[-3000:])
        assert rc == 0, f"{log.name} exited {rc}:\n" + log.read_text()[-3000:]


def load_result(prefix):
    with np.load(prefix + ".npz") as z:
        weights = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
    with open(prefix + ".json") as f:
        return weights, json.load(f)


CLASSIFIER = dict(model="resnet8", recipe="cifar", iterations=6, batch_size=32,
                  synthetic_train=96, synthetic_eval=32, deterministic=True, seed=3)


def test_two_workers_train_like_one_process_with_two_replicas(tmp_path):
    """Two MultiWorkerMirroredStrategy workers (one CPU replica each) train
    the classifier 6 steps of global batch 32 from the same seed. Both
    finish with identical weights, and their losses equal those of one
    process with MirroredStrategy over two logical CPUs (the same global
    batches, split the same way: batch-norm statistics are per replica, so
    a one-replica run is a different computation) within 1e-4 relative."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = str(tmp_path / "run")
    children = []
    try:
        for i in range(2):
            children.append(start_child(
                tmp_path, f"worker{i}", kind="classifier", out=out,
                kwargs={**CLASSIFIER, "strategy": "multiworker"},
                tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}}))
        children.append(start_child(
            tmp_path, "single", kind="classifier", out=str(tmp_path / "single"),
            logical_cpus=2, kwargs={**CLASSIFIER, "strategy": "mirrored"}))
        wait_all(children, timeout=240)
    finally:
        for proc, _, _ in children:
            kill(proc)
    (w0, r0), (w1, r1), (ws, rs) = (load_result(c[1]) for c in children)
    assert r0["replicas"] == r1["replicas"] == rs["replicas"] == 2
    trainable = trainable_mask()
    for a, b, t in zip(w0, w1, trainable):
        if t:  # all-reduced gradients: the same updates on every worker
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(r0["history"]["loss"], rs["history"]["loss"], rtol=1e-4)
    # The chief is replica 0 in both runs, so even its batch-norm moving
    # statistics (each replica's own, from its half of the batch) agree.
    for a, b in zip(w0, ws):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    # The chief wrote the model directory; the other worker its own copy.
    assert os.path.exists(os.path.join(out, "model.keras"))
    assert os.path.exists(os.path.join(out, "workers", "worker-1", "model.keras"))
    assert not os.path.exists(os.path.join(out, "backup"))


def trainable_mask():
    from resnet_tf.backbone import ResNet

    return [w.trainable for w in ResNet(depth=8, classes=6, family="cifar").weights]


TINY_DETECTOR = dict(depth=18, batch_size=4, learning_rate=0.005, shorter_side=64,
                     max_side=64, synthetic_train=8, synthetic_eval=4,
                     model_kwargs=dict(anchor_scales=(24, 48, 96), roi_batch=16,
                                       rpn_batch=32, pooled_size=6,
                                       proposals=dict(pre_nms_train=300,
                                                      post_nms_train=50,
                                                      pre_nms_test=200,
                                                      post_nms_test=30)))


def test_localizer_under_mirrored_takes_the_one_device_step(tmp_path):
    """The per-class RPN localizer trains under MirroredStrategy over two
    logical CPUs. Its loss is divided by the replica count, so one step on
    two replicas moves the weights as one step on one device with the same
    global batch. Both runs start from one classifier and the seeded head,
    and anchors_per_image exceeds the anchors an image has, so every labelled
    anchor is taken and the random anchor sample (drawn per replica) cannot
    differ; the updates must then agree within 2% (each replica normalises
    its loss by its own anchor count, so they are not bit-identical). Summed
    instead of averaged replica gradients, the fault this guards against,
    would make the mirrored update about twice as long (a difference of
    ~100%)."""
    kwargs = dict(iterations=1, batch_size=8, learning_rate=0.01, anchor_scales=(12, 24),
                  anchor_ratios=(1.0,), head_channels=8, anchors_per_image=4096,
                  synthetic_train=16, synthetic_eval=4, seed=0)
    children = []
    try:
        # One after the other: the first run trains the classifier both start from.
        for name, strategy in (("mirrored", "mirrored"), ("one", None)):
            children.append(start_child(
                tmp_path, name, kind="localizer", out=str(tmp_path / name), logical_cpus=2,
                classifier=str(tmp_path / "clf"), kwargs={**kwargs, "strategy": strategy}))
            wait_all(children[-1:], timeout=240)
    finally:
        for proc, _, _ in children:
            kill(proc)
    runs = {}
    for proc, prefix, _ in children:
        final, r = load_result(prefix)
        initial = np.load(prefix + "-initial.npz")
        initial = [initial[f"arr_{i}"] for i in range(len(initial.files))]
        assert np.isfinite(r["history"]["loss"]).all()
        runs[r["replicas"]] = (initial, [a - b for a, b in zip(final, initial)],
                               r["history"]["loss"][0])
    assert set(runs) == {1, 2}
    (init2, step2, loss2), (init1, step1, loss1) = runs[2], runs[1]
    for a, b in zip(init2, init1):
        np.testing.assert_array_equal(a, b)  # the same start
    np.testing.assert_allclose(loss2, loss1, rtol=1e-3)
    norm = np.sqrt(sum(float(np.sum(d ** 2)) for d in step1))
    diff = np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(step2, step1)))
    assert norm > 0 and diff / norm < 0.02, (diff, norm)