"""ResNet inference speed: batch-1 latency and batch-32 throughput, resnet-tf
against tf_keras, PyTorch and keras.applications.

Each (peer, policy, batch) runs in its own process, peers alternating
repetition by repetition; the median over repetitions of each process's
median call time is reported. Synthetic 224x224 input, random weights.

    .venv/bin/python benchmarks/infer_latency.py --repeats 3
    .venv/bin/python benchmarks/infer_latency.py --peers ours,torch --policies float32

What is timed is the call a server makes:
- ``ours`` / ``keras_applications``: ``model.predict_on_batch(x)`` (Keras 3's
  compiled predict function, BN in inference mode);
- ``ours_serving``: ``resnet_tf.fold.serving_function(model)(x)``, the graph
  our SavedModel exports run: BN folded into the convolutions, weights
  frozen into constants, under mixed_bfloat16 stored in bfloat16;
- ``tf_keras``: ``model.predict_on_batch(x)`` (Keras 2);
- ``torch``: ``model(x)`` under ``torch.inference_mode()``, ``eval()``,
  channels_last, bfloat16 via ``torch.autocast("cpu")``.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402
from train_throughput import (  # noqa: E402
    KERAS_APPS, _keras3_model, _tf_keras_model, load_average, print_table)

PEERS = ("ours", "ours_serving", "tf_keras", "torch", "keras_applications")
POLICIES = ("float32", "mixed_bfloat16")
BATCHES = (1, 32)


def child(args):
    import numpy as np

    x = np.random.default_rng(0).normal(
        size=(args.batch, args.size, args.size, 3)).astype("float32")
    if args.peer == "torch":
        call = _torch_call(args, x)
    else:
        if args.peer == "tf_keras":
            model, _ = _tf_keras_model(args)
        else:
            model = _keras3_model(args)
        if args.peer == "ours_serving":
            from resnet_tf.fold import serving_function

            run = serving_function(model)
            import tensorflow as tf

            xt = tf.constant(x)
            call = lambda: run(xt).numpy()  # noqa: E731
        else:
            call = lambda: model.predict_on_batch(x)  # noqa: E731
    for _ in range(args.warmup):
        call()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    if args.batch == 1:
        print(json.dumps({"value": 1000 * t, "unit": "ms"}))
    else:
        print(json.dumps({"value": args.batch / t, "unit": "img/s"}))


def _torch_call(args, x):
    import torch

    from _torch_resnet import ResNet

    torch.manual_seed(0)
    model = ResNet(int(args.arch.removeprefix("resnet"))).eval()
    model = model.to(memory_format=torch.channels_last)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)
    bf16 = args.policy == "mixed_bfloat16"

    def call():
        with torch.inference_mode(), torch.autocast(
                "cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(xt).float().numpy()

    return call


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peer", default="ours")
    p.add_argument("--policy", default="float32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--arch", default="resnet50", choices=sorted(KERAS_APPS))
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--batches", default=",".join(map(str, BATCHES)))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    peers = args.peers.split(",")
    settings = [f"{policy} batch {b}" for policy in args.policies.split(",")
                for b in args.batches.split(",")]
    print(f"machine: {_harness.machine_summary()}")
    print(f"{args.arch} inference, {args.size}x{args.size}, median of "
          f"{args.iters} calls after {args.warmup} warm-up, {args.repeats} "
          f"repetition(s), median reported; load average before: "
          f"{load_average()}")

    def make_args(peer, setting):
        policy, _, batch = setting.split()
        return ["--peer", peer, "--policy", policy, "--batch", batch,
                "--arch", args.arch, "--size", str(args.size),
                "--iters", str(args.iters), "--warmup", str(args.warmup)]

    results = _harness.alternate(__file__, peers, settings, args.repeats,
                                 make_args)
    print(f"load average after: {load_average()}")
    latency = [s for s in settings if s.endswith(" batch 1")]
    throughput = [s for s in settings if s not in latency]
    if latency:
        print_table(results, peers, latency, "ms", higher_is_better=False)
    if throughput:
        print_table(results, peers, throughput, "img/s")


if __name__ == "__main__":
    main()
