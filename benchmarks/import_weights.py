"""Importing ImageNet ResNet weights from other frameworks (``resnet-tf import
classifier``): import time against each framework's own load of the same
file, and the largest output difference against the source on real images.

    .venv/bin/python benchmarks/import_weights.py                 # everything
    .venv/bin/python benchmarks/import_weights.py --skip keras-applications:152
    .venv/bin/python benchmarks/import_weights.py --sources torchvision \\
        --depths 18 --images 2 --repeats 1                        # smoke run

Source files are made first, in a temporary folder, in each framework's real
format, with random weights and BN statistics of the real images (one
training-mode pass over the image set, as tests/test_resnet_tf/test_weights_import.py
does); nothing is downloaded:

- keras-applications ResNet-50/101/152: Keras 2 HDF5 weights written by
  tf_keras (the format keras.applications downloads);
- torchvision ResNet-18/34/50/101/152: ``torch.save`` of the state dict
  (``.pth``), made by tests/torch_source.py in a process without TensorFlow;
- timm resnet50: ``model.safetensors`` with a hub-style ``config.json``;
- keras-hub ResNet-50: a ``ResNetImageClassifier.save_to_preset`` folder
  (if keras_hub is installed).

What is measured, per source file:

1. **Import time**: ``resnet_tf.weights.import_classifier(source, file,
   out)``, i.e. read the file + fold the source's input normalisation into
   conv1 + build the resnet-tf network and assign the weights + write the
   classifier directory (``model.keras``, mean image, ``resnet_tf.json``).
   Against it, the peer: **the source framework loading the same file into
   its own model** (model built with random init, then the file read into
   it):
   keras.applications ``ResNetXX(weights=None)`` + ``load_weights(file)``;
   torchvision ``resnetXX(weights=None)`` + ``torch.load`` +
   ``load_state_dict``; timm ``create_model`` + ``safetensors`` load +
   ``load_state_dict``; keras-hub ``ImageClassifier.from_preset(folder)``.
   The two do different work (ours also writes a directory); the ratio says
   what one-off import costs against a plain load. Each timing runs in a
   fresh process, ours and the peer alternating, repetition by repetition;
   only the call is timed: the interpreter, TensorFlow/torch/keras_hub and
   the reader modules are imported before the clock starts. Median of
   ``--repeats``.
2. **Output difference**: the source model's logits on its own
   preprocessing of the image view ``predict`` uses
   (``Preprocessing.for_style("imagenet").mean_view``: shorter side 256,
   centre 224) against ``resnet_tf.evaluate.predict_files`` on the imported
   directory (softmax switched off, so logits are compared), over the real
   JPEGs: max |diff| / max |source logit|, max |diff|, and top-1 agreement.

Images: the 100 of imagenet-val-loc/images and the 156 hymenoptera val images
(ants, bees), ``--images N`` of them (default 40), half from each
folder, evenly spaced in sorted order; ``--images 0`` takes all 256.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The source-model builders the import tests use (BN statistics of real images).
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import _harness  # noqa: E402
from weight_sources import calibrate_batch_norms  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("RESNET_TF_DATA") or os.path.join(os.path.dirname(REPO), "shared",
                                                          "data")
SOURCES = ("keras-applications", "torchvision", "timm", "keras-hub")
DEPTHS = {"keras-applications": (50, 101, 152), "torchvision": (18, 34, 50, 101, 152),
          "timm": (50,), "keras-hub": (50,)}
PEER = {"keras-applications": "keras.applications ResNetXX(weights=None) + load_weights",
        "torchvision": "torchvision resnetXX(weights=None) + torch.load + load_state_dict",
        "timm": "timm.create_model + safetensors load + load_state_dict",
        "keras-hub": "keras_hub ImageClassifier.from_preset(folder)"}
# keras-hub's ImageNet presets are converted from timm: timm's normalisation.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --- the image set -------------------------------------------------------------


def image_paths(n):
    """``n`` real JPEGs (0: all), half from each folder, evenly spaced."""
    import numpy as np

    loc = os.path.join(DATA, "imagenet-val-loc", "images")
    hym = os.path.join(DATA, "hymenoptera", "hymenoptera_data", "val")
    a = sorted(os.path.join(loc, f) for f in os.listdir(loc))
    b = sorted(os.path.join(hym, c, f) for c in ("ants", "bees")
               for f in os.listdir(os.path.join(hym, c)))
    if n <= 0 or n >= len(a) + len(b):
        return a + b

    def spaced(items, k):
        k = min(k, len(items))
        return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, k).round()
                                            .astype(int))] if k else []

    na = min(len(a), (n + 1) // 2)
    return spaced(a, na) + spaced(b, n - na)


def real_pixels(paths):
    """float32 [N, 224, 224, 3]: the view ``predict`` feeds, before the mean
    is subtracted (as the test helpers make it)."""
    import numpy as np

    from resnet_tf.data.decode import read_image_file
    from resnet_tf.data.preprocessing import Preprocessing

    prep = Preprocessing.for_style("imagenet")
    views = []
    for p in paths:
        image, error = read_image_file(p)
        if error:
            raise RuntimeError(f"{p}: {error}")
        views.append(np.asarray(prep.mean_view(image), np.float32))
    return np.stack(views)


# --- making the source files (children) ----------------------------------------


def make_keras_applications(depth, pixels, path, seed=0):
    """keras.applications ResNetXX, random weights, BN statistics of
    ``pixels`` under its caffe preprocessing; Keras 2 .h5 weights written by
    tf_keras; returns the logits (the tests' ``keras_source``)."""
    import numpy as np

    import keras
    import tf_keras

    keras.utils.set_random_seed(seed)
    src = getattr(keras.applications, f"ResNet{depth}")(
        weights=None, classifier_activation=None, input_shape=(224, 224, 3))
    x = keras.applications.resnet.preprocess_input(pixels.copy())
    calibrate_batch_norms(src, lambda: src(x, training=True), seed)
    logits = np.asarray(src.predict(x, batch_size=8, verbose=0))
    k2 = getattr(tf_keras.applications, f"ResNet{depth}")(weights=None,
                                                        input_shape=(224, 224, 3))
    for layer in k2.layers:
        if layer.weights:
            layer.set_weights(src.get_layer(layer.name).get_weights())
    k2.save_weights(path)
    return logits


def make_keras_hub(depth, pixels, folder, seed=0):
    """A keras-hub ResNetImageClassifier (1000 classes, logits), random
    weights, BN statistics of ``pixels`` under its image converter, saved
    with ``save_to_preset`` (tests/test_resnet_tf/test_weights_keras_hub.py's
    ``make_classifier``)."""
    import numpy as np

    import keras
    import keras_hub

    from resnet_tf.zoo import IMAGENET_STAGES

    keras.utils.set_random_seed(seed)
    kind, counts = IMAGENET_STAGES[depth]
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=list(counts),
        stackwise_num_strides=[1, 2, 2, 2], block_type=f"{kind}_block",
        use_pre_activation=False)
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(224, 224), scale=[1 / 255 / s for s in STD],
        offset=[-m / s for m, s in zip(MEAN, STD)])
    clf = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=1000, activation=None,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(
            image_converter=converter))
    x = np.asarray(converter(pixels))
    rng = calibrate_batch_norms(backbone, lambda: backbone(x, training=True), seed)
    head = clf.get_layer("predictions")
    head.bias.assign(rng.normal(0, 0.1, 1000).astype("float32"))
    logits = np.concatenate([np.asarray(clf(x[i:i + 8], training=False))
                             for i in range(0, len(x), 8)])
    clf.save_to_preset(folder)
    return logits


def child_make(args):
    import numpy as np

    pixels = np.load(args.pixels)
    if args.source == "keras-applications":
        logits = make_keras_applications(args.depth, pixels, args.file)
    else:
        logits = make_keras_hub(args.depth, pixels, args.file)
    np.save(args.logits, logits)
    print(json.dumps({"value": 0, "unit": "s"}))


# --- the timed calls (children) --------------------------------------------------


def child_ours(args):
    """``import_classifier`` timed alone, every module it needs imported."""
    import h5py  # noqa: F401

    import keras  # noqa: F401

    import resnet_tf.backbone  # noqa: F401
    import resnet_tf.data.preprocessing  # noqa: F401
    import resnet_tf.model_dir  # noqa: F401
    from resnet_tf.weights import import_classifier

    if args.source in ("torchvision", "timm"):
        import safetensors.numpy  # noqa: F401
        import torch  # noqa: F401

        import resnet_tf.weights.torch_files  # noqa: F401
    elif args.source == "keras-hub":
        import keras_hub  # noqa: F401

        import resnet_tf.weights.keras_hub  # noqa: F401
    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    import_classifier(args.source, args.file, args.out)
    seconds = time.perf_counter() - t0
    print(json.dumps({"value": seconds, "unit": "s", "bytes": _size(args.out)}))


def child_peer(args):
    """The source framework loading the file into its own model, timed alone.
    No TensorFlow in the torchvision/timm processes (it must not be)."""
    d = args.depth
    if args.source == "keras-applications":
        import keras

        t0 = time.perf_counter()
        model = getattr(keras.applications, f"ResNet{d}")(weights=None)
        model.load_weights(args.file)
    elif args.source == "torchvision":
        import torch
        import torchvision

        t0 = time.perf_counter()
        model = getattr(torchvision.models, f"resnet{d}")(weights=None)
        model.load_state_dict(torch.load(args.file, map_location="cpu", weights_only=True))
    elif args.source == "timm":
        import timm
        import torch  # noqa: F401
        from safetensors.torch import load_file

        t0 = time.perf_counter()
        model = timm.create_model(f"resnet{d}", pretrained=False)
        model.load_state_dict(load_file(args.file))
    else:
        import keras_hub

        t0 = time.perf_counter()
        model = keras_hub.models.ImageClassifier.from_preset(args.file)
    seconds = time.perf_counter() - t0
    assert model is not None
    print(json.dumps({"value": seconds, "unit": "s"}))


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


# --- the comparison (parent, after the timings) -----------------------------------


def imported_logits(directory, paths):
    """``predict_files`` on the imported directory with the top's softmax
    switched off (tests/test_resnet_tf/test_weights_import.py's ``imported_logits``)."""
    import numpy as np

    import keras

    from resnet_tf import model_dir
    from resnet_tf.evaluate import predict_files

    clf = model_dir.load_classifier(directory)
    clf.model.get_layer("predictions").activation = keras.activations.linear
    n = len(clf.class_names)
    out = np.zeros((len(paths), n), np.float32)
    for i, row in enumerate(predict_files(clf, paths, top=n)):
        if "error" in row:
            raise RuntimeError(f"{row['path']}: {row['error']}")
        for p in row["predictions"]:
            out[i, p["class"]] = p["probability"]
    return out


# --- the run ---------------------------------------------------------------------


def cases_from(args):
    if args.cases:
        out = []
        for item in args.cases.split(","):
            source, depth = item.split(":")
            out.append((source, int(depth)))
        return out
    depths = {int(d) for d in args.depths.split(",")}
    sources = args.sources.split(",")
    for s in sources:
        if s not in SOURCES:
            raise SystemExit(f"unknown source {s!r}; use {', '.join(SOURCES)}")
    skip = {tuple(item.split(":")) for item in args.skip.split(",") if item}
    return [(s, d) for s in sources for d in DEPTHS[s]
            if d in depths and (s, str(d)) not in skip]


def make_sources(cases, work, pixels_npy):
    """{case: (file or folder, logits .npy)}, each made in its own process."""
    import importlib.util

    made = {}
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    for source, depth in cases:
        t0 = time.time()
        folder = os.path.join(work, "sources", f"{source}-{depth}")
        os.makedirs(folder, exist_ok=True)
        logits = os.path.join(folder, "logits.npy")
        if source in ("torchvision", "timm"):
            name = "model.safetensors" if source == "timm" else f"resnet{depth}.pth"
            path = os.path.join(folder, name)
            # timm with another seed: with torch's seed 0 its resnet50 would hold
            # exactly torchvision's resnet50 weights, not a second check.
            extra = ["--config-json", "--seed", "1"] if source == "timm" else []
            subprocess.run([sys.executable, os.path.join(REPO, "tests", "torch_source.py"),
                            f"{source}:resnet{depth}", pixels_npy, path, logits, *extra],
                           check=True, env=env, capture_output=True)
        else:
            if source == "keras-hub" and importlib.util.find_spec("keras_hub") is None:
                print("  keras-hub: keras_hub is not installed; left out", flush=True)
                continue
            path = (os.path.join(folder, f"resnet{depth}_weights_tf_dim_ordering_tf_kernels.h5")
                    if source == "keras-applications"
                    else os.path.join(folder, f"resnet_{depth}_imagenet"))
            _harness.run_child(__file__, ["--task", "make", "--source", source,
                                          "--depth", str(depth), "--pixels", pixels_npy,
                                          "--file", path, "--logits", logits])
        made[(source, depth)] = (path, logits)
        print(f"  made {source} ResNet-{depth}: {os.path.basename(path)} "
              f"({_size(path) / 1e6:.0f} MB, {time.time() - t0:.0f} s)", flush=True)
    return made


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--pixels", help=argparse.SUPPRESS)
    p.add_argument("--logits", help=argparse.SUPPRESS)
    p.add_argument("--sources", default=",".join(SOURCES),
                   help="comma list of: " + ", ".join(SOURCES))
    p.add_argument("--depths", default="18,34,50,101,152",
                   help="depths to run, among each source's (keras-applications 50/101/152, "
                        "torchvision 18-152, timm 50, keras-hub 50)")
    p.add_argument("--cases", default="",
                   help="explicit SOURCE:DEPTH list instead of --sources/--depths "
                        "(e.g. torchvision:18,timm:50; timm and keras-hub take 18-152)")
    p.add_argument("--skip", default="",
                   help="SOURCE:DEPTH list to leave out (e.g. keras-applications:152)")
    p.add_argument("--images", type=int, default=40,
                   help="real JPEGs to compare on (and take BN statistics from); 0: all 256")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default="", help="keep the files here (default: a temp "
                   "folder, removed at the end)")
    args = p.parse_args(argv)
    if args.child:
        return {"make": child_make, "ours": child_ours, "peer": child_peer}[args.task](args)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    start = time.time()
    cases = cases_from(args)
    work = args.workdir or tempfile.mkdtemp(prefix="import_weights_")
    os.makedirs(work, exist_ok=True)
    try:
        return _run(args, cases, work, start)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _run(args, cases, work, start):
    import numpy as np

    paths = image_paths(args.images)
    print(f"machine: {_harness.machine_summary()}")
    print(f"{len(cases)} source file(s); {len(paths)} real images; {args.repeats} "
          f"repetition(s), median reported; load average before: "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    pixels_npy = os.path.join(work, "pixels.npy")
    np.save(pixels_npy, real_pixels(paths))  # TF here; torch only in children
    made = make_sources(cases, work, pixels_npy)
    cases = [c for c in cases if c in made]
    settings = {f"{s} {d}": (s, d) for s, d in cases}

    def make_args(peer, setting):
        source, depth = settings[setting]
        return ["--task", peer, "--source", source, "--depth", str(depth),
                "--file", made[(source, depth)][0],
                "--out", os.path.join(work, "imported", f"{source}-{depth}")]

    timed = _harness.alternate(__file__, ["ours", "peer"], list(settings), args.repeats,
                               make_args)
    print(f"load average after the timings: "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)

    rows = []
    for setting, (source, depth) in settings.items():
        path, logits_npy = made[(source, depth)]
        want = np.load(logits_npy)
        got = imported_logits(os.path.join(work, "imported", f"{source}-{depth}"), paths)
        gap = np.abs(got - want)
        ours = _harness.median(timed, (setting, "ours"))
        peer = _harness.median(timed, (setting, "peer"))
        agree = int((got.argmax(1) == want.argmax(1)).sum())
        rows.append(
            f"| {source} | ResNet-{depth} | {os.path.basename(path)} "
            f"({_size(path) / 1e6:.0f} MB) | {ours:.2f} s | {peer:.2f} s | "
            f"{ours / peer:.2f}x | {gap.max() / np.abs(want).max():.1e} | "
            f"{gap.max():.1e} (max logit {np.abs(want).max():.1f}) | "
            f"{agree}/{len(paths)} |")
    print()
    print("Import time = `import_classifier` (read + fold + build + write directory) vs the "
          "framework's own load of the same file into its own model; difference = source "
          f"logits on its own preprocessing vs `predict_files` on the imported directory, "
          f"{len(paths)} real images.")
    print()
    print("| source | network | file | ours: import (read + fold + build + write directory) "
          "| framework's own load | ours / framework | max abs diff / max abs logit "
          "| max abs diff | top-1 agreement |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    print()
    print("Peers: " + "; ".join(f"{s}: {PEER[s]}" for s in dict.fromkeys(s for s, _ in cases)))
    print(f"total run time: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
