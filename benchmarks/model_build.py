"""Building a detector or localizer before its weights load: traced against eager.

A subclassed model's variables exist only after its first call. ``ours``
traces that call into a graph that never runs
(``detection.model.build_variables``, what ``FasterRCNN.ensure_built``
does). The peer, ``eager``, runs one eager call on the same blank image:
what ``ensure_built`` did before, which for the C4 detector computes conv5_x
on every test proposal. Every load of a detector directory (evaluate,
predict, export, resume) and every ``train detector`` pays this once. The
localizer row is why the localizers keep the eager call.

Each measurement is a fresh process (``_harness``), peers alternating; the
value is the CPU seconds (user + system, this process) of the build alone,
after the model object is constructed.

    .venv/bin/python benchmarks/model_build.py
    .venv/bin/python benchmarks/model_build.py --models detector18 --repeats 5
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

MODELS = ("detector18", "detector50", "localizer50")


def _construct(name):
    """(unbuilt model, blank inputs) for ``name``."""
    import tensorflow as tf

    if name.startswith("detector"):
        from detection.model import FasterRCNN

        model = FasterRCNN(3, depth=int(name[len("detector"):]))
        size = 64  # FasterRCNN.ensure_built's default
        inputs = {"images": tf.zeros([1, size, size, 3]),
                  "image_sizes": tf.constant([[size, size]], tf.float32)}
        return model, inputs
    from localization.model import Localizer
    from resnet_tf import ResNet

    model = Localizer(ResNet(int(name[len("localizer"):]), classes=1000).get_config())
    return model, tf.zeros([1, 224, 224, 3])  # Localizer.ensure_built's size


def child(args):
    import resnet_tf  # noqa: F401  (its TensorFlow settings, as users get them)
    from detection.model import build_variables

    model, inputs = _construct(args.model)
    t0, w0 = time.process_time(), time.perf_counter()
    if args.peer == "ours":
        build_variables(model, inputs)
    else:
        model(inputs)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    assert model.built
    print(json.dumps({"value": cpu, "unit": "s CPU", "wall": wall,
                      "variables": len(model.variables)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peer", default="ours", choices=("ours", "eager"), help=argparse.SUPPRESS)
    p.add_argument("--model", default="detector18", help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        p.error(f"unknown --models {unknown}; choose from {', '.join(MODELS)}")
    print(f"machine: {_harness.machine_summary()}; "
          f"TF_NUM_INTRAOP_THREADS={os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')}")
    peers = ["ours", "eager"]
    results = _harness.alternate(__file__, peers, models, args.repeats,
                                 lambda peer, m: ["--peer", peer, "--model", m])
    print("\n| model | traced build (ours), s CPU | eager call, s CPU | eager / ours |")
    print("|---|---|---|---|")
    for m in models:
        ours, eager = (_harness.median(results, (m, peer)) for peer in peers)
        print(f"| {m} | {ours:.2f} | {eager:.2f} | {eager / ours:.2f}x |")


if __name__ == "__main__":
    main()
