"""resnet-tf train / evaluate / predict classifier."""

import json

from conftest import shared_data
from resnet_tf import cli


def test_train_evaluate_predict_round_trip(tmp_path, capsys):
    out = str(tmp_path / "m")
    assert cli.main(["train", "classifier", "--config", "cifar", "--model", "resnet8",
                     "--data", "synthetic", "--synthetic-train", "128", "--epochs", "1",
                     "--batch-size", "32", "--out", out, "--json"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["model_dir"] == out and trained["epochs"] == 1

    for crops in ("center", "10", "multiscale"):
        assert cli.main(["evaluate", "classifier", "--model", out, "--data", "synthetic",
                         "--crops", crops, "--max-images", "24", "--json"]) == 0
        r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert r["crops"] == crops and r["images"] == 24
        assert 0 <= r["top1_error"] <= 1 and 0 <= r["top5_error"] <= r["top1_error"]

    img = next((shared_data("hymenoptera/hymenoptera_data") / "val" / "ants").iterdir())
    assert cli.main(["predict", "classifier", "--model", out, str(img), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in rows[0]["predictions"]][0] in (
        "circle", "square", "triangle", "cross", "ring", "diamond")
    assert cli.main(["predict", "classifier", "--model", out, str(img)]) == 0
    assert "%" in capsys.readouterr().out


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    assert cli.main(["evaluate", "classifier", "--model", str(tmp_path / "none"),
                     "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "no such model directory" in err and "Traceback" not in err
    assert cli.main(["train", "classifier", "--data", "folder:/no/such/place",
                     "--out", str(tmp_path / "x")]) == 2
    assert "/no/such/place: not a folder" in capsys.readouterr().err
