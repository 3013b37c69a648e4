"""The per-class RPN localizer: head equivalences, losses on the GT class
only, the localizer directory, real-data evaluation, and learning."""

import os

import numpy as np
import pytest

from conftest import shared_data
from localization.evaluate import evaluate_localizer
from localization.metrics import localization_errors, oracle_error
from localization.model import Localizer
from localization.model_dir import load_localizer, save_localizer
from localization.train import train_localizer
from resnet_tf import build
from resnet_tf.data.preprocessing import Preprocessing

SMALL = dict(anchor_scales=(10, 16, 24), anchor_ratios=(1.0,), head_channels=16)


def _small_localizer(classes=6, width=None, **kw):
    clf = build("resnet8", classes=classes, width=width)
    loc = Localizer(clf.get_config(), **{**SMALL, **kw})
    loc.ensure_built()
    loc.load_classifier_weights(clf)
    return loc, clf


def test_gathered_head_equals_the_dense_1x1_convolutions():
    loc, clf = _small_localizer(classes=7)
    x = np.random.default_rng(0).normal(size=(2, 40, 32, 3)).astype("float32")
    feats = loc.features(x)
    cls, reg = loc.head(feats)
    assert cls.shape == (2, 10, 8, 3, 7) and reg.shape == (2, 10, 8, 3, 7, 4)
    picks = np.array([[6, 0, 3], [2, 2, 5]])
    c, r = loc.head.for_classes(feats, picks)
    for b in range(2):
        for j, k in enumerate(picks[b]):
            np.testing.assert_allclose(c[b, ..., j], cls[b, ..., k], atol=1e-5)
            np.testing.assert_allclose(r[b, ..., j, :], reg[b, ..., k, :], atol=1e-5)
    # Inference: the classifier copy's classes, the best anchor of each.
    out = loc(x)
    np.testing.assert_allclose(out["probabilities"], clf(x), atol=1e-5)
    top = np.argsort(-np.asarray(clf(x)), axis=1)[:, :5]
    np.testing.assert_array_equal(out["classes"], top)
    dense = np.asarray(cls).reshape(2, -1, 7)
    for b in range(2):
        best = dense[b][:, top[b]].max(0)
        np.testing.assert_allclose(out["scores"][b], 1 / (1 + np.exp(-best)), atol=1e-5)
    boxes = np.asarray(out["boxes"])
    assert (boxes >= 0).all() and (boxes[..., [0, 2]] <= 40).all()
    assert (boxes[..., [1, 3]] <= 32).all()


def test_the_head_initialisation_follows_the_seed():
    """A localizer's seed fixes its new head (the trunk comes from the
    classifier), so two runs with one seed start identically."""
    heads = [_small_localizer(seed=s)[0].head for s in (3, 3, 4)]
    same = [np.asarray(w) for w in heads[0].weights]
    for a, b in zip(same, [np.asarray(w) for w in heads[1].weights]):
        np.testing.assert_array_equal(a, b)
    kernels = [np.asarray(h.cls.kernel) for h in heads]
    assert not np.array_equal(kernels[0], kernels[2])
    assert 0.005 < kernels[0].std() < 0.02  # N(0, 0.01^2)
    # The three convolutions draw different numbers; the seed survives a config.
    assert not np.allclose(np.asarray(heads[0].conv.kernel).ravel()[:16],
                           kernels[0].ravel()[:16])
    assert heads[0].get_config()["seed"] == 3


def test_only_the_ground_truth_class_gets_gradients():
    loc, _ = _small_localizer()
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    y = {"labels": np.array([1, 4]),
         "boxes": np.array([[[4, 4, 20, 20], [-1] * 4], [[2, 6, 30, 28], [8, 8, 16, 16]]],
                           "float32")}
    import tensorflow as tf

    with tf.GradientTape() as tape:
        pred = loc(x, training=True)
        values = loc.loss_values(pred["features"], pred["anchors"], y["labels"],
                                 y["boxes"])
        total = values["loc_cls"] + values["loc_reg"]
    kernel_c, kernel_r = loc.head.cls.kernel, loc.head.reg.kernel
    gc, gr = tape.gradient(total, [kernel_c, kernel_r])
    gc = np.abs(np.asarray(gc)).reshape(-1, 3, 6).sum(axis=(0, 1))  # per class
    gr = np.abs(np.asarray(gr)).reshape(-1, 3, 6, 4).sum(axis=(0, 1, 3))
    assert set(np.nonzero(gc)[0]) == {1, 4} and set(np.nonzero(gr)[0]) <= {1, 4}
    assert gr[1] > 0 or gr[4] > 0  # a positive anchor trained its class's regressor
    assert 0.5 < float(values["loc_cls"]) < 0.9  # ~log 2 at initialisation


def test_localizer_directory_round_trip_and_bad_directories(tmp_path):
    loc, _ = _small_localizer()
    prep = Preprocessing.for_style("cifar")
    mean = np.full((32, 32, 3), 100.0, np.float32)
    save_localizer(str(tmp_path / "loc"), loc, prep, mean, results={})
    again, prep2, mean2, meta = load_localizer(str(tmp_path / "loc"))
    assert meta["kind"] == "localizer" and prep2 == prep
    np.testing.assert_array_equal(mean2, mean)
    x = np.random.default_rng(2).normal(size=(1, 36, 44, 3)).astype("float32")
    for key in ("probabilities", "scores", "boxes"):
        np.testing.assert_allclose(again(x)[key], loc(x)[key], atol=1e-5)
    with pytest.raises(ValueError, match="no such model directory"):
        load_localizer(str(tmp_path / "none"))
    os.remove(tmp_path / "loc" / "localizer.weights.h5")
    with pytest.raises(ValueError, match="localizer.weights.h5 is missing"):
        load_localizer(str(tmp_path / "loc"))
    with pytest.raises(ValueError, match="needs init_from"):
        train_localizer("synthetic", str(tmp_path / "x"), init_from=None)


def test_a_narrow_classifier_gives_a_narrow_localizer():
    loc, clf = _small_localizer(width=8)
    assert clf.name == "resnet8_w8" and loc.trunk.output.shape[-1] == 32  # C4: 4 x 8
    x = np.random.default_rng(4).normal(size=(2, 32, 40, 3)).astype("float32")
    np.testing.assert_allclose(loc.classify(x), clf(x), atol=1e-6)
    assert loc(x)["boxes"].shape[0] == 2


@pytest.mark.parametrize("level,stride", [(None, 4), ("C3", 2)])
def test_anchor_stride_is_the_feature_levels_stride(level, stride):
    loc, _ = _small_localizer(feature_level=level)
    assert loc.stride == loc.anchor_generator.stride == stride
    x = np.zeros((1, 32, 40, 3), np.float32)
    assert loc.features(x).shape[1:3] == (32 // stride, 40 // stride)
    with pytest.raises(ValueError, match=r"'C5'.*\['C2', 'C3', 'C4'\]"):
        _small_localizer(feature_level="C5")


def test_batched_testing_equals_one_image_at_a_time(monkeypatch):
    from localization import evaluate
    from localization.evaluate import Tester

    loc, _ = _small_localizer()
    rng = np.random.default_rng(3)
    for layer in loc.trunk.layers + loc.classifier.layers:  # non-trivial BN statistics
        if hasattr(layer, "moving_variance"):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape))
    prep = Preprocessing.for_style("cifar")
    mean = np.full((32, 32, 3), 100.0, np.float32)
    tester = Tester(loc, prep, mean, scales=(32, 40), flip=True, top_k=3)
    sizes = [(32, 32), (40, 28), (32, 32), (40, 28), (32, 32)]
    images = [rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8) for h, w in sizes]
    extras = [[k % 6] for k in range(len(images))]
    together = tester.many(images, extras, batch_size=2)  # 2 sizes, chunks of 2 and 1
    for image, extra, got in zip(images, extras, together):
        alone = tester(image, extra_classes=extra)
        np.testing.assert_array_equal(got["classes"], alone["classes"])
        for key in ("probabilities", "scores", "boxes", "extra_boxes"):
            np.testing.assert_allclose(got[key], alone[key], atol=1e-4, err_msg=key)
    assert together[0]["boxes"].shape == (3, 4) and together[0]["extra_boxes"].shape == (1, 4)
    # A pixel budget below one view's area tests one image a call: same results.
    monkeypatch.setattr(evaluate, "VIEW_PIXELS", 1000)
    for got, again in zip(together, tester.many(images, extras)):
        np.testing.assert_allclose(got["boxes"], again["boxes"], atol=1e-4)
    assert not np.allclose(together[0]["boxes"], together[2]["boxes"])
    with pytest.raises(ValueError, match="2 extra_classes entries for 5 images"):
        tester.many(images, extras[:2])


@pytest.mark.slow
def test_evaluation_on_the_100_real_images_with_a_random_model(tmp_path):
    root = shared_data("imagenet-val-loc")
    wnids = [line.split()[0] for line in open(root / "LOC_synset_mapping.txt")]
    clf = build("resnet18", classes=1000)
    loc = Localizer(clf.get_config(), class_names=wnids, head_channels=64)
    loc.ensure_built(64)
    save_localizer(str(tmp_path / "loc"), loc, Preprocessing.for_style("imagenet"))
    # Small test scales keep ResNet-18 quick on a CPU; the path is the same.
    r = evaluate_localizer(str(tmp_path / "loc"), f"ilsvrc-loc:{root}", scales=(96,),
                           per_image=True)
    assert r["images"] == r["scored_paths"] == 100 and r["skipped_images"] == 0
    assert len({row["path"] for row in r["per_image"]}) == 100
    for key in ("top1_loc_error", "top5_loc_error", "oracle_loc_error", "top1_cls_error",
                "top5_cls_error"):
        assert 0.0 <= r[key] <= 1.0, key
    assert r["top5_loc_error"] <= r["top1_loc_error"]
    assert r["top5_cls_error"] <= r["top1_cls_error"]
    for row in r["per_image"][:10]:
        assert len(row["classes"]) == 5 and len(set(row["classes"])) == 5


@pytest.mark.slow
def test_fine_tuned_localizer_beats_a_centred_average_box(tmp_path, op_determinism):
    from resnet_tf.train import train_classifier

    train_classifier("synthetic", str(tmp_path / "clf"), model="resnet8", recipe="cifar",
                     epochs=10, batch_size=32, learning_rate=0.1, synthetic_train=1500,
                     synthetic_eval=100, verbose=0)
    data = dict(synthetic_train=600, synthetic_eval=200)
    out = train_localizer("synthetic", str(tmp_path / "loc"), init_from=str(tmp_path / "clf"),
                          epochs=12, batch_size=32, learning_rate=0.1, verbose=0,
                          anchor_scales=(10, 16, 24), anchor_ratios=(1.0,),
                          head_channels=64, **data)
    hist = out["history"]
    assert hist["loc_cls"][-1] < 0.75 * hist["loc_cls"][0]
    r = evaluate_localizer(str(tmp_path / "loc"), "synthetic", per_image=True, **data)
    assert r["images"] == 200

    # The baseline: the same class guesses, each with one fixed box of the
    # training boxes' average size centred in the image.
    from localization.data.sources import open_localization_source

    source = open_localization_source("synthetic", **data)
    train_boxes = np.concatenate([a.boxes for a in source.split("train").annotations])
    h, w = (train_boxes[:, 2] - train_boxes[:, 0]).mean(), \
        (train_boxes[:, 3] - train_boxes[:, 1]).mean()
    centred = np.array([16 - h / 2, 16 - w / 2, 16 + h / 2, 16 + w / 2], np.float32)
    anns = source.split("eval").annotations
    truth = [(a.classes, a.boxes) for a in anns]
    base = localization_errors([(row["classes"], np.tile(centred, (5, 1)))
                                for row in r["per_image"]], truth)
    base_oracle = oracle_error([centred] * len(anns), truth)
    print(f"\nlocalizer: top-1 {r['top1_loc_error']:.3f} top-5 {r['top5_loc_error']:.3f} "
          f"oracle {r['oracle_loc_error']:.3f} (cls top-1 {r['top1_cls_error']:.3f}); "
          f"centred box: top-1 {base['top1_loc_error']:.3f} top-5 "
          f"{base['top5_loc_error']:.3f} oracle {base_oracle:.3f}")
    # Same guesses, same images: only the boxes differ.
    assert r["top1_cls_error"] == pytest.approx(base["top1_cls_error"])
    assert r["oracle_loc_error"] < base_oracle - 0.25
    assert r["top5_loc_error"] < base["top5_loc_error"] - 0.2
    assert r["top1_loc_error"] < base["top1_loc_error"] - 0.05
