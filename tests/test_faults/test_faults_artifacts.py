"""Saved artifacts reload, and the command line says only what happened.

- Every Keras object the three packages serialize is registered by
  ``import resnet_tf, detection, localization``; every artifact the train
  and export commands write loads in a fresh process that imports only
  those packages (``.keras`` files compiled, with their loss).
- A model directory records the precision policy its model was built
  under; loaders rebuild under it, and a mixed_bfloat16 classifier exports
  with bfloat16 convolutions.
- ``resnet-tf`` hides TensorFlow's C++ INFO/WARNING lines unless
  ``--verbose`` or the user's TF_CPP_MIN_LOG_LEVEL asks for them.
- The demo's serving step names a real photo only when it sent one.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import resnet_tf
from conftest import REPO
from apps import cli
from resnet_tf import model_dir

CPP_RECORD = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]\s]+:\d+\] ", re.M)
ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog()"


def fresh_env(**extra):
    """The environment of a fresh process as a user has it: no
    TF_CPP_MIN_LOG_LEVEL (conftest sets one for the tests' own process)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.update(extra)
    return env


def resnet_tf_command():
    script = pathlib.Path(sys.executable).with_name("resnet-tf")
    return [str(script)] if script.exists() else [sys.executable, "-m", "apps.cli"]


# --- the artifacts every command writes ----------------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Run the commands that write artifacts, at tiny sizes: a mixed_bfloat16
    classifier (2 iterations), a mixed_bfloat16 detector and a float32
    localizer (1 iteration each), and the export of each."""
    import keras

    root = tmp_path_factory.mktemp("artifacts")
    d = {k: str(root / k) for k in ("classifier", "detector", "localizer")}
    run = [
        ["train", "classifier", "--config", "cifar", "--model", "resnet8", "--width", "8",
         "--data", "synthetic", "--synthetic-train", "32", "--iterations", "2",
         "--batch-size", "16", "--precision", "mixed_bfloat16", "--out", d["classifier"]],
        ["train", "detector", "--data", "synthetic", "--depth", "18", "--width", "8",
         "--iterations", "1", "--batch-size", "2", "--shorter-side", "64",
         "--max-side", "64", "--anchor-scales", "16,32", "--roi-batch", "8",
         "--rpn-batch", "16", "--pooled-size", "4", "--synthetic-train", "2",
         "--synthetic-eval", "2", "--precision", "mixed_bfloat16", "--out", d["detector"]],
        ["train", "localizer", "--data", "synthetic", "--init-from", d["classifier"],
         "--iterations", "1", "--batch-size", "2", "--anchor-scales", "12,24",
         "--anchor-ratios", "1", "--head-channels", "8", "--synthetic-train", "2",
         "--synthetic-eval", "2", "--precision", "float32", "--out", d["localizer"]],
    ] + [["export", kind, "--model", d[kind], "--out", str(root / "serving" / kind)]
         for kind in d]
    for argv in run:
        keras.backend.clear_session()
        assert cli.main(argv + ["--json"]) == 0, argv
    keras.config.set_dtype_policy("float32")
    return root, d


LOAD_EVERYTHING = """
    import json, os, sys
    import numpy as np
    import keras, tensorflow as tf
    import resnet_tf, detection, localization

    registered = set(keras.saving.get_custom_objects())
    root = sys.argv[1]
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    report = {"keras": {}, "weights": {}, "saved_model": {}, "directories": {}}

    # 1. .keras files through Keras alone, compiled (the loss and metrics
    #    come back from the compile config): nothing imported but the packages.
    for path in [f for f in files if f.endswith(".keras")]:
        model = keras.saving.load_model(path)
        shape = [n or 32 for n in model.input_shape[1:]]  # (None, None, 3): any size
        out = np.asarray(model(np.zeros((1, *shape), "float32")))
        report["keras"][os.path.relpath(path, root)] = {
            "loss": type(model.loss).__module__ + "." + type(model.loss).__name__,
            "label_smoothing": model.loss.label_smoothing,
            "finite": bool(np.isfinite(out).all()), "shape": list(out.shape)}

    # 2. SavedModels through TensorFlow alone.
    jpeg = tf.io.encode_jpeg(tf.cast(tf.fill([40, 48, 3], 120), tf.uint8)).numpy()
    for path in [f for f in files if os.path.basename(f) == "saved_model.pb"]:
        fn = tf.saved_model.load(os.path.dirname(path)).signatures["serving_default"]
        out = fn(image_bytes=tf.constant([jpeg]))
        report["saved_model"][os.path.relpath(path, root)] = sorted(out)

    # 3. Model directories through their packages' loaders, and every weights
    #    file into the model its directory describes.
    from resnet_tf.model_dir import load_classifier, read_meta
    from detection.model_dir import load_detector
    from localization.model_dir import load_localizer

    loaders = {"classifier": lambda d: load_classifier(d).model,
               "detector": lambda d: load_detector(d)[0],
               "localizer": lambda d: load_localizer(d)[0]}
    dirs = sorted(os.path.dirname(f) for f in files
                  if os.path.basename(f) == "resnet_tf.json")
    for d in dirs:
        meta = read_meta(d)
        model = loaders[meta["kind"]](d)
        convs = [l for l in model._flatten_layers() if isinstance(l, keras.layers.Conv2D)]
        report["directories"][os.path.relpath(d, root)] = {
            "kind": meta["kind"], "recorded": meta.get("policy"),
            "model_policy": model.dtype_policy.name,
            "conv_compute": sorted({l.compute_dtype for l in convs})}
        for path in [f for f in files if f.endswith(".weights.h5")
                     and os.path.dirname(f) in (d, os.path.join(d, "checkpoints"))]:
            model.load_weights(path)
            report["weights"][os.path.relpath(path, root)] = meta["kind"]

    # 4. Importing every module of the packages registers nothing new.
    import importlib, pkgutil
    for package in (resnet_tf, detection, localization):
        for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(m.name)
    report["registered_later"] = sorted(set(keras.saving.get_custom_objects()) - registered)
    report["registered"] = sorted(registered)
    print(json.dumps(report))
"""


def test_every_artifact_reloads_in_a_fresh_process_with_only_the_package_imports(written):
    root, d = written
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(LOAD_EVERYTHING), str(root)],
                       capture_output=True, text=True, timeout=300, cwd=REPO,
                       env=fresh_env(TF_CPP_MIN_LOG_LEVEL="2"))
    assert r.returncode == 0, r.stderr[-4000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])

    # The walk found what the commands write (so nothing passes by being absent).
    assert set(report["keras"]) == {"classifier/model.keras",
                                    "classifier/checkpoints/best.keras",
                                    "classifier/checkpoints/last.keras"}
    for name, k in report["keras"].items():
        assert k["loss"] == "resnet_tf.losses.SparseCrossEntropy", name
        assert k["finite"] and k["shape"] == [1, 6], name
    assert set(report["weights"]) == {
        "detector/detector.weights.h5", "detector/checkpoints/last.weights.h5",
        "localizer/localizer.weights.h5", "localizer/checkpoints/last.weights.h5"}
    assert set(report["saved_model"]) == {f"serving/{k}/1/saved_model.pb" for k in d}
    assert "top_k_labels" in report["saved_model"]["serving/classifier/1/saved_model.pb"]
    # Importing every module of the packages afterwards registers nothing new.
    assert report["registered_later"] == [], \
        f"registered only when their module is imported: {report['registered_later']}"
    assert {"resnet_tf>ResNet", "resnet_tf>SparseCrossEntropy", "resnet_tf>FoldedBatchNorm",
            "detection>FasterRCNN", "localization>Localizer"} <= set(report["registered"])

    # Each directory records its policy, and its loader rebuilds under it.
    dirs = report["directories"]
    assert dirs["classifier"]["recorded"] == "mixed_bfloat16"
    assert dirs["detector"]["recorded"] == "mixed_bfloat16"
    assert dirs["localizer"]["recorded"] == "float32"
    for name, info in dirs.items():
        assert info["model_policy"] == info["recorded"], name
        assert info["conv_compute"] == (["bfloat16"] if info["recorded"] == "mixed_bfloat16"
                                        else ["float32"]), name
    # Served as recorded: the mixed_bfloat16 classifier with bfloat16 weights
    # (folded and frozen into its convolutions), the float32 localizer in float32.
    assert serving_conv_dtypes(root / "serving" / "classifier" / "1") == {"bfloat16"}
    assert serving_conv_dtypes(root / "serving" / "localizer" / "1") == {"float32"}


# --- the precision policy ----------------------------------------------------------------


def serving_conv_dtypes(export_dir):
    """The dtypes (``T``) of every convolution in a SavedModel's graph and its
    functions (the weights are frozen into them as constants)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import dtypes

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((pathlib.Path(export_dir) / "saved_model.pb").read_bytes())
    graph = sm.meta_graphs[0].graph_def
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    convs = [n for n in nodes if "Conv2D" in n.op]
    assert convs, "no convolution in the export"
    return {dtypes.as_dtype(n.attr["T"].type).name for n in convs}


@pytest.mark.parametrize("policy,served", [("float32", "float32"),
                                           ("mixed_bfloat16", "bfloat16")])
def test_policy_is_recorded_honoured_on_reload_and_on_export(tmp_path, policy, served):
    import keras

    from resnet_tf import export
    from resnet_tf.data.preprocessing import Preprocessing
    from resnet_tf.precision import policy_scope

    with policy_scope(policy):
        model = resnet_tf.ResNet(8, width=8, classes=3, input_shape=(32, 32, 3))
    prep = Preprocessing.for_style("cifar")
    directory = str(tmp_path / "m")
    model_dir.save_classifier(directory, model, ["a", "b", "c"], None, prep)
    assert model_dir.read_meta(directory)["policy"] == policy
    keras.backend.clear_session()

    clf = model_dir.load_classifier(directory)
    assert keras.config.dtype_policy().name == "float32"  # the global one is restored
    assert clf.policy == policy and clf.model.dtype_policy.name == policy
    compute = "bfloat16" if policy == "mixed_bfloat16" else "float32"
    assert clf.model.get_layer("conv1_conv").compute_dtype == compute
    assert clf.model.get_layer("predictions").compute_dtype == "float32"
    path = export.export_classifier(directory, str(tmp_path / "serving"))
    assert serving_conv_dtypes(path) == {served}


def test_directories_without_a_policy_field_and_bad_policies(tmp_path):
    directory = str(tmp_path)
    # Written before "policy" existed: the training options still say it.
    assert model_dir.recorded_policy(directory, {"training": {"policy": "mixed_bfloat16"}}) \
        == "mixed_bfloat16"
    assert model_dir.recorded_policy(directory, {}) == "float32"  # e.g. an import
    with pytest.raises(ValueError, match=r"resnet_tf\.json: unknown precision policy "
                                         r"'bfloat8'.*float32, mixed_bfloat16"):
        model_dir.recorded_policy(directory, {"policy": "bfloat8"})


# --- TensorFlow's C++ log lines ------------------------------------------------------------


def cpp_noise(stderr):
    return CPP_RECORD.findall(stderr) + ([ABSL_PREINIT] if ABSL_PREINIT in stderr else [])


def test_cli_hides_tensorflow_cpp_logs_unless_asked(written, tmp_path):
    from PIL import Image

    _, d = written
    img = str(tmp_path / "x.jpg")
    Image.fromarray(np.full((40, 48, 3), 100, np.uint8)).save(img)
    cmd = resnet_tf_command() + ["predict", "classifier", "--model", d["classifier"], img,
                                 "--json"]

    def run(argv, **env):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=REPO,
                           env=fresh_env(**env))
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    quiet = run(cmd)
    assert cpp_noise(quiet.stderr) == [], quiet.stderr
    # The same work with --verbose shows TensorFlow's lines, at import time
    # (oneDNN's banner ignores TF_CPP_MIN_LOG_LEVEL) and later (grappler's).
    loud = run(cmd[:len(resnet_tf_command())] + ["--verbose"] + cmd[len(resnet_tf_command()):])
    assert ABSL_PREINIT in loud.stderr and "port.cc" in loud.stderr, loud.stderr
    assert "single_machine.cc" in loud.stderr, loud.stderr
    assert json.loads(quiet.stdout) == json.loads(loud.stdout)
    # The user's own setting is respected (here through `python -m apps.cli`).
    user = run([sys.executable, "-m", "apps.cli", "models", "resnet8", "--json"],
               TF_CPP_MIN_LOG_LEVEL="0")
    assert ABSL_PREINIT in user.stderr and CPP_RECORD.search(user.stderr), user.stderr
    assert "resnet8" in user.stdout


def test_which_processes_are_the_cli_and_at_what_level():
    py = "/venv/bin/python"
    assert resnet_tf._cli_arguments([py, "/venv/bin/resnet-tf", "models", "-x"]) \
        == ["models", "-x"]
    assert resnet_tf._cli_arguments([py, "-u", "-X", "dev", "-m", "apps.cli", "demo"]) \
        == ["demo"]
    for other in ([py, "-m", "pytest", "tests"], [py, "-c", "import resnet_tf"],
                  [py, "notebook.py", "resnet-tf"], [py], [py, "-m", "apps.clix"]):
        assert resnet_tf._cli_arguments(other) is None, other
    assert resnet_tf._tf_log_level(["models"], {}) == (3, True)
    assert resnet_tf._tf_log_level(["--verbose", "models"], {}) == (0, True)
    assert resnet_tf._tf_log_level(["--verbose", "models"], {"TF_CPP_MIN_LOG_LEVEL": "3"}) \
        == (0, True)
    assert resnet_tf._tf_log_level(["models"], {"TF_CPP_MIN_LOG_LEVEL": "0"}) == (0, False)
    assert resnet_tf._tf_log_level(["models"], {"TF_CPP_MIN_LOG_LEVEL": "1"}) == (1, False)
    # After "--", --verbose is an argument (a file name), not the flag.
    assert resnet_tf._tf_log_level(["predict", "--", "--verbose"], {}) == (3, True)


def test_filter_keeps_errors_and_everything_that_is_not_a_hidden_record():
    captured = (
        f"{ABSL_PREINIT} is called are written to STDERR\n"
        "I0000 00:00:1796017015.557271   10207 port.cc:153] oneDNN custom operations are on.\n"
        "W0000 00:00:1796017015.6   10207 op_level_cost_estimator.cc:699] Error in "
        "PredictCost() for the op\n"
        "    attr { key: \"T\" }\n"
        "E0000 00:00:1796017015.7   10207 util.cc:131] a real error\n"
        "  its detail\n"
        "2023-08-29 12:35:30.891928: I tensorflow/core/util/port.cc:110] old format\n"
        "/x/numpy/__init__.py:1: UserWarning: Python's own warning\n")
    kept = resnet_tf._filter_cpp_log(captured, 2)
    assert kept == ("E0000 00:00:1796017015.7   10207 util.cc:131] a real error\n"
                    "  its detail\n"
                    "/x/numpy/__init__.py:1: UserWarning: Python's own warning\n")
    assert resnet_tf._filter_cpp_log(captured, 0) == captured
    assert "op_level_cost_estimator" in resnet_tf._filter_cpp_log(captured, 1)
    assert "port.cc" not in resnet_tf._filter_cpp_log(captured, 1)


# --- the demo's serving step ---------------------------------------------------------------


def test_demo_serving_step_names_a_real_photo_only_when_it_sent_one(written, tmp_path,
                                                                      monkeypatch):
    from PIL import Image

    from apps.demo import export_and_serve, serving_report
    from resnet_tf.data.sources import open_source

    _, d = written
    data = {"sources": {"classifier": open_source("synthetic", synthetic_train=8,
                                                  synthetic_eval=4)}}
    models = {"classifier": {"directory": d["classifier"]}}

    empty = tmp_path / "no-photos"
    empty.mkdir()
    monkeypatch.setenv("RESNET_TF_DATA", str(empty))
    out = tmp_path / "without"
    (out / "images").mkdir(parents=True)
    serving, notes = export_and_serve(str(out), data, models, verbose=0)
    r = serving["classifier"]
    synthetic = str(out / "images" / "serving_classifier.jpg")
    assert r["files"] == [synthetic] and r["real_photo"] is None and r["real"] is None
    assert all(shape[0] == 1 for shape in r["outputs"].values())
    lines = serving_report(serving, notes)
    assert not any(line.strip().startswith("real photo") for line in lines), lines
    assert any(line.strip().startswith(f"synthetic {synthetic}:") for line in lines)
    assert lines[-1] == (f"  NOTE: classifier: no real photo found (no JPEG in its photo "
                         f"folders under {empty}); called on the synthetic JPEG only")

    photos = tmp_path / "photos" / "hymenoptera" / "hymenoptera_data" / "val" / "ants"
    photos.mkdir(parents=True)
    Image.fromarray(np.full((50, 60, 3), 90, np.uint8)).save(photos / "ant.jpg")
    monkeypatch.setenv("RESNET_TF_DATA", str(tmp_path / "photos"))
    out = tmp_path / "with"
    (out / "images").mkdir(parents=True)
    serving, notes = export_and_serve(str(out), data, models, verbose=0)
    r = serving["classifier"]
    assert r["real_photo"] == str(photos / "ant.jpg") and notes == []
    assert r["files"] == [r["real_photo"], str(out / "images" / "serving_classifier.jpg")]
    assert r["real"] and all(shape[0] == 2 for shape in r["outputs"].values())
    assert f"real photo {photos / 'ant.jpg'}: {r['real']}" in serving_report(serving, notes)[1]
