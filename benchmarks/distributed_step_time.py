"""Classifier step time: two MultiWorkerMirroredStrategy workers on
127.0.0.1 against one process, in the same run (the ratio is the overhead of
the collective set-up on one host, not a speed-up claim).

    .venv/bin/python benchmarks/distributed_step_time.py [--iterations 30]

Uses the worker launcher of tests/test_resnet_tf/test_distributed.py (free ports, bounded
time, processes always killed). ResNet-20, cifar recipe, synthetic 32x32
images, global batch 64; median step time of steps 6 and later.
"""

import argparse
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def median_after_warmup(times, skip=5):
    times = sorted(times[skip:])
    return times[len(times) // 2]


def main():
    from test_distributed import free_ports, kill, load_result, start_child, wait_all

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=30)
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="dist-bench-"))
    kw = dict(model="resnet20", recipe="cifar", iterations=args.iterations, batch_size=64,
              synthetic_train=640, synthetic_eval=64, seed=0, backup_every=1000)
    one = start_child(tmp, "one", kind="classifier", out=str(tmp / "one"), kwargs=kw)
    try:
        wait_all([one], 600)
    finally:
        kill(one[0])
    t1 = median_after_warmup(load_result(one[1])[1]["step_times"])
    print(f"one process:  {t1:.3f} s/step", flush=True)
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [start_child(tmp, f"w{i}", kind="classifier", out=str(tmp / "two"),
                           kwargs={**kw, "strategy": "multiworker"},
                           tf_config={"cluster": cluster, "task": {"type": "worker",
                                                                   "index": i}})
               for i in range(2)]
    try:
        wait_all(workers, 600)
    finally:
        for w in workers:
            kill(w[0])
    for i, w in enumerate(workers):
        t2 = median_after_warmup(load_result(w[1])[1]["step_times"])
        print(f"worker {i} of 2: {t2:.3f} s/step  ratio two/one {t2 / t1:.2f}x")
    print(f"(load average {os.getloadavg()[0]:.1f}; outputs in {tmp})")


if __name__ == "__main__":
    main()
