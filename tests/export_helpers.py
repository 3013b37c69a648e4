"""Shared helpers of the export tests (classifier, detector, localizer,
requests): a tiny classifier directory, real JPEGs, the Keras reference
outputs, a fresh-process reload, the core-ops check and TF Serving's C++
loader."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import SESSION_DIRS, shared_data
from resnet_tf import serving
from resnet_tf.data.preprocessing import Preprocessing
from resnet_tf.evaluate import predict_files

CLASSES = ["circle", "square", "triangle", "cross", "ring", "diamond"]
PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def calibrate_bn(layer_fn, x, steps=12):
    """Run ``layer_fn(x, training=True)`` so BN moving statistics follow the
    data: an untrained net's default statistics saturate its softmax, which
    would make output comparisons trivially equal."""
    for _ in range(steps):
        layer_fn(x, training=True)


def make_classifier_dir(directory, policy="float32", seed=0):
    """A small real classifier directory: ResNet-18, 6 classes, ImageNet-style
    evaluation view (shorter side 72, centre 64 crop), a mean image."""
    import keras

    import resnet_tf
    from resnet_tf import model_dir

    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(seed)
        model = resnet_tf.ResNet(18, classes=len(CLASSES), input_shape=(None, None, 3))
        rng = np.random.default_rng(seed)
        calibrate_bn(model, rng.normal(0, 60, (8, 64, 64, 3)).astype("float32"))
        prep = Preprocessing.for_style("imagenet", crop_size=64, eval_resize=72,
                                       scale_range=(72, 96))
        mean = rng.uniform(90, 140, (64, 64, 3)).astype("float32")
        model_dir.save_classifier(directory, model, CLASSES, mean, prep)
    finally:
        keras.config.set_dtype_policy("float32")
    return str(directory)


def real_jpegs(n=4):
    root = shared_data("hymenoptera/hymenoptera_data") / "val"
    files = sorted((root / "ants").glob("*.jpg"))[:n // 2] + sorted(
        (root / "bees").glob("*.jpg"))[:n - n // 2]
    return [str(f) for f in files]


def keras_probabilities(model_dir_path, files):
    """In-process reference: ``predict_files`` (decode, eval view, Keras model)."""
    rows = predict_files(model_dir_path, files, top=len(CLASSES))
    probs = np.zeros((len(rows), len(CLASSES)), np.float32)
    for i, row in enumerate(rows):
        assert "error" not in row, row
        for p in row["predictions"]:
            probs[i, p["class"]] = p["probability"]
    return probs


def keras_probabilities_from_arrays(model_dir_path, images):
    """In-process reference for ``serve_image_tensor``: uint8 [N, H, W, 3]."""
    from resnet_tf import model_dir

    clf = model_dir.load_classifier(model_dir_path)
    x = tf.stack([clf.preprocessing.eval_view(tf.constant(im), tf.constant(clf.mean_image))
                  for im in images])
    return np.asarray(clf.model(x, training=False), np.float32)


def decoded(files):
    """uint8 [N, H, W, 3]: the files decoded (PIL-exact, like the pipeline)
    and cut to their common top-left size, for ``serve_image_tensor``."""
    from resnet_tf.data.decode import decode_image

    arrays = [decode_image(tf.io.read_file(f), tf.constant(f))[0].numpy() for f in files]
    h = min(a.shape[0] for a in arrays)
    w = min(a.shape[1] for a in arrays)
    return np.stack([a[:h, :w] for a in arrays])


def assert_classifier_outputs(out, probs, atol, exact_dtypes=True):
    """Named outputs of the classifier signatures against reference probs
    (``exact_dtypes=False`` for JSON responses, which carry no dtypes)."""
    assert set(out) == {"probabilities", "top_k_classes", "top_k_scores", "top_k_labels"}
    np.testing.assert_allclose(out["probabilities"], probs, atol=atol)
    assert out["top_k_classes"].shape == (len(probs), 5)
    if exact_dtypes:
        assert out["top_k_classes"].dtype == np.int32
        assert out["probabilities"].dtype == out["top_k_scores"].dtype == np.float32
    np.testing.assert_allclose(out["top_k_scores"],
                               np.take_along_axis(probs, out["top_k_classes"], 1), atol=atol)
    order = np.sort(probs, axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(out["top_k_scores"], order, atol=atol)
    labels = [[v.decode() if isinstance(v, bytes) else v for v in row]
              for row in out["top_k_labels"]]
    assert labels == [[CLASSES[c] for c in row] for row in out["top_k_classes"]]


FRESH_PROCESS = r"""
import json, sys
import numpy as np
import tensorflow as tf

args = json.loads(sys.argv[1])
loaded = tf.saved_model.load(args["export"])
result = {"signatures": sorted(loaded.signatures)}
arrays = {}
by_bytes = loaded.signatures["serving_default"](
    image_bytes=tf.constant([open(f, "rb").read() for f in args["files"]]))
by_tensor = loaded.signatures["serve_image_tensor"](images=tf.constant(np.load(args["images"])))
for prefix, out in (("bytes", by_bytes), ("tensor", by_tensor)):
    for k, v in out.items():
        arrays[f"{prefix}/{k}"] = v.numpy()
np.savez(args["out"], **arrays)
print(json.dumps(result))
"""

OP_WALK = r"""
import json, sys
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

sm = saved_model_pb2.SavedModel()
with open(sys.argv[1] + "/saved_model.pb", "rb") as f:
    sm.ParseFromString(f.read())
ops = set()
functions = set()
for mg in sm.meta_graphs:
    graph = mg.graph_def
    functions |= {fn.signature.name for fn in graph.library.function}
    ops |= {n.op for n in graph.node}
    for fn in graph.library.function:  # loop and cond bodies live here
        ops |= {n.op for n in fn.node_def}
ops -= functions  # calls of library functions
print(json.dumps({"ops": sorted(ops),
                  "unregistered": sorted(o for o in ops if op_def_registry.get(o) is None)}))
"""


def fresh_python(script, *args):
    """Run ``script`` in a new interpreter that imports only TensorFlow."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fresh_process_outputs(export_dir, files, images, tmp_path):
    np.save(tmp_path / "images.npy", images)
    info = fresh_python(FRESH_PROCESS, json.dumps({
        "export": export_dir, "files": files, "images": str(tmp_path / "images.npy"),
        "out": str(tmp_path / "out.npz")}))
    assert info["signatures"] == ["serve_image_tensor", "serving_default"]
    with np.load(tmp_path / "out.npz", allow_pickle=True) as z:
        arrays = dict(z)
    split = {"bytes": {}, "tensor": {}}
    for key, value in arrays.items():
        prefix, name = key.split("/")
        split[prefix][name] = value
    return split["bytes"], split["tensor"]


def assert_core_ops_only(export_dir, expected):
    walk = fresh_python(OP_WALK, export_dir)
    assert walk["unregistered"] == [], walk["unregistered"]
    assert not PYTHON_OPS & set(walk["ops"])
    # The walk reaches into function bodies: decoding runs inside map_fn's loop.
    assert set(expected) <= set(walk["ops"]), set(expected) - set(walk["ops"])
    return walk["ops"]


def build_loader_once(tmp_path_factory):
    """The C++ loader, built once per ``make test`` (~15 s of g++): in the
    run's shared temporary folder when pytest-xdist workers run the suite
    (the workers' own folders are inside it), the first worker building
    while the others wait on a lock file."""
    import fcntl

    if serving.compiler() is None:
        pytest.skip("no C++ compiler (g++) to build TF Serving's loader check")
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    else:  # in this process's own folder: kept for the session
        SESSION_DIRS.update({"serving-loader", "serving-loader.lock"})
    with open(base / "serving-loader.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return serving.build_loader(str(base / "serving-loader"))
