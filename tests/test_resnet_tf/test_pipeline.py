"""tf.data pipelines: the paper's views on real photos, CIFAR, determinism,
mean image, and bad files during model.fit."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf


from conftest import shared_data
from resnet_tf.data.decode import SkipCounter
from resnet_tf.data.pipeline import compute_mean_image, make_dataset
from resnet_tf.data.preprocessing import Preprocessing
from resnet_tf.data.sources import open_source


def test_imagenet_pipeline_handles_every_hymenoptera_file():
    root = shared_data("hymenoptera/hymenoptera_data")
    src = open_source(f"folder:{root}")
    prep = Preprocessing.for_style("imagenet")
    counter = SkipCounter()
    for which, n in (("train", 245), ("eval", 153)):
        split = src.split(which)
        ds = make_dataset(split, prep, np.full((224, 224, 3), 110, np.float32),
                          training=which == "train", batch_size=32, cache=False,
                          counter=counter)
        seen = 0
        for x, y in ds:
            assert x.shape[1:] == (224, 224, 3) and x.dtype == tf.float32
            assert np.isfinite(x.numpy()).all()
            seen += len(y)
        # Training drops the last partial batch; evaluation sees every file.
        assert seen == (n // 32) * 32 if which == "train" else seen == n
    assert counter.count == 0  # the GIF placeholder decodes as an image too


def test_cifar_pipeline_on_real_jpegs_and_mean_image():
    root = shared_data("cifar10-jpg")
    src = open_source(f"folder:{root / 'test'}")
    split = src.split("train")  # a flat folder: every image
    prep = Preprocessing.for_style("cifar")
    mean = compute_mean_image(split, prep, max_images=300)
    assert mean.shape == (32, 32, 3) and 80 < mean.mean() < 160
    # The mean image equals numpy's mean over the same 300 files.
    from PIL import Image
    from resnet_tf.data.sources import _list_images

    files = []
    for c in src.class_names:
        files += _list_images(str(root / "test" / c))
    ref = np.mean([np.asarray(Image.open(f).convert("RGB"), np.float64)
                   for f in files[:300]], axis=0)
    np.testing.assert_allclose(mean, ref, atol=1.0)
    # With the mean of the whole folder (the first 300 files are all one
    # class), mean-subtracted batches are centred: per-image brightness
    # varies by ~30 grey levels, so a batch of 200 has |mean| of a few.
    full_mean = compute_mean_image(split, prep)
    ds = make_dataset(split, prep, full_mean, training=True, batch_size=200, seed=1,
                      deterministic=True)
    x, y = next(iter(ds))
    assert x.shape == (200, 32, 32, 3)
    assert abs(float(tf.reduce_mean(x))) < 10


def test_deterministic_mode_repeats_exactly_and_epochs_differ():
    src = open_source("synthetic", synthetic_train=64, synthetic_size=32)
    prep = Preprocessing.for_style("cifar")
    split = src.split("train")

    def epochs(seed, n=2):
        ds = make_dataset(split, prep, None, training=True, batch_size=16, seed=seed,
                          deterministic=True)
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(n)]

    a, b = epochs(7), epochs(7)
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(a[0], a[1])  # reshuffled and re-augmented
    assert not np.array_equal(epochs(8, 1)[0], a[0])


def test_eval_views_have_the_paper_shapes():
    img = tf.constant(np.random.default_rng(0).integers(0, 255, (300, 400, 3)),
                      tf.uint8)
    prep = Preprocessing.for_style("imagenet")
    mean = np.zeros((224, 224, 3), np.float32)
    assert prep.eval_view(img, mean).shape == (224, 224, 3)
    assert prep.ten_crop(img, mean).shape == (10, 224, 224, 3)
    views = prep.multiscale_views(img, mean)
    assert [int(min(v.shape[:2])) for v in views] == [224, 256, 384, 480, 640]
    # The mean is resized for full-image views: a constant mean stays exact.
    const = np.full((224, 224, 3), 5.0, np.float32)
    v = prep.multiscale_views(img, const)[0]
    np.testing.assert_allclose(v + 5.0, prep.multiscale_views(img, None)[0], atol=1e-4)


def test_preprocessing_round_trips_and_rejects_bad_settings():
    prep = Preprocessing.for_style("imagenet", pca_std=0.0, scale_range=(224, 320))
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    with pytest.raises(ValueError, match="scale_range"):
        Preprocessing(scale_range=(100, 480))
    with pytest.raises(ValueError, match="style"):
        Preprocessing(style="mnist")


def _folder_with_bad_files(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        os.makedirs(root / c)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(
                root / c / f"{i}.jpg")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.jpg").write_text("not an image")
    good = (root / "a" / "0.jpg").read_bytes()
    (root / "b" / "cut.jpg").write_bytes(good[: len(good) // 2])
    return root


def test_fit_survives_bad_files_and_reports_them(tmp_path, caplog, capsys):
    from resnet_tf.callbacks import SkippedImagesReport
    from resnet_tf import build

    root = _folder_with_bad_files(tmp_path / "data")
    split = open_source(f"folder:{root}").split("train")
    assert split.num_examples == 27
    prep = Preprocessing.for_style("cifar")
    counter = SkipCounter()
    ds = make_dataset(split, prep, None, training=True, batch_size=8, cache=False,
                      counter=counter)
    model = build("resnet8", family="cifar", classes=2)
    model.compile("sgd", "sparse_categorical_crossentropy")
    report = SkippedImagesReport({"train": counter})
    with caplog.at_level(logging.WARNING, logger="resnet_tf.data"):
        model.fit(ds, epochs=2, verbose=0, callbacks=[report])
    assert report.totals["train"] == 6  # 3 bad files x 2 epochs
    text = caplog.text
    for name in ("empty.jpg", "notes.jpg", "cut.jpg"):
        assert name in text
    assert "skipped unreadable images: 3 train" in capsys.readouterr().out
