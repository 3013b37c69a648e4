"""The paper's Table 9 on BCCD: baseline, + box refinement, + global context,
+ multi-scale testing (and, where available, + multi-scale training), each
as VOC mAP@0.5 and COCO AP@[.5:.95] on the 72 test images, with inference
milliseconds per image and their ratio to the baseline in the same run.

Two detectors are trained on ``voc:BCCD:trainval`` with
``detection.train.train_detector``, the same seed (so the same initial
weights and data order) and the same iterations: one without and one with
global context (context is a training-time option). The test-time options
are read from those same weights (``FasterRCNN.from_config`` of the trained
config with the option switched on, then ``set_weights``), cumulative as in
the paper's table:

    baseline                      trained without context
    + box refinement              the same weights, box_refinement=True
    + context                     trained with context, box_refinement=True
    + multi-scale testing         the same, test_scales=--test-scales
    + multi-scale training        (``--train-scales``) a third training run,
                                  with context and both test-time options

Box refinement (``box_refinement``) and multi-scale training
(``train_detector(train_scales=...)``) are other options; a row whose option
this tree does not have is reported as skipped.

    .venv/bin/python benchmarks/detection_table9.py --out /tmp/table9
    .venv/bin/python benchmarks/detection_table9.py --out /tmp/table9 --iterations 300 \\
        --shorter-side 320 --test-scales 160,240,320,480,640

Milliseconds per image are the wall time of ``detect_split`` over the test
split (decode and preprocessing included) divided by its images, after one
warm-up batch; on a shared CPU compare them only as ratios within one run.
"""

import argparse
import dataclasses
import inspect
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="a folder for the trained detectors")
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--width", type=int, default=16, help="the backbone's first-stage width")
    p.add_argument("--iterations", type=int, default=150, help="training steps per detector")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--shorter-side", type=int, default=240)
    p.add_argument("--max-side", type=int, default=320)
    p.add_argument("--anchor-scales", default="16,32,64,128")
    p.add_argument("--roi-batch", type=int, default=64)
    p.add_argument("--pooled-size", type=int, default=7)
    p.add_argument("--test-scales", default="120,180,240,320,400",
                   help="the multi-scale testing pyramid (shorter sides); the paper's "
                   "200..1000 around its 600 training scale, scaled to --shorter-side")
    p.add_argument("--train-scales",
                   help="also a multi-scale training row: shorter sides sampled per image")
    p.add_argument("--test-images", type=int, help="score only the first N test images")
    p.add_argument("--batching", help="train_detector's batching (e.g. square); default its own")
    p.add_argument("--reuse", action="store_true",
                   help="evaluate detectors already trained under --out instead of "
                   "training them again (e.g. to add --train-scales)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import keras

    from detection.data.sources import open_detection_source
    from detection.evaluate import _to_original, detect_split
    from detection.metrics.coco_map import evaluate_coco
    from detection.metrics.voc_map import evaluate_voc
    from detection.model import FasterRCNN
    from detection.model_dir import load_detector
    from detection.train import train_detector

    root = _harness.shared_data("bccd", "BCCD")
    test = open_detection_source(f"voc:{root}:test").split("eval")
    if args.test_images:
        test = dataclasses.replace(test, annotations=test.annotations[:args.test_images])
    names = ["Platelets", "RBC", "WBC"]
    gts = [{"boxes": a.boxes, "classes": a.classes, "difficult": a.difficult}
           for a in test.annotations]
    has_refinement = "box_refinement" in inspect.signature(FasterRCNN).parameters
    has_train_scales = "train_scales" in inspect.signature(train_detector).parameters

    def train(name, **options):
        keras.utils.set_random_seed(args.seed)  # the same weights and data order
        directory = os.path.join(args.out, name)
        if args.reuse and os.path.exists(os.path.join(directory, "detector.weights.h5")):
            print(f"reusing {directory}", flush=True)
            return directory
        t0 = time.time()
        extra = {"train_scales": options.pop("train_scales")} if "train_scales" in options else {}
        train_detector(
            f"voc:{root}:trainval", directory, depth=args.depth, iterations=args.iterations,
            batch_size=args.batch_size, learning_rate=args.learning_rate,
            warmup_iterations=min(100, args.iterations // 4), shorter_side=args.shorter_side,
            max_side=args.max_side, clipnorm=10.0, seed=args.seed, flip=False, verbose=0,
            **({"batching": args.batching} if args.batching else {}),
            model_kwargs=dict(width=args.width, roi_batch=args.roi_batch,
                              pooled_size=args.pooled_size,
                              anchor_scales=tuple(float(v) for v in
                                                  args.anchor_scales.split(",")),
                              **options), **extra)
        print(f"trained {name}: {args.iterations} iterations in "
              f"{(time.time() - t0) / 60:.1f} min", flush=True)
        return directory

    def evaluate(directory, **options):
        trained, prep, _ = load_detector(directory)
        model = FasterRCNN.from_config({**trained.get_config(), **options}).ensure_built()
        model.set_weights(trained.get_weights())
        detect_split(model, prep, dataclasses.replace(test, annotations=test.annotations[:2]))
        t0 = time.time()
        dets = _to_original(detect_split(model, prep, test, batch_size=2), test.annotations)
        ms = 1000 * (time.time() - t0) / len(gts)
        voc = evaluate_voc(dets, gts, 3, class_names=names)
        coco = evaluate_coco(dets, gts, names, [(a.height, a.width) for a in test.annotations])
        return {"map50": round(voc["mAP"], 4), "coco_AP": round(coco["AP"], 4),
                "ms_per_image": round(ms, 1),
                "per_class_ap50": {k: round(v, 4) for k, v in voc["per_class"].items()}}

    print(f"machine: {_harness.machine_summary()}")
    print(f"settings: {json.dumps(vars(args))}", flush=True)
    t_start = time.time()
    refine = {"box_refinement": True} if has_refinement else {}
    scales = [int(v) for v in args.test_scales.split(",")]
    rows = []

    def row(name, directory, skipped=None, **options):
        if skipped:
            rows.append({"row": name, "skipped": skipped})
        else:
            rows.append({"row": name, **evaluate(directory, **options)})
        print(json.dumps(rows[-1]), flush=True)

    plain = train("baseline")
    context = train("context", global_context=True)
    row("baseline", plain)
    row("+ box refinement", plain, None if has_refinement else "no box_refinement option",
        **refine)
    row("+ context", context, **refine)
    row("+ multi-scale testing", context, test_scales=scales, **refine)
    if args.train_scales:
        if has_train_scales:
            multi = train("context_train_scales", global_context=True, train_scales=tuple(
                int(v) for v in args.train_scales.split(",")))
            row("+ multi-scale training", multi, test_scales=scales, **refine)
        else:
            row("+ multi-scale training", None, "train_detector has no train_scales")
    base_ms = rows[0]["ms_per_image"]
    print(f"\n{'row':<26}{'mAP@0.5':>9}{'COCO AP':>9}{'ms/img':>9}{'x base':>8}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['row']:<26}  skipped: {r['skipped']}")
            continue
        r["time_ratio"] = round(r["ms_per_image"] / base_ms, 2)
        print(f"{r['row']:<26}{r['map50']:>9.4f}{r['coco_AP']:>9.4f}"
              f"{r['ms_per_image']:>9.1f}{r['time_ratio']:>8.2f}")
    summary = {"settings": vars(args), "rows": rows,
               "wall_minutes": round((time.time() - t_start) / 60, 1)}
    with open(os.path.join(args.out, "table9.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
