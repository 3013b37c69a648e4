"""train_detector -> detector directory -> reload, evaluate, predict, draw."""

import json
import os

import numpy as np
import pytest

from conftest import shared_data
from detection.data.pipeline import DetectionPreprocessing, make_detection_dataset
from detection.data.sources import open_detection_source
from detection.evaluate import draw_detections, evaluate_detector, predict_detector
from detection.model_dir import load_detector
from detection.train import train_detector

TINY = dict(anchor_scales=(24, 48, 96), roi_batch=16, rpn_batch=32, pooled_size=6,
            proposals=dict(pre_nms_train=300, post_nms_train=50, pre_nms_test=200,
                           post_nms_test=30))


def test_pipeline_scales_and_flips_boxes_with_the_image():
    split = open_detection_source("synthetic", synthetic_train=4).split("train")
    images, anns = split.images, split.annotations
    prep = DetectionPreprocessing(shorter_side=256, max_side=256, flip=False)
    x, y = next(iter(make_detection_dataset(anns, prep, training=False, batch_size=4,
                                            images=images)))
    assert x["images"].shape == (4, 256, 256, 3)
    np.testing.assert_allclose(x["image_sizes"].numpy(), [[256, 256]] * 4)
    n = len(anns[0].boxes)
    np.testing.assert_allclose(y["boxes"].numpy()[0, :n], anns[0].boxes * 2, rtol=1e-5)
    assert (y["boxes"].numpy()[0, n:] == -1).all()
    flip = DetectionPreprocessing(shorter_side=128, max_side=128, flip=True)
    xs = [next(iter(make_detection_dataset(anns, flip, training=True, batch_size=4,
                                           images=images, seed=s))) for s in range(6)]
    for _, y in xs:  # boxes stay inside the flipped image
        b = y["boxes"].numpy()
        valid = b[..., 0] >= 0
        assert (b[valid][:, 3] <= 128).all() and (b[valid][:, 1] >= 0).all()
    firsts = {tuple(y["boxes"].numpy()[0, 0].round(2)) for _, y in xs}
    assert len(firsts) >= 2  # both the flipped and the plain version appeared


def test_train_save_reload_evaluate_predict(tmp_path):
    out = str(tmp_path / "det")
    r = train_detector("synthetic", out, depth=18, epochs=1, batch_size=4,
                       learning_rate=0.005, shorter_side=96, max_side=96,
                       synthetic_train=8, synthetic_eval=4, model_kwargs=TINY, verbose=0)
    assert os.path.exists(os.path.join(out, "detector.weights.h5"))
    meta = json.load(open(os.path.join(out, "resnet_tf.json")))
    assert meta["kind"] == "detector" and meta["class_names"][0] == "circle"
    assert {"rpn_objectness", "rpn_box", "head_class", "head_box"} <= set(r["history"])
    model, prep, _ = load_detector(out)
    x = {"images": np.random.default_rng(0).normal(size=(1, 96, 96, 3)).astype("float32"),
         "image_sizes": np.array([[96, 96]], "float32")}
    np.testing.assert_allclose(model(x)["scores"].numpy(), r["model"](x)["scores"].numpy(),
                               atol=1e-5)
    ev = evaluate_detector(out, "synthetic", synthetic_train=8, synthetic_eval=4)
    assert ev["images"] == 4 and 0 <= ev["voc_map50"] <= 1
    assert set(ev["per_class_ap50"]) == set(meta["class_names"])
    assert ev["max_images"] == {"limit": None, "of": 4}
    # --max-images: the first N images in the loader's order, the cut reported.
    first = evaluate_detector(out, "synthetic", synthetic_train=8, synthetic_eval=4,
                              max_images=2)
    assert first["images"] == 2 and first["max_images"] == {"limit": 2, "of": 4}
    with pytest.raises(ValueError, match="max_images must be a positive"):
        evaluate_detector(out, "synthetic", synthetic_eval=4, max_images=0)
    img = sorted((shared_data("bccd/BCCD") / "JPEGImages").iterdir())[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rows = predict_detector(out, [str(img), str(bad)])
    assert rows[0]["height"] == 480 and len(rows[0]["boxes"]) == len(rows[0]["names"])
    assert "error" in rows[1]
    drawn = draw_detections(str(img), rows[0], str(tmp_path / "d.png"), min_score=0)
    from PIL import Image

    assert Image.open(drawn).size == (640, 480)


def test_detector_directory_errors(tmp_path):
    with pytest.raises(ValueError, match="no such model directory"):
        load_detector(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="Unknown detection data spec"):
        open_detection_source("coco2:/x")


def test_detector_cli(tmp_path, capsys):
    from apps import cli

    out = str(tmp_path / "det")
    assert cli.main(["train", "detector", "--data", "synthetic", "--depth", "18",
                     "--epochs", "1", "--batch-size", "4", "--shorter-side", "64",
                     "--max-side", "64", "--anchor-scales", "16,32", "--roi-batch", "8",
                     "--rpn-batch", "16", "--pooled-size", "4", "--synthetic-train", "4",
                     "--synthetic-eval", "2", "--out", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model_dir"] == out
    assert cli.main(["evaluate", "detector", "--model", out, "--data", "synthetic",
                     "--synthetic-eval", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["images"] == 2 and "coco" in r and 0 <= r["voc07_map50"] <= 1
    assert cli.main(["evaluate", "detector", "--model", out, "--data", "synthetic",
                     "--synthetic-eval", "2", "--max-images", "1"]) == 0
    assert "Capped: --max-images evaluated the first 1 of 2 images." in \
        capsys.readouterr().out
    img = sorted((shared_data("bccd/BCCD") / "JPEGImages").iterdir())[0]
    assert cli.main(["predict", "detector", "--model", out, str(img), "--min-score", "0",
                     "--draw", str(tmp_path / "d.png")]) == 0
    assert os.path.exists(tmp_path / "d.png")
    assert cli.main(["evaluate", "detector", "--model", str(tmp_path / "none"),
                     "--data", "synthetic"]) == 2
    assert "no such model directory" in capsys.readouterr().err


@pytest.mark.slow
def test_overfits_a_handful_of_bccd_images_to_map_above_0_8(op_determinism):
    """The whole pipeline learns on real data: three BCCD trainval images
    with all three classes (platelets are ~17 px at this scale), from scratch,
    trained in chunks of 10 iterations until VOC mAP@0.5 on the same images
    reaches 0.8 with every class's AP above 0.5. Seeded (weights, RoI
    sampling, shuffle) with deterministic ops, so a machine takes the same
    path every run (but kernels differ between CPU kinds). 32 RoIs an image
    (conv5_x on each RoI is most of a step): on an AVX2 EPYC mAP 0 after 10
    iterations, 0.62 after 30, 0.85 after 80, in 190 s of CPU for training
    (seed 2: 0.86 after 100; 64 RoIs: 0.86 after 120, 424 s). The cap is
    160. Adam, 224 px and 500/100 proposals: SGD at 320 px took about 3.5x
    the CPU."""
    import dataclasses

    import keras

    from detection.evaluate import _to_original, detect_split
    from detection.metrics.voc_map import evaluate_voc
    from detection.model import FasterRCNN

    keras.utils.set_random_seed(1)
    src = open_detection_source(f"voc:{shared_data('bccd/BCCD')}:trainval")
    train = src.split("train")
    anns = [a for a in train.annotations if set(a.classes.tolist()) == {0, 1, 2}][:3]
    split = dataclasses.replace(train, annotations=anns)
    prep = DetectionPreprocessing(224, 299, flip=False)
    ds = make_detection_dataset(anns, prep, training=True, batch_size=3, seed=1).repeat()
    model = FasterRCNN(3, depth=18, class_names=src.class_names, frozen_bn=False,
                       freeze_at=0, anchor_scales=(16, 32, 64, 128), rpn_batch=128,
                       roi_batch=32, pooled_size=6, seed=1,
                       proposals=dict(pre_nms_train=500, post_nms_train=100,
                                      pre_nms_test=500, post_nms_test=50))
    model.ensure_built()
    model.compile(keras.optimizers.Adam(1e-3, clipnorm=10.0))
    gts = [{"boxes": a.boxes, "classes": a.classes, "difficult": a.difficult} for a in anns]
    history = []
    for steps in [10, 20] + [10] * 13:  # at most 160 iterations
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
        dets = _to_original(detect_split(model, prep, split, 3), anns)
        history.append(evaluate_voc(dets, gts, 3, class_names=src.class_names))
        if history[-1]["mAP"] >= 0.8 and min(history[-1]["per_class"].values()) > 0.5:
            break
    assert history[-1]["mAP"] >= 0.8, [round(h["mAP"], 3) for h in history]
    assert all(ap > 0.5 for ap in history[-1]["per_class"].values()), history[-1]
    assert history[0]["mAP"] < 0.5  # it had to learn: 10 iterations are not enough


def test_the_default_roi_batch_is_the_original_faster_rcnn_codes():
    """128 RoIs per image, a quarter foreground (py-faster-rcnn's
    TRAIN.BATCH_SIZE and FG_FRACTION), in the model and the CLI; 512 stays
    an option."""
    import inspect

    from apps import cli
    from detection.model import FasterRCNN

    defaults = inspect.signature(FasterRCNN).parameters
    assert defaults["roi_batch"].default == 128
    assert defaults["roi_positive_fraction"].default == 0.25
    parser = cli.build_parser()
    assert parser.parse_args(["train", "detector", "--data", "synthetic",
                              "--out", "x"]).roi_batch == 128
    assert parser.parse_args(["train", "detector", "--data", "synthetic", "--out", "x",
                              "--roi-batch", "512"]).roi_batch == 512
