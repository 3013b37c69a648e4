"""TensorFlow's oneDNN kernels against its Eigen kernels, for resnet-tf's
own models: the setting ``import resnet_tf`` picks on x86 CPUs where
TensorFlow 2.21 would not (AVX2-only ones; resnet_tf._prefer_onednn).

Each (setting, model) is measured in its own process, TF_ENABLE_ONEDNN_OPTS=0
and =1 alternating repetition by repetition, with train_throughput.py's
``ours`` child (synthetic data, SGD with momentum, float32 unless
``--policy``) and infer_latency.py's. Prints the median images/s of
training and of inference (batch 8), and the ratio oneDNN / Eigen.

    .venv/bin/python benchmarks/onednn_kernels.py --repeats 3
    .venv/bin/python benchmarks/onednn_kernels.py --only train --archs resnet20
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {"eigen": "0", "onednn": "1"}
# (arch, image side, training batch): the CIFAR net at its own size, and
# ResNet-50 at the paper's crop with a CPU-sized batch.
SIZES = {"resnet20": (32, 64), "resnet56": (32, 64), "resnet50": (224, 8),
         "resnet18": (224, 8)}
INFER_ARCHS = ("resnet50", "resnet101", "resnet152")


def kinds_of(arch, kinds):
    """infer_latency.py builds the ImageNet nets only."""
    return [k for k in kinds if k == "train" or arch in INFER_ARCHS]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="resnet20,resnet50")
    p.add_argument("--only", choices=("train", "infer", "both"), default="both")
    p.add_argument("--policy", default="float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    print(f"machine: {_harness.machine_summary()}")
    print(f"threads: TF_NUM_INTRAOP_THREADS={os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')}; "
          f"policy {args.policy}; {args.repeats} repetition(s), median reported")
    kinds = ("train", "infer") if args.only == "both" else (args.only,)
    rows = {}
    for rep in range(args.repeats):
        for arch in args.archs.split(","):
            size, batch = SIZES[arch]
            for kind in kinds_of(arch, kinds):
                for name, value in SETTINGS.items():
                    if kind == "train":
                        script = os.path.join(HERE, "train_throughput.py")
                        child = ["--peer", "ours", "--policy", args.policy, "--arch", arch,
                                 "--batch", str(batch), "--size", str(size),
                                 "--steps", str(args.steps), "--warmup", "3"]
                    else:
                        script = os.path.join(HERE, "infer_latency.py")
                        child = ["--peer", "ours", "--policy", args.policy, "--arch", arch,
                                 "--batch", str(batch), "--size", str(size),
                                 "--iters", str(args.steps)]
                    r = _harness.run_child(script, child,
                                           env={"TF_ENABLE_ONEDNN_OPTS": value})
                    rows.setdefault((arch, kind, name), []).append(r)
                    print(f"  rep {rep + 1}/{args.repeats} {arch:<9} {kind:<5} {name:<6} "
                          f"{r['value']:9.2f} {r['unit']}", flush=True)
    print()
    print("| model | measure | Eigen (TF_ENABLE_ONEDNN_OPTS=0) | oneDNN (=1) | oneDNN / Eigen |")
    print("|---|---|---|---|---|")
    for arch in args.archs.split(","):
        for kind in kinds_of(arch, kinds):
            med = {n: statistics.median(r["value"] for r in rows[(arch, kind, n)])
                   for n in SETTINGS}
            unit = rows[(arch, kind, "eigen")][0]["unit"]
            faster = med["onednn"] / med["eigen"] if unit == "img/s" \
                else med["eigen"] / med["onednn"]
            print(f"| {arch} | {kind} | {med['eigen']:.2f} {unit} | "
                  f"{med['onednn']:.2f} {unit} | {faster:.2f}x |")


if __name__ == "__main__":
    main()
