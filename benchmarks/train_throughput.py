"""ResNet-50 training throughput: resnet-tf against keras.applications.

Trains each model for a few steps on synthetic data (batch 32, 224x224,
SGD with momentum, sparse categorical cross-entropy) in float32 and in
mixed_bfloat16, each in its own process, alternating, and prints images/s
and the ratio ours / theirs.

    .venv/bin/python benchmarks/train_throughput.py            # defaults
    .venv/bin/python benchmarks/train_throughput.py --repeats 3 --steps 8

Peers:
- ``ours``: ``resnet_tf.build("resnet50")``, the default model users get
  (paper settings: no conv bias, weight decay 1e-4, fused BN on TF);
- ``keras_applications``: ``keras.applications.ResNet50(weights=None)``.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

PEERS = ("ours", "keras_applications")
POLICIES = ("float32", "mixed_bfloat16")


def child(args):
    import numpy as np
    import keras

    keras.config.set_dtype_policy(args.policy)
    keras.utils.set_random_seed(0)
    size, batch = args.size, args.batch
    if args.peer == "ours":
        import resnet_tf

        model = resnet_tf.build(args.arch, input_shape=(size, size, 3))
    elif args.peer == "keras_applications":
        apps = {"resnet50": keras.applications.ResNet50,
                "resnet101": keras.applications.ResNet101,
                "resnet152": keras.applications.ResNet152}
        model = apps[args.arch](weights=None, input_shape=(size, size, 3))
    else:
        raise SystemExit(f"unknown peer {args.peer}")
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 1000, size=(batch,)).astype("int32")
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = model.train_on_batch(x, y)
    dt = time.perf_counter() - t0
    print(json.dumps({"value": batch * args.steps / dt, "unit": "img/s",
                      "loss": float(np.ravel(loss)[0])}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peer", default="ours")
    p.add_argument("--policy", default="float32")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    peers = args.peers.split(",")
    policies = args.policies.split(",")
    print(f"machine: {_harness.machine_summary()}")
    print(f"{args.arch} training, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, "
          f"{args.repeats} repetition(s), median reported")

    def make_args(peer, policy):
        return ["--peer", peer, "--policy", policy, "--arch", args.arch,
                "--batch", str(args.batch), "--size", str(args.size),
                "--steps", str(args.steps), "--warmup", str(args.warmup)]

    results = _harness.alternate(__file__, peers, policies, args.repeats,
                                 make_args)
    print()
    print(f"| policy | {' | '.join(peers)} | ratio ours/{peers[-1]} |")
    print(f"|---|{'---|' * len(peers)}---|")
    for policy in policies:
        meds = [_harness.median(results, (policy, peer)) for peer in peers]
        ratio = meds[0] / meds[-1] if "ours" in peers[:1] else float("nan")
        print(f"| {policy} | " + " | ".join(f"{m:.2f} img/s" for m in meds)
              + f" | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
