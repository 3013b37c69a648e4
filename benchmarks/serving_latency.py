"""Serving latency of exported models: TF Serving's C++ loader and
``tf.saved_model.load``, beside ``keras.applications.ResNet50`` called directly.

Exports a ResNet-50 classifier (1000 classes, the paper's evaluation view:
shorter side 256, centre 224 crop, per-pixel mean) in float32 and
mixed_bfloat16, a Faster R-CNN ResNet-50 C4 detector (shorter side 600,
longer at most 1000) and a ResNet-50 per-class RPN localizer (1000 classes,
whole image at shorter side 224, top-5 boxes), all with random weights
(speed does not depend on them), then measures each peer in its own
process, alternating:

- ``cpp``: ``resnet_tf/serving/load_and_run.cc`` (``tensorflow::LoadSavedModel``,
  the loader TF Serving runs), timing each ``Session::Run`` of
  ``serving_default`` on JPEG bytes;
- ``saved_model``: ``tf.saved_model.load`` in Python, ``serving_default`` on
  the same JPEG bytes;
- ``keras_applications``: ``keras.applications.ResNet50(weights=None)``,
  ``predict_on_batch`` (Keras's compiled inference step; an eager
  ``model(x)`` runs op by op and is several times slower) on an already
  decoded float batch (no JPEG decoding, no resize: it does less work than
  the exported graphs).

Batch 1: latency p50 / p99 over ``--iters`` calls; batch 32: images/s over
``--batch-iters`` calls; both after ``--warmup`` calls.

    .venv/bin/python benchmarks/serving_latency.py
    .venv/bin/python benchmarks/serving_latency.py --iters 50 --batch-iters 5 --repeats 3
    .venv/bin/python benchmarks/serving_latency.py --models localizer   # one model only
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
PEERS = ("cpp", "saved_model", "keras_applications")
MODELS = ("classifier", "detector", "localizer")
# The output each peer fetches (so the whole graph runs) by exported kind.
FETCH = {"classifier": "probabilities", "detector": "detection_scores",
         "localizer": "top_k_boxes"}
POLICIES = ("float32", "mixed_bfloat16")


def _images(n=1):
    data = os.environ.get("RESNET_TF_DATA", os.path.join(os.path.dirname(REPO), "shared",
                                                          "data"))
    folder = os.path.join(data, "hymenoptera", "hymenoptera_data", "val", "bees")
    if not os.path.isdir(folder):
        raise SystemExit(f"{folder} not found: the benchmark feeds real JPEGs (set "
                         "RESNET_TF_DATA).")
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))[:n]]


def _percentiles(ms):
    import numpy as np

    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def prepare(workdir, what):
    """Write the model directories and exports the children measure."""
    import keras
    import numpy as np

    from resnet_tf import export, model_dir

    paths = {}
    if "classifier" in what:
        import resnet_tf
        from resnet_tf.data.preprocessing import Preprocessing

        for policy in POLICIES:
            keras.config.set_dtype_policy(policy)
            model = resnet_tf.build("resnet50")
            keras.config.set_dtype_policy("float32")
            d = os.path.join(workdir, f"resnet50-{policy}")
            model_dir.save_classifier(d, model, [f"class{i}" for i in range(1000)],
                                      np.full((224, 224, 3), 117.0, np.float32),
                                      Preprocessing())
            paths[policy] = export.export_classifier(d, os.path.join(workdir, f"serving-{policy}"))
            keras.backend.clear_session()
    if "detector" in what:
        from detection.data.pipeline import DetectionPreprocessing
        from detection.export import export_detector
        from detection.model import FasterRCNN
        from detection.model_dir import save_detector

        model = FasterRCNN(3, depth=50, class_names=["RBC", "WBC", "Platelets"])
        model.ensure_built()
        d = os.path.join(workdir, "detector")
        save_detector(d, model, DetectionPreprocessing())
        paths["detector"] = export_detector(d, os.path.join(workdir, "serving-detector"))
    if "localizer" in what:
        import resnet_tf
        from localization.export import export_localizer
        from localization.model import Localizer
        from localization.model_dir import save_localizer
        from resnet_tf.data.preprocessing import Preprocessing

        model = Localizer(resnet_tf.build("resnet50").get_config())
        model.ensure_built()
        d = os.path.join(workdir, "localizer")
        save_localizer(d, model, Preprocessing(), np.full((224, 224, 3), 117.0, np.float32))
        paths["localizer"] = export_localizer(d, os.path.join(workdir, "serving-localizer"))
    return paths


def child(args):
    import numpy as np

    files = _images(1)
    result = {"peer": args.peer, "policy": args.policy}
    if args.peer == "cpp":
        from resnet_tf import serving

        def run(batch, iters):
            out = serving.run_loader(args.binary, args.export, files, batch=batch,
                                     repeat=args.warmup + iters)
            return out["latency_ms"][args.warmup:]
    elif args.peer == "saved_model":
        import tensorflow as tf

        fn = tf.saved_model.load(args.export).signatures["serving_default"]
        blob = open(files[0], "rb").read()

        def run(batch, iters):
            x = tf.constant([blob] * batch)
            ms = []
            for i in range(args.warmup + iters):
                t0 = time.perf_counter()
                fn(image_bytes=x)[FETCH[args.kind]].numpy()
                ms.append(1000 * (time.perf_counter() - t0))
            return np.array(ms[args.warmup:])
    elif args.peer == "keras_applications":
        import keras

        keras.config.set_dtype_policy(args.policy)
        model = keras.applications.ResNet50(weights=None)
        rng = np.random.default_rng(0)

        def run(batch, iters):
            x = keras.ops.convert_to_tensor(rng.normal(size=(batch, 224, 224, 3))
                                            .astype("float32"))
            ms = []
            for i in range(args.warmup + iters):
                t0 = time.perf_counter()
                model.predict_on_batch(x)  # Keras's compiled inference step
                ms.append(1000 * (time.perf_counter() - t0))
            return np.array(ms[args.warmup:])
    else:
        raise SystemExit(f"unknown peer {args.peer}")
    ms1 = run(1, args.iters)
    result["p50_ms"], result["p99_ms"] = _percentiles(ms1)
    result["value"] = result["p50_ms"]
    result["unit"] = "ms p50 (batch 1)"
    if args.batch_iters:
        ms32 = run(args.batch, args.batch_iters)
        result["batch_img_s"] = args.batch * len(ms32) / (ms32.sum() / 1000)
    print(json.dumps(result))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peer")
    p.add_argument("--policy", default="float32")
    p.add_argument("--export")
    p.add_argument("--binary")
    p.add_argument("--kind", default="classifier", choices=MODELS,
                   help=argparse.SUPPRESS)  # the child's exported model kind
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--iters", type=int, default=20, help="timed batch-1 calls")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batch-iters", type=int, default=3, help="timed batch-32 calls")
    p.add_argument("--detector-iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--models", default=",".join(MODELS),
                   help="models to measure (comma-separated: classifier, detector, "
                   "localizer)")
    p.add_argument("--no-detector", action="store_true", help="leave out the detector")
    p.add_argument("--localizer-iters", type=int, default=3)
    p.add_argument("--workdir", default="/tmp/resnet-tf-serving-bench")
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    models = [m for m in args.models.split(",") if m]
    if set(models) - set(MODELS):
        raise SystemExit(f"--models: unknown {sorted(set(models) - set(MODELS))}; "
                         f"choose from {', '.join(MODELS)}.")
    if args.no_detector and "detector" in models:
        models.remove("detector")

    from resnet_tf import serving

    print(f"machine: {_harness.machine_summary()}")
    os.makedirs(args.workdir, exist_ok=True)
    import shutil

    for name in os.listdir(args.workdir):
        shutil.rmtree(os.path.join(args.workdir, name), ignore_errors=True)
    t0 = time.time()
    paths = prepare(args.workdir, models)
    binary = serving.build_loader(os.path.join(args.workdir, "loader"))
    print(f"exported and built the loader in {time.time() - t0:.0f} s")
    peers, policies = args.peers.split(","), args.policies.split(",")

    def make_args(peer, policy):
        return ["--peer", peer, "--policy", policy, "--export", paths[policy],
                "--binary", binary, "--iters", str(args.iters), "--batch", str(args.batch),
                "--batch-iters", str(args.batch_iters), "--warmup", str(args.warmup)]

    results = {}
    if "classifier" in models:
        results = _harness.alternate(__file__, peers, policies, args.repeats, make_args)

    def batch1_only(kind, iters):
        """Batch-1 latency of an exported detector or localizer (float32)."""
        return _harness.alternate(
            __file__, [p for p in peers if p != "keras_applications"], ["float32"],
            args.repeats, lambda peer, policy: [
                "--peer", peer, "--policy", policy, "--export", paths[kind],
                "--binary", binary, "--kind", kind, "--iters", str(iters),
                "--batch-iters", "0", "--warmup", "1"])

    det = batch1_only("detector", args.detector_iters) if "detector" in models else {}
    loc = batch1_only("localizer", args.localizer_iters) if "localizer" in models else {}

    def med(res, key, field):
        import statistics

        return statistics.median(r[field] for r in res[key])

    print()
    print("| model | policy | path | batch 1 p50 | batch 1 p99 | batch 32 | "
          "× keras.applications (batch 1 / batch 32) |")
    print("|---|---|---|---|---|---|---|")
    for policy in policies if results else ():
        ka = (policy, "keras_applications")
        for peer in peers:
            key = (policy, peer)
            p50, p99 = med(results, key, "p50_ms"), med(results, key, "p99_ms")
            tput = med(results, key, "batch_img_s")
            ratio = "—"
            if ka in results and peer != "keras_applications":
                ratio = (f"{med(results, ka, 'p50_ms') / p50:.2f}× / "
                         f"{tput / med(results, ka, 'batch_img_s'):.2f}×")
            print(f"| ResNet-50 classifier | {policy} | {peer} | {p50:.1f} ms | "
                  f"{p99:.1f} ms | {tput:.1f} img/s | {ratio} |")
    for key in det:
        print(f"| Faster R-CNN R50-C4 detector | {key[0]} | {key[1]} | "
              f"{med(det, key, 'p50_ms'):.0f} ms | {med(det, key, 'p99_ms'):.0f} ms | — | — |")
    for key in loc:
        print(f"| per-class RPN R50 localizer | {key[0]} | {key[1]} | "
              f"{med(loc, key, 'p50_ms'):.0f} ms | {med(loc, key, 'p99_ms'):.0f} ms | — | — |")


if __name__ == "__main__":
    main()
