"""Damaged or unsafe model files: a clear error naming the file and what to
do, never a traceback from inside zipfile or h5py, and never code run from
a file (``safe_mode=True`` on every ``.keras`` load)."""

import os

import keras
import numpy as np
import pytest

from resnet_tf import model_dir, weights
from resnet_tf.data.preprocessing import Preprocessing


def tiny_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(2)(x), name="tiny")


def damage(path, how):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write({"truncated": data[:len(data) // 2], "empty": b"",
                 "garbage": b"not a model file\n" * 20}[how])


@pytest.fixture
def classifier_dir(tmp_path):
    directory = str(tmp_path / "clf")
    model_dir.save_classifier(directory, tiny_model(), ["a", "b"], None,
                              Preprocessing.for_style("cifar"))
    return directory


@pytest.mark.parametrize("how,state", [("truncated", "truncated or corrupt"),
                                       ("garbage", "truncated or corrupt"),
                                       ("empty", "empty")])
def test_damaged_classifier_file_names_the_file_and_what_to_do(classifier_dir, how, state):
    model_dir.load_classifier(classifier_dir)  # loads while intact
    path = os.path.join(classifier_dir, model_dir.MODEL)
    damage(path, how)
    with pytest.raises(ValueError) as e:
        model_dir.load_classifier(classifier_dir)
    message = str(e.value)
    assert message.startswith(f"{path}: the classifier file is {state}")
    assert "checkpoints/best.keras" in message  # what to do


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_weights_file_names_the_file(tmp_path, how):
    """The helper the detector and localizer loaders use for .weights.h5."""
    model = tiny_model()
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    model_dir.load_weights_file(tiny_model(), path, "detector")
    damage(path, how)
    with pytest.raises(ValueError, match=r"model\.weights\.h5: the detector weights file is "
                                         r"(empty|truncated or corrupt).*[Rr]etrain"):
        model_dir.load_weights_file(tiny_model(), path, "detector")
    with pytest.raises(ValueError, match="no such detector weights file"):
        model_dir.load_weights_file(tiny_model(), str(tmp_path / "none.weights.h5"),
                                    "detector")


def test_weights_that_do_not_fit_the_model_name_the_file(tmp_path):
    path = str(tmp_path / "other.weights.h5")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)]).save_weights(path)
    with pytest.raises(ValueError, match="other.weights.h5: could not load the localizer's"):
        model_dir.load_weights_file(tiny_model(), path, "localizer")


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_keras_applications_import_of_a_damaged_file(tmp_path, how):
    path = str(tmp_path / "resnet50.keras")
    tiny_model().save(path)
    damage(path, how)
    with pytest.raises(ValueError, match="resnet50.keras: the keras.applications model "
                                         "file is truncated or corrupt"):
        weights.from_keras_applications(path)


def lambda_model(sentinel):
    """A model whose Lambda layer's bytecode creates ``sentinel`` when run."""
    fn = eval(f"lambda x: __import__('pathlib').Path({str(sentinel)!r}).touch() or x")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(fn)(inputs)
    x = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, x)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_file_with_python_code_is_refused_and_runs_nothing(tmp_path, classifier_dir,
                                                             suffix):
    sentinel = tmp_path / "code_ran"
    model = lambda_model(sentinel)
    assert sentinel.exists()  # the bytecode does run when called
    sentinel.unlink()
    path = str(tmp_path / f"evil{suffix}")
    model.save(path)
    with pytest.raises(ValueError, match=f"evil{suffix}: refused to load the keras"
                                         r".applications model: it contains Python code"
                                         r".*safe_mode=False"):
        weights.from_keras_applications(path)
    if suffix == ".keras":  # a classifier directory holding it
        os.replace(path, os.path.join(classifier_dir, model_dir.MODEL))
        with pytest.raises(ValueError, match="model.keras: refused to load the classifier: "
                                             "it contains Python code.*Lambda"):
            model_dir.load_classifier(classifier_dir)
    assert not sentinel.exists()


def test_intact_files_still_load(tmp_path, classifier_dir):
    clf = model_dir.load_classifier(classifier_dir)
    x = np.zeros((1, 8, 8, 3), np.float32)
    path = str(tmp_path / "m.weights.h5")
    clf.model.save_weights(path)
    other = model_dir.load_weights_file(tiny_model(), path)
    np.testing.assert_allclose(other.predict(x, verbose=0), clf.model.predict(x, verbose=0))
