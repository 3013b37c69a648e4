"""Input pipeline throughput against what ResNet-50 training consumes.

Measures images/s of
- the ImageNet-style training pipeline (decode, shorter side to a random
  s in [256, 480], random 224 crop, flip, PCA colour, mean subtraction) on
  the real hymenoptera JPEGs, decoding every image every epoch (no cache);
- the CIFAR-style pipeline (mean subtraction, pad 4, random 32 crop, flip)
  on cifar10-jpg test JPEGs, without and with the in-memory cache;
each on one core (a private tf.data thread pool of 1 thread, 1 intra-op
thread) and on all cores, and prints them beside ResNet-50 training
throughput (batch 32, float32, ours) measured in the same run.

    .venv/bin/python benchmarks/pipeline_throughput.py [--data ../shared/data]
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402


def child(args):
    import numpy as np
    import tensorflow as tf

    from resnet_tf.data.pipeline import make_dataset
    from resnet_tf.data.preprocessing import Preprocessing
    from resnet_tf.data.sources import open_source

    if args.kind == "imagenet":
        src = open_source(f"folder:{args.data}/hymenoptera/hymenoptera_data")
        prep = Preprocessing.for_style("imagenet")
        mean = np.full((224, 224, 3), 115.0, np.float32)
        cache = False
    else:
        src = open_source(f"folder:{args.data}/cifar10-jpg/test")
        prep = Preprocessing.for_style("cifar")
        mean = np.full((32, 32, 3), 120.0, np.float32)
        cache = args.kind == "cifar-cached"
    split = src.split("train")
    ds = make_dataset(split, prep, mean, training=True, batch_size=32, seed=0,
                      cache=cache, repeat=True)
    if args.cores == 1:
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    it = iter(ds)
    warm = args.warmup_images // 32
    for _ in range(warm):
        next(it)
    n = args.images // 32
    t0 = time.perf_counter()
    for _ in range(n):
        x, _ = next(it)
    _ = x.numpy()
    dt = time.perf_counter() - t0
    print(json.dumps({"value": n * 32 / dt, "unit": "img/s"}))


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="imagenet")
    p.add_argument("--cores", type=int, default=0)
    p.add_argument("--data", default=os.environ.get(
        "RESNET_TF_DATA", os.path.join(here, "..", "..", "shared", "data")))
    p.add_argument("--images", type=int, default=3200)
    p.add_argument("--warmup-images", type=int, default=320)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--skip-model", action="store_true")
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    args.data = os.path.abspath(args.data)
    if not os.path.isdir(args.data):
        raise SystemExit(f"{args.data}: data folder not found; pass --data or set "
                         "RESNET_TF_DATA.")
    ncores = os.cpu_count()
    print(f"machine: {_harness.machine_summary()}")
    kinds = ["imagenet", "cifar", "cifar-cached"]
    settings = [f"{k}@{c}" for k in kinds for c in (1, ncores)]

    def make_args(peer, setting):
        kind, cores = setting.split("@")
        n = args.images if kind == "imagenet" else args.images * 4
        return ["--kind", kind, "--cores", cores, "--data", args.data,
                "--images", str(n), "--warmup-images", str(args.warmup_images)]

    results = _harness.alternate(__file__, ["pipeline"], settings, args.repeats,
                                 make_args)
    model = None
    if not args.skip_model:
        model = _harness.run_child(os.path.join(here, "train_throughput.py"),
                                   ["--peer", "ours", "--policy", "float32",
                                    "--steps", "4", "--warmup", "2"])["value"]
        print(f"ResNet-50 training (ours, float32, batch 32): {model:.2f} img/s")
    print()
    print("| pipeline | 1 core | img/s per core | all "
          f"{ncores} cores | x ResNet-50 training |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        one = _harness.median(results, (f"{kind}@1", "pipeline"))
        alln = _harness.median(results, (f"{kind}@{ncores}", "pipeline"))
        ratio = f"{alln / model:.0f}x" if model else "-"
        print(f"| {kind} | {one:.0f} img/s | {one:.0f} | {alln:.0f} img/s | {ratio} |")


if __name__ == "__main__":
    main()
