"""resnet-tf train / evaluate / predict classifier."""

import json

from conftest import shared_data
from apps import cli


def test_train_evaluate_predict_round_trip(tmp_path, capsys):
    out = str(tmp_path / "m")
    assert cli.main(["train", "classifier", "--config", "cifar", "--model", "resnet8",
                     "--data", "synthetic", "--synthetic-train", "128", "--epochs", "1",
                     "--batch-size", "32", "--width", "8", "--out", out, "--json"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["model_dir"] == out and trained["epochs"] == 1
    meta = json.load(open(f"{out}/resnet_tf.json"))
    assert meta["architecture"]["width"] == 8 and meta["architecture"]["name"] == "resnet8_w8"

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


def test_inference_function_is_one_compiled_graph_per_model():
    """Evaluation loops run the model as a traced graph (not op by op), in
    inference mode, traced once per model and input signature."""
    import numpy as np

    from resnet_tf import build
    from resnet_tf.evaluate import inference_function

    model = build("resnet8", classes=4)
    run = inference_function(model)
    assert run is inference_function(model) and hasattr(run, "get_concrete_function")
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(run(x), model(x, training=False), atol=1e-5)
    run(x[:1] + 1.0)
    run(x + 2.0)  # the same signature as the first call: no new trace
    assert run.experimental_get_tracing_count() <= 2
    assert inference_function(build("resnet8", classes=4)) is not run
