"""ResNet-20 with the paper's cifar recipe on cifar10-jpg: test error
against wall time.

Trains on all 50,000 training JPEGs and evaluates on the 10,000 test JPEGs
after every epoch, printing wall time, iterations, learning rate and test
error. The paper's full schedule is 64k iterations (lr /10 at 32k and 48k);
``--epochs`` shortens it with the boundaries kept at 50% and 75% of the run.

    .venv/bin/python benchmarks/cifar_resnet20.py --epochs 30 --out /tmp/r20
"""

import argparse
import json
import os
import sys
import time

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402


class WallClock(keras.callbacks.Callback):
    def __init__(self, log_path):
        super().__init__()
        self.log_path = log_path
        self.t0 = time.time()
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1,
               "iterations": int(self.model.optimizer.iterations.numpy()),
               "minutes": round((time.time() - self.t0) / 60, 2),
               "learning_rate": float(self.model.optimizer.learning_rate.numpy()),
               "train_error": round(1 - float(logs.get("top1", 0)), 4),
               "test_error": round(1 - float(logs.get("val_top1", 0)), 4)}
        self.rows.append(row)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"\n[wall] {json.dumps(row)}", flush=True)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get(
        "RESNET_TF_DATA", os.path.join(here, "..", "..", "shared", "data")))
    p.add_argument("--model", default="resnet20")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--policy", default="float32")
    p.add_argument("--out", default="/tmp/resnet_tf_cifar_bench")
    args = p.parse_args(argv)
    from resnet_tf.train import train_classifier

    print(f"machine: {_harness.machine_summary()}")
    os.makedirs(args.out, exist_ok=True)
    clock = WallClock(os.path.join(args.out, "wall.jsonl"))
    result = train_classifier(
        f"folder:{os.path.abspath(args.data)}/cifar10-jpg", args.out, model=args.model,
        recipe="cifar", epochs=args.epochs, policy=args.policy, verbose=2,
        extra_callbacks=[clock])
    print("\n| epoch | iterations | wall minutes | learning rate | train error | test error |")
    print("|---|---|---|---|---|---|")
    for r in clock.rows:
        print(f"| {r['epoch']} | {r['iterations']} | {r['minutes']} | "
              f"{r['learning_rate']:g} | {100 * r['train_error']:.2f}% | "
              f"{100 * r['test_error']:.2f}% |")
    print(json.dumps(result.results))


if __name__ == "__main__":
    main()
