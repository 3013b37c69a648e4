"""resnet-tf {train,evaluate,predict,export} localizer with the second stage
(--stage rcnn): the two-stage directory, both stages' evaluation, and the
SavedModel serving RPN+R-CNN equal to the in-process test."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import shared_data
from apps import cli
from resnet_tf import export


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    """(classifier dir, first-stage dir, second-stage dir), all tiny."""
    from resnet_tf.train import train_classifier

    root = tmp_path_factory.mktemp("rcnn_cli")
    clf = str(root / "clf")
    train_classifier("synthetic", clf, model="resnet8", recipe="cifar", epochs=1,
                     batch_size=16, synthetic_train=32, synthetic_eval=8, verbose=0)
    loc, two = str(root / "loc"), str(root / "two")
    common = ["--data", "synthetic", "--synthetic-train", "16", "--synthetic-eval", "6",
              "--json"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["train", "localizer", "--init-from", clf, "--out", loc,
                         "--epochs", "1", "--batch-size", "8", "--anchor-scales", "12,24",
                         "--anchor-ratios", "1", "--head-channels", "8"] + common) == 0
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli.main(["train", "localizer", "--stage", "rcnn", "--init-from", loc,
                         "--out", two, "--iterations", "2", "--batch-size", "16",
                         "--num-proposals", "6", "--warp-size", "16",
                         "--regions-per-image", "8"] + common) == 0
    r = json.loads(out.getvalue().strip().splitlines()[-1])
    assert r["model_dir"] == two and r["iterations"] == 2
    assert r["proposals"]["images"] == 16 and 0 <= r["proposals"]["recall"] <= 1
    return clf, loc, two


def test_the_two_stage_directory_and_its_evaluation(two_stage, capsys):
    clf, loc, two = two_stage
    meta = json.load(open(os.path.join(two, "resnet_tf.json")))
    assert meta["kind"] == "localizer" and meta["stage"] == "rcnn"
    assert meta["num_proposals"] == 6 and meta["config"]["warp_size"] == 16
    assert meta["stage1_source"] == os.path.abspath(loc)
    assert sorted(os.listdir(os.path.join(two, "stage1"))) == sorted(
        f for f in os.listdir(loc) if f in ("localizer.weights.h5", "resnet_tf.json",
                                            "mean_image.npy"))
    runs = {}
    for stage in ("rcnn", "rpn"):
        assert cli.main(["evaluate", "localizer", "--model", two, "--data", "synthetic",
                         "--synthetic-eval", "6", "--stage", stage, "--json"]) == 0
        runs[stage] = _last_json(capsys)
    assert runs["rcnn"]["stage"] == "rcnn" and runs["rcnn"]["num_proposals"] == 6
    assert runs["rpn"]["stage"] == "rpn" and runs["rpn"]["num_proposals"] is None
    # The first stage inside the two-stage directory is the first-stage directory.
    assert cli.main(["evaluate", "localizer", "--model", loc, "--data", "synthetic",
                     "--synthetic-eval", "6", "--json"]) == 0
    alone = _last_json(capsys)
    for key in ("top1_loc_error", "top5_loc_error", "oracle_loc_error", "top1_cls_error"):
        assert runs["rpn"][key] == alone[key]
    assert runs["rcnn"]["top1_cls_error"] == alone["top1_cls_error"]  # same guesses
    assert cli.main(["evaluate", "localizer", "--model", two, "--data", "synthetic",
                     "--synthetic-eval", "6", "--num-proposals", "3"]) == 0
    assert "RPN+R-CNN, 3 proposals per class" in capsys.readouterr().out
    # Wrong directories say what to do.
    assert cli.main(["evaluate", "localizer", "--model", loc, "--data", "synthetic",
                     "--stage", "rcnn"]) == 2
    assert "--stage rcnn --init-from" in capsys.readouterr().err
    assert cli.main(["train", "localizer", "--stage", "rcnn", "--data", "synthetic",
                     "--init-from", clf, "--out", str(os.path.dirname(two) + "/x")]) == 2
    assert "not a localizer" in capsys.readouterr().err


def test_predict_and_export_serve_both_stages(two_stage, capsys, tmp_path):
    from localization.data.sources import SyntheticLocSource
    from localization.evaluate import make_tester

    _, loc, two = two_stage
    img = sorted((shared_data("imagenet-val-loc") / "images").iterdir())[0]
    assert cli.main(["predict", "localizer", "--model", two, str(img), "--top-k", "3",
                     "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(rows[0]["predictions"]) == 3
    y0, x0, y1, x1 = rows[0]["predictions"][0]["box"]
    assert 0 <= y0 <= y1 <= rows[0]["height"] and 0 <= x0 <= x1 <= rows[0]["width"]

    base = str(tmp_path / "serving")
    assert cli.main(["export", "localizer", "--model", two, "--out", base, "--json"]) == 0
    export_dir = _last_json(capsys)["export"]
    info = json.load(open(os.path.join(export_dir, "assets.extra", export.EXPORT_INFO)))
    assert info["stage"] == "rcnn" and info["num_proposals"] == 6
    loaded = tf.saved_model.load(export_dir)
    images = SyntheticLocSource(1, 3, seed=5).split("eval").images
    tester, _ = make_tester(two)
    rpn, _ = make_tester(two, stage="rpn")
    differ = 0
    for image in images:
        out = loaded.signatures["serve_image_tensor"](images=tf.constant(image[None]))
        ref, first = tester(tf.constant(image)), rpn(tf.constant(image))
        np.testing.assert_array_equal(out["top_k_classes"][0], ref["classes"])
        np.testing.assert_allclose(out["top_k_box_scores"][0], ref["scores"], atol=1e-5)
        np.testing.assert_allclose(out["top_k_boxes"][0] * 32, ref["boxes"], atol=1e-3)
        differ += not np.allclose(ref["boxes"], first["boxes"], atol=1e-3)
    assert differ  # the second stage changed the answers the export serves
