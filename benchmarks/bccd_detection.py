"""BCCD detection: train on trainval for a wall-clock budget, report test
mAP@0.5 against wall time.

Trains Faster R-CNN (ResNet C4) with ``detection.train.train_detector`` on
``voc:BCCD:trainval`` (292 images, 3 classes), from scratch or from a
resnet-tf classifier directory (``--init-from``), and evaluates VOC mAP@0.5
(all-points and 11-point) and COCO AP on the 72 test images every
``--eval-every`` minutes and at the end. Evaluation time is not counted in
the training budget. The learning rate follows the paper's COCO shape:
0.001-scale rate with linear warm-up, divided by 10 once 75% of the budget
has passed (the iteration count is unknown in advance on a shared CPU).

    .venv/bin/python benchmarks/bccd_detection.py --minutes 90 --out /tmp/bccd-scratch
    .venv/bin/python benchmarks/bccd_detection.py --minutes 90 --init-from CLASSIFIER_DIR \\
        --out /tmp/bccd-init

``--iterations N`` trains exactly N steps instead of a time budget (the rate
/10 after 75% of them), so two runs that differ in one setting start from
the same weights (``--seed`` seeds the initialisation and the data order) and
take the same steps; e.g. the RoI batch (issue 21, part 4)::

    for r in 128 512; do .venv/bin/python benchmarks/bccd_detection.py \\
        --iterations 150 --roi-batch $r --out /tmp/bccd-roi$r; done

The summary gives the median seconds per training step (the first
``WARMUP_STEPS`` steps, which trace the graph, left out).

Published BCCD detectors report mAP@0.5 around 0.85 with ImageNet-pretrained
backbones trained on GPUs.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

WARMUP_STEPS = 3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the detector directory to write")
    p.add_argument("--init-from", help="a resnet-tf classifier directory")
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--minutes", type=float, default=90)
    p.add_argument("--eval-every", type=float, default=15, help="minutes")
    p.add_argument("--shorter-side", type=int, default=480)
    p.add_argument("--max-side", type=int, default=640)
    p.add_argument("--anchor-scales", default="32,64,128,256")
    p.add_argument("--iterations", type=int,
                   help="train exactly this many steps instead of --minutes")
    p.add_argument("--roi-batch", type=int, default=128,
                   help="RoIs per image for the head (128, the detector's default and "
                   "the original Faster R-CNN code's; 512, detectron2's, makes the "
                   "per-RoI conv5 dominate a CPU step)")
    p.add_argument("--no-eval", action="store_true",
                   help="time the training steps only (no test-set mAP)")
    p.add_argument("--pooled-size", type=int, default=14, help="RoI pooling output side")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initial weights, the data order and the samples")
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--policy", default="float32")
    args = p.parse_args(argv)

    import keras

    from detection.data.sources import open_detection_source
    from detection.evaluate import _to_original, detect_split
    from detection.metrics.coco_map import evaluate_coco
    from detection.metrics.voc_map import evaluate_voc
    from detection.train import train_detector

    root = _harness.shared_data("bccd", "BCCD")
    test = open_detection_source(f"voc:{root}:test").split("eval")
    names = ["Platelets", "RBC", "WBC"]
    gts = [{"boxes": a.boxes, "classes": a.classes, "difficult": a.difficult}
           for a in test.annotations]
    curve = []
    budget = args.minutes * 60 if args.iterations is None else float("inf")
    iterations = args.iterations or 10**7

    class Budget(keras.callbacks.Callback):
        """Stops at the budget, divides the rate by 10 at 75% of it, and
        evaluates on the test split every ``eval_every`` minutes."""

        def __init__(self):
            super().__init__()
            self.train_seconds, self.eval_seconds = 0.0, 0.0
            self.start = self.last_eval = None
            self.steps = 0
            self.step_seconds, self.step_start = [], None

        def on_train_begin(self, logs=None):
            self.start = time.time()
            self.last_eval = 0.0

        def elapsed(self):
            return time.time() - self.start - self.eval_seconds

        def on_train_batch_begin(self, batch, logs=None):
            if self.elapsed() > 0.75 * budget or self.steps >= 0.75 * iterations:
                self.model.optimizer.learning_rate.assign(args.learning_rate / 10)
            self.step_start = time.time()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            self.step_seconds.append(time.time() - self.step_start)
            if args.iterations and self.steps % 10 == 0:
                print(f"step {self.steps}: {self.step_seconds[-1]:.2f} s, loss "
                      f"{float(logs['loss']):.3f}", flush=True)
            if self.elapsed() >= budget or self.steps >= iterations:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if args.no_eval:
                return
            t = self.elapsed()
            if (t - self.last_eval >= args.eval_every * 60 or t >= budget
                    or self.steps >= iterations):
                self.last_eval = t
                t0 = time.time()
                r = evaluate(self.model)
                self.eval_seconds += time.time() - t0
                curve.append({"train_minutes": round(t / 60, 1), "iterations": self.steps,
                              "epoch": epoch + 1, "loss": float(logs["loss"]), **r})
                print(json.dumps(curve[-1]), flush=True)

    def evaluate(model):
        prep = model._bccd_prep
        dets = _to_original(detect_split(model, prep, test, batch_size=2), test.annotations)
        voc = evaluate_voc(dets, gts, 3, class_names=names)
        voc07 = evaluate_voc(dets, gts, 3, class_names=names, use_07_metric=True)
        coco = evaluate_coco(dets, gts, names, [(a.height, a.width) for a in test.annotations])
        return {"map50": round(voc["mAP"], 4), "voc07_map50": round(voc07["mAP"], 4),
                "per_class_ap50": {k: round(v, 4) for k, v in voc["per_class"].items()},
                "coco_AP": round(coco["AP"], 4)}

    budget_cb = Budget()

    class KeepPrep(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            from detection.data.pipeline import DetectionPreprocessing

            self.model._bccd_prep = DetectionPreprocessing(
                args.shorter_side, args.max_side, flip=False,
                **({"mean_rgb": prep_mean[0]} if prep_mean else {}))

    prep_mean = []
    if args.init_from:
        import numpy as np

        from resnet_tf import model_dir

        clf = model_dir.load_classifier(args.init_from)
        if clf.mean_image is not None:
            prep_mean.append(tuple(float(v) for v in
                                   np.asarray(clf.mean_image).mean(axis=(0, 1))))
        del clf

    print(f"machine: {_harness.machine_summary()}")
    print(f"BCCD: {len(test.annotations)} test images; training budget "
          f"{args.minutes:g} min; {'init from ' + args.init_from if args.init_from else 'from scratch'}",
          flush=True)
    keras.utils.set_random_seed(args.seed)  # the same initial weights for every setting
    t0 = time.time()
    r = train_detector(
        f"voc:{root}:trainval", args.out, init_from=args.init_from, depth=args.depth,
        iterations=iterations, batch_size=args.batch_size, learning_rate=args.learning_rate,
        decay_fraction=1.0, warmup_iterations=100, shorter_side=args.shorter_side,
        max_side=args.max_side, policy=args.policy, clipnorm=10.0, seed=args.seed,
        model_kwargs=dict(anchor_scales=tuple(float(v) for v in
                                              args.anchor_scales.split(",")),
                          roi_batch=args.roi_batch, pooled_size=args.pooled_size),
        extra_callbacks=[KeepPrep(), budget_cb], verbose=2)
    timed = sorted(budget_cb.step_seconds[WARMUP_STEPS:]) or [float("nan")]
    summary = {"init_from": args.init_from, "depth": args.depth, "minutes": args.minutes,
               "iterations": budget_cb.steps, "roi_batch": args.roi_batch,
               "shorter_side": args.shorter_side, "batch_size": args.batch_size,
               "seed": args.seed, "policy": args.policy,
               "median_step_seconds": round(timed[len(timed) // 2], 3), "wall_minutes": round((time.time() - t0) / 60, 1),
               "curve": curve, "final": curve[-1] if curve else None,
               "train_results": r["results"]}
    with open(os.path.join(args.out, "bccd_benchmark.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
