"""Data sources: folders, TFDS (through tfds.testing.mock_data) and synthetic."""

import os

import numpy as np
import pytest

from conftest import shared_data
from resnet_tf.data.pipeline import decoded_examples
from resnet_tf.data.sources import open_source
from resnet_tf.data import synthetic


def _write_folder(root, classes=("b_cls", "a_cls"), per_class=5, size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size + 3, 3), np.uint8)).save(
                root / c / f"{i}.png")
    return root


def _labels(split):
    return sorted(int(ex["label"]) for ex in decoded_examples(split))


def test_folder_with_explicit_splits_on_real_data():
    root = shared_data("hymenoptera/hymenoptera_data")
    src = open_source(f"folder:{root}")
    assert src.class_names == ["ants", "bees"]
    train, val = src.split("train"), src.split("eval")
    assert (train.num_examples, val.num_examples) == (245, 153)
    assert train.name == "train" and val.name == "val"


def test_folder_holdout_is_stratified_deterministic_and_disjoint(tmp_path):
    _write_folder(tmp_path, per_class=10)
    src = open_source(f"folder:{tmp_path}", val_fraction=0.2, seed=3)
    assert src.class_names == ["a_cls", "b_cls"]  # sorted folder names
    train, val = src.split("train"), src.split("eval")
    assert (train.num_examples, val.num_examples) == (16, 4)
    assert _labels(val) == [0, 0, 1, 1]

    def paths(split):
        return {ex["path"].numpy() for ex in decoded_examples(split)}

    assert not paths(train) & paths(val)
    again = open_source(f"folder:{tmp_path}", val_fraction=0.2, seed=3)
    assert paths(again.split("eval")) == paths(val)
    other = open_source(f"folder:{tmp_path}", val_fraction=0.2, seed=4)
    assert paths(other.split("eval")) != paths(val)


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        open_source(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        open_source(f"folder:{tmp_path / 'empty'}")
    _write_folder(tmp_path / "d" / "train", classes=("x",))
    _write_folder(tmp_path / "d" / "val", classes=("x", "y"))
    with pytest.raises(ValueError, match="class 'y' is not among"):
        open_source(f"folder:{tmp_path / 'd'}").split("eval")
    with pytest.raises(ValueError, match="Unknown data spec"):
        open_source("s3://bucket")


def test_tfds_through_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        src = open_source("tfds:cifar10")
        assert len(src.class_names) == 10
        train = src.split("train")
        assert train.num_examples == 6 and train.encoded
        examples = list(decoded_examples(train))
        assert len(examples) == 6
        assert all(ex["image"].shape == (32, 32, 3) for ex in examples)
        assert examples[0]["path"].numpy().startswith(b"tfds:cifar10:train:")
        test = open_source("tfds:cifar10:test").split("eval")
        assert test.name == "test"


def test_tfds_missing_dataset_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(ValueError) as e:
        open_source("tfds:cifar10", data_dir=str(tmp_path)).split("train")
    msg = str(e.value)
    assert str(tmp_path) in msg and "tfds build cifar10" in msg and "--download" in msg
    with pytest.raises(ValueError, match="ILSVRC2012_img_train.tar"):
        open_source("tfds:imagenet2012", data_dir=str(tmp_path)).split("train")
    with pytest.raises(ValueError, match="unknown TFDS dataset"):
        open_source("tfds:no_such_dataset_xyz")


def test_synthetic_is_deterministic_balanced_and_has_disjoint_splits():
    a = open_source("synthetic", seed=5, synthetic_train=60, synthetic_eval=30)
    b = open_source("synthetic", seed=5, synthetic_train=60, synthetic_eval=30)
    xa, ya = a.arrays("train")
    xb, yb = b.arrays("train")
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert np.bincount(ya).tolist() == [10] * 6
    xe, _ = a.arrays("eval")
    assert not any((xe[i] == xa).all(axis=(1, 2, 3)).any() for i in range(len(xe)))
    assert a.class_names == list(synthetic.SHAPES)
    c = open_source("synthetic", seed=6, synthetic_train=60)
    assert not np.array_equal(c.arrays("train")[0], xa)


def test_synthetic_shapes_sit_inside_their_boxes():
    images, labels, boxes = synthetic.make_classification(24, size=48, seed=1)
    assert images.dtype == np.uint8 and images.shape == (24, 48, 48, 3)
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes >= 0).all() and (boxes <= 48).all()
    # Re-render one shape on a blank canvas: its tight box is the one returned.
    canvas = np.zeros((48, 48, 3), np.uint8)
    box = synthetic.render_shape(canvas, "square", (10.0, 5.0, 30.0, 40.0), (255, 0, 0))
    assert box == (10.0, 5.0, 30.0, 40.0)
    with pytest.raises(ValueError, match="hexagon"):
        synthetic.render_shape(canvas, "hexagon", (0, 0, 5, 5), (1, 1, 1))


def test_val_fraction_holds_out_training_images_even_beside_a_test_folder(tmp_path):
    _write_folder(tmp_path / "train", per_class=10)
    _write_folder(tmp_path / "test", per_class=3)
    src = open_source(f"folder:{tmp_path}", val_fraction=0.1, seed=0)
    train, val = src.split("train"), src.split("eval")
    assert (train.num_examples, val.num_examples) == (18, 2)
    assert all(b"/train/" in ex["path"].numpy() for ex in decoded_examples(val))
    assert open_source(f"folder:{tmp_path}").split("eval").num_examples == 6
