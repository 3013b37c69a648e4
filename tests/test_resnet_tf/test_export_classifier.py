"""resnet-tf export classifier: the SavedModel serves, in a fresh process,
through saved_model_cli and through TF Serving's own C++ loader, and equals
the in-process Keras model on real JPEGs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from apps import cli
from export_helpers import (CLASSES, assert_classifier_outputs, assert_core_ops_only,
                            build_loader_once, decoded, fresh_process_outputs,
                            keras_probabilities, keras_probabilities_from_arrays,
                            make_classifier_dir, real_jpegs)
from resnet_tf import export, serving

@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """(model directory, export path) of a float32 classifier."""
    root = tmp_path_factory.mktemp("classifier")
    directory = make_classifier_dir(root / "model")
    return directory, export.export_classifier(directory, str(root / "serving"))


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    return build_loader_once(tmp_path_factory)


def test_fresh_process_reload_matches_keras(classifier, tmp_path):
    directory, export_dir = classifier
    assert export_dir.endswith(os.path.join("serving", "1"))
    files = real_jpegs(4)
    images = decoded(files)
    by_bytes, by_tensor = fresh_process_outputs(export_dir, files, images, tmp_path)
    probs = keras_probabilities(directory, files)
    assert probs.max(axis=1).min() < 0.99  # not saturated: the check can fail
    assert_classifier_outputs(by_bytes, probs, atol=1e-5)
    assert_classifier_outputs(by_tensor, keras_probabilities_from_arrays(directory, images),
                              atol=1e-5)


def test_graph_has_only_core_tensorflow_ops(classifier):
    ops = assert_core_ops_only(classifier[1], {"DecodeJpeg", "Conv2D", "TopKV2", "Assert"})
    # Weights frozen into constants (resnet_tf.fold.freeze): no variable ops,
    # and no batch norm left (folded into the convolutions).
    assert not {"VarHandleOp", "ReadVariableOp", "DisableCopyOnRead"} & set(ops), ops
    assert not {"FusedBatchNormV3", "FusedBatchNorm"} & set(ops), ops


def test_saved_model_cli_run(classifier, tmp_path):
    directory, export_dir = classifier
    files = real_jpegs(3)
    np.save(tmp_path / "in.npy", np.array([open(f, "rb").read() for f in files], object),
            allow_pickle=True)
    proc = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run",
         "--dir", export_dir, "--tag_set", "serve", "--signature_def", "serving_default",
         "--inputs", f"image_bytes={tmp_path / 'in.npy'}", "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {k: np.load(tmp_path / "out" / f"{k}.npy", allow_pickle=True)
           for k in ("probabilities", "top_k_classes", "top_k_scores", "top_k_labels")}
    assert_classifier_outputs(out, keras_probabilities(directory, files), atol=1e-5)


@pytest.mark.slow
def test_tf_serving_cpp_loader_matches_python(classifier, loader, tmp_path):
    directory, export_dir = classifier
    files = real_jpegs(3)
    out = serving.run_loader(loader, export_dir, files)
    assert_classifier_outputs(out, keras_probabilities(directory, files), atol=1e-5)
    # Bad bytes come back as TF's InvalidArgument, not a crash of the process.
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(open(files[0], "rb").read()[:2000])
    with pytest.raises(serving.LoaderError, match=r"INVALID_ARGUMENT.*image_bytes\[1\]: "
                       "truncated JPEG"):
        serving.run_loader(loader, export_dir, [files[0], bad])


def test_cli_export_versions_and_errors(classifier, tmp_path, capsys):
    directory, _ = classifier
    base = str(tmp_path / "base")
    for version in (1, 2):
        assert cli.main(["export", "classifier", "--model", directory, "--out", base,
                         "--json"]) == 0
        r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert r["version"] == version and os.path.isfile(
            os.path.join(base, str(version), "saved_model.pb"))
    info = json.load(open(os.path.join(base, "2", "assets.extra", export.EXPORT_INFO)))
    assert info["kind"] == "classifier" and info["class_names"] == CLASSES
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temporary folder left behind
    assert cli.main(["export", "classifier", "--model", directory, "--out", base,
                     "--version", "2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["export", "detector", "--model", directory, "--out", base]) == 2
    assert "holds a classifier, not a detector" in capsys.readouterr().err
    assert cli.main(["export", "classifier", "--model", str(tmp_path / "none"),
                     "--out", base]) == 2
    assert "no such model directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="positive integer"):
        export.export_classifier(directory, base, version=0)


@pytest.mark.slow
def test_mixed_bfloat16_export(tmp_path):
    directory = make_classifier_dir(tmp_path / "model", policy="mixed_bfloat16")
    export_dir = export.export_classifier(directory, str(tmp_path / "serving"))
    files = real_jpegs(4)
    images = decoded(files)
    # The directory records mixed_bfloat16, so the export computes with
    # bfloat16 weights folded into its convolutions (resnet_tf.fold).
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    graph = sm.meta_graphs[0].graph_def
    convs = [n for n in list(graph.node) + [n for fn in graph.library.function
                                            for n in fn.node_def] if "Conv2D" in n.op]
    assert convs and {tf.as_dtype(n.attr["T"].type) for n in convs} == {tf.bfloat16}
    by_bytes, by_tensor = fresh_process_outputs(export_dir, files, images, tmp_path)
    # Two bfloat16 computations (8-bit mantissas, rounded at different places:
    # folded and fused in the export, cast per layer in Keras) of this
    # ResNet-18's probabilities differed by up to 0.019 (bytes vs predict) and
    # 0.030 (tensor vs the Keras model); float32 agrees within 1e-5.
    assert_classifier_outputs(by_bytes, keras_probabilities(directory, files), atol=5e-2)
    assert_classifier_outputs(by_tensor, keras_probabilities_from_arrays(directory, images),
                              atol=5e-2)
