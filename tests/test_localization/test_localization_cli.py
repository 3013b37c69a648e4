"""resnet-tf {train,evaluate,predict} localizer."""

import json
import os

from conftest import shared_data
from apps import cli


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_localizer_cli(tmp_path, capsys):
    from resnet_tf.train import train_classifier

    clf = str(tmp_path / "clf")
    train_classifier("synthetic", clf, model="resnet8", recipe="cifar", epochs=1,
                     batch_size=16, synthetic_train=32, synthetic_eval=8, verbose=0)
    out = str(tmp_path / "loc")
    assert cli.main(["train", "localizer", "--data", "synthetic", "--init-from", clf,
                     "--out", out, "--epochs", "1", "--batch-size", "8",
                     "--anchor-scales", "12,24", "--anchor-ratios", "1",
                     "--head-channels", "8", "--synthetic-train", "16",
                     "--synthetic-eval", "6", "--json"]) == 0
    r = _last_json(capsys)
    assert r["model_dir"] == out and r["data_report"]["images"] == 16
    meta = json.load(open(os.path.join(out, "resnet_tf.json")))
    assert meta["kind"] == "localizer" and meta["config"]["anchor_scales"] == [12.0, 24.0]
    assert cli.main(["evaluate", "localizer", "--model", out, "--data", "synthetic",
                     "--synthetic-eval", "6", "--json"]) == 0
    r = _last_json(capsys)
    assert r["images"] == 6 and 0 <= r["top5_loc_error"] <= r["top1_loc_error"] <= 1
    assert cli.main(["evaluate", "localizer", "--model", out, "--data", "synthetic",
                     "--synthetic-eval", "6", "--scales", "32,48", "--flip"]) == 0
    text = capsys.readouterr().out
    assert "scales [32, 48] + flips" in text and "oracle (ground-truth class)" in text

    img = sorted((shared_data("imagenet-val-loc") / "images").iterdir())[0]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    assert cli.main(["predict", "localizer", "--model", out, str(img), "--top-k", "3",
                     "--draw", str(tmp_path / "d.png"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(rows[0]["predictions"]) == 3 and os.path.exists(tmp_path / "d.png")
    y0, x0, y1, x1 = rows[0]["predictions"][0]["box"]
    assert 0 <= y0 <= y1 <= rows[0]["height"] and 0 <= x0 <= x1 <= rows[0]["width"]
    assert cli.main(["predict", "localizer", "--model", out, str(bad)]) == 1
    assert "error: not a readable" in capsys.readouterr().out
    assert cli.main(["evaluate", "localizer", "--model", str(tmp_path / "none"),
                     "--data", "synthetic"]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert cli.main(["train", "localizer", "--data", "ilsvrc-loc:" + str(tmp_path / "no"),
                     "--init-from", clf, "--out", str(tmp_path / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err
