"""resnet_tf.runner, the one training run behind the three trainers: one
rule for a run's length, its arithmetic, and the resumable SGD fine-tune."""

import os

import numpy as np
import pytest

import keras

from resnet_tf.runner import Schedule, TrainingRun, check_run_length, plan_schedule


def _classifier(out, **kw):
    from resnet_tf import train

    return train.train_classifier("synthetic", out, model="resnet8", verbose=0, **kw)


def _detector(out, **kw):
    from detection import train

    return train.train_detector("synthetic", out, depth=18, verbose=0, **kw)


def _localizer(out, **kw):
    from localization import train

    return train.train_localizer("synthetic", out, init_from=out + "-classifier",
                                 verbose=0, **kw)


@pytest.mark.parametrize("trainer", [_classifier, _detector, _localizer],
                         ids=["classifier", "detector", "localizer"])
def test_every_trainer_refuses_epochs_and_iterations_together(trainer, tmp_path,
                                                              monkeypatch):
    """The detector used to let epochs silently override iterations. Now
    every trainer raises, naming both values, before it opens any data or
    writes anything (opening the data fails the test at once instead of
    training)."""
    from detection import train as det
    from localization import train as loc
    from resnet_tf import train as clf

    def went_on(*a, **k):
        raise AssertionError("the trainer went on past epochs + iterations")

    monkeypatch.setattr(clf, "open_source", went_on)
    monkeypatch.setattr(det, "open_detection_source", went_on)
    monkeypatch.setattr(loc.model_dir, "load_classifier", went_on)
    out = str(tmp_path / "run")
    with pytest.raises(ValueError, match=r"not both \(got epochs=2 and iterations=7\)"):
        trainer(out, epochs=2, iterations=7)
    assert not os.path.exists(out)


def test_run_length_rule():
    check_run_length()
    check_run_length(epochs=3)
    check_run_length(iterations=10)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="whole number >= 1"):
            check_run_length(epochs=bad)
    with pytest.raises(ValueError, match="iterations=0"):
        check_run_length(iterations=0)


def test_schedule_arithmetic():
    # 100 examples, batch 8: 12 steps an epoch (the remainder is dropped).
    assert plan_schedule(100, 8, epochs=3, default_epochs=20) == Schedule(36, 3, 12)
    assert plan_schedule(100, 8, iterations=30, default_epochs=20) == Schedule(30, 3, 12)
    # A run shorter than one pass over the data is one short epoch.
    assert plan_schedule(100, 8, iterations=5, default_epochs=20) == Schedule(5, 1, 5)
    assert plan_schedule(100, 8, default_epochs=20) == Schedule(240, 20, 12)
    assert plan_schedule(100, 8, default_iterations=64000) == Schedule(64000, 5334, 12)
    with pytest.raises(ValueError, match=r"voc:/data: 3 training images are fewer than "
                                         r"one batch of 4; lower --batch-size"):
        plan_schedule(3, 4, iterations=10, default_epochs=20, what="voc:/data")
    with pytest.raises(ValueError, match="not both"):
        plan_schedule(100, 8, epochs=1, iterations=1, default_epochs=20)


class Regressor(keras.Model):
    """A one-layer model with its own loss, as the detector and localizer
    compute theirs (the runner compiles without a loss)."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return keras.ops.mean((y_pred - y) ** 2)


def _stream(step):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 4)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4, drop_remainder=True).repeat()
    return ds.skip(step) if step else ds


def _build():
    model = Regressor()
    model(np.zeros((1, 4), "float32"))
    return model


def test_fine_tune_runs_the_schedule_and_resumes_a_crashed_run(tmp_path, capsys):
    """3 epochs of 6 steps, the rate /10 after 2/3 of the run: the history
    has 3 epochs and shows the decay; the run's files are written and the
    backup removed. A run that crashes after epoch 1 resumes from its backup
    and runs only epochs 2 and 3."""
    out = str(tmp_path / "run")
    run = TrainingRun(out, epochs=3, backup_every=6)
    assert run.plan(24, 4, default_epochs=20) == Schedule(18, 3, 6)
    model, history = run.fine_tune(
        _build, _stream, learning_rate=0.01, decay_fraction=2 / 3,
        describe=lambda m, s: f"tiny: /10 at {s.boundaries[0]}", verbose=0)
    assert "tiny: /10 at 12" in capsys.readouterr().out
    assert len(history["loss"]) == 3 and all(isinstance(v, float) for v in history["loss"])
    assert history["learning_rate"] == pytest.approx([0.01, 0.01, 0.001])
    assert history["loss"][-1] < history["loss"][0]
    assert int(model.optimizer.iterations.numpy()) == 18
    assert os.path.exists(os.path.join(out, "checkpoints", "last.weights.h5"))
    assert not os.path.exists(os.path.join(out, "backup"))

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("simulated crash")

    out2 = str(tmp_path / "crashed")
    run = TrainingRun(out2, epochs=3, backup_every=6)
    run.plan(24, 4, default_epochs=20)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run.fine_tune(_build, _stream, learning_rate=0.01, extra_callbacks=[Crash()],
                      verbose=0)
    assert os.path.exists(os.path.join(out2, "backup", "state.json"))
    run = TrainingRun(out2, epochs=3, backup_every=6)
    run.plan(24, 4, default_epochs=20)
    model, history = run.fine_tune(_build, _stream, learning_rate=0.01, verbose=0)
    assert "Resuming from the backup of step 6" in capsys.readouterr().out
    assert len(history["loss"]) == 2
    assert int(model.optimizer.iterations.numpy()) == 18


def test_fitting_before_planning_is_an_error(tmp_path):
    run = TrainingRun(str(tmp_path / "r"))
    with pytest.raises(RuntimeError, match="plan"):
        run.fine_tune(_build, _stream, learning_rate=0.1)
