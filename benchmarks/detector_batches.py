"""Faster R-CNN (C4) on BCCD: square padding against aspect-ratio grouped
batches (issue 21 part 3), in one run.

``square`` pads every image to the ``max_side`` square (1008 x 1008 at
600/1000); ``grouped`` batches images of one aspect ratio on their bucket's
canvas (BCCD's 640 x 480 photos at shorter side 600: 608 x 800). Everything
else is the same: the BCCD trainval images, ``make_detection_dataset``
(batch 2), the default ``FasterRCNN`` (from scratch, trainable BN) at
shorter side 600.

- training img/s: ``train_on_batch`` on batches drawn from the training
  pipeline (drawn before the clock starts: the network's time, not the
  JPEG decoding's), after one warm-up step;
- inference ms/img: the evaluation path's compiled model
  (``resnet_tf.evaluate.inference_function``) on evaluation batches, after
  one warm-up batch.

Each (mode, measure, model, precision) runs in its own process, the two
modes alternating (``_harness.alternate``); the table gives the medians and
the ratio grouped / square (> 1: grouped is faster).

    .venv/bin/python benchmarks/detector_batches.py
    .venv/bin/python benchmarks/detector_batches.py --depths 18 --policies float32 \\
        --steps 3 --repeats 2
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

MODES = ("square", "grouped")


def child(args):
    import keras
    import numpy as np

    from detection.data.pipeline import DetectionPreprocessing, make_detection_dataset
    from detection.data.sources import open_detection_source
    from detection.model import FasterRCNN
    from resnet_tf.evaluate import inference_function

    keras.config.set_dtype_policy(args.policy)
    keras.utils.set_random_seed(0)
    src = open_detection_source(f"voc:{_harness.shared_data('bccd', 'BCCD')}:trainval")
    anns = src.split("train").annotations
    prep = DetectionPreprocessing(args.shorter_side, args.max_side, batching=args.mode)
    model = FasterRCNN(len(src.class_names), depth=args.depth, class_names=src.class_names,
                       frozen_bn=False, freeze_at=0)
    model.ensure_built()
    n = args.steps + 1
    if args.measure == "train":
        model.compile(keras.optimizers.SGD(0.001, momentum=0.9))
        ds = make_detection_dataset(anns, prep, training=True, batch_size=args.batch_size,
                                    repeat=True, stride=model.feature_stride)
        batches = list(ds.take(n))
        model.train_on_batch(*batches[0])
        t0 = time.perf_counter()
        for x, y in batches[1:]:
            loss = model.train_on_batch(x, y)
        sec = time.perf_counter() - t0
        value, unit = args.steps * args.batch_size / sec, "img/s"
        extra = {"loss": float(np.ravel(loss)[0])}
    else:
        ds = make_detection_dataset(anns[:n * args.batch_size], prep, training=False,
                                    batch_size=args.batch_size, stride=model.feature_stride)
        batches = [x for x, _ in ds.take(n)]
        run = inference_function(model)
        run(batches[0])["num_detections"].numpy()
        t0 = time.perf_counter()
        for x in batches[1:]:
            run(x)["num_detections"].numpy()
        sec = time.perf_counter() - t0
        value, unit = 1000 * sec / (args.steps * args.batch_size), "ms/img"
        extra = {}
    shapes = sorted({tuple(int(v) for v in b["images"].shape[1:3]) if isinstance(b, dict)
                     else tuple(int(v) for v in b[0]["images"].shape[1:3]) for b in batches})
    print(json.dumps({"value": value, "unit": unit, "canvases": shapes, **extra}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=MODES, default="grouped")
    p.add_argument("--measure", choices=["train", "infer"], default="train")
    p.add_argument("--policy", default="float32")
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--depths", default="18,50")
    p.add_argument("--policies", default="float32,mixed_bfloat16")
    p.add_argument("--measures", default="train,infer")
    p.add_argument("--shorter-side", type=int, default=600)
    p.add_argument("--max-side", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    depths = [int(d) for d in args.depths.split(",")]
    policies = args.policies.split(",")
    measures = args.measures.split(",")
    print(f"machine: {_harness.machine_summary()}; load average {os.getloadavg()}")
    print(f"BCCD trainval, shorter side {args.shorter_side}, max side {args.max_side}, "
          f"batch {args.batch_size}, {args.steps} timed steps after 1 warm-up, "
          f"{args.repeats} repetition(s), modes alternating, median reported")
    settings = [f"{m}:{d}:{pol}" for pol in policies for d in depths for m in measures]

    def make_args(mode, setting):
        measure, depth, policy = setting.split(":")
        return ["--mode", mode, "--measure", measure, "--depth", depth, "--policy", policy,
                "--shorter-side", str(args.shorter_side), "--max-side", str(args.max_side),
                "--batch-size", str(args.batch_size), "--steps", str(args.steps)]

    results = _harness.alternate(__file__, list(MODES), settings, args.repeats, make_args)
    print(f"load average after: {os.getloadavg()}")
    print()
    print("| model | policy | measure | square | grouped | grouped / square speed |")
    print("|---|---|---|---|---|---|")
    for setting in settings:
        measure, depth, policy = setting.split(":")
        sq = _harness.median(results, (setting, "square"))
        gr = _harness.median(results, (setting, "grouped"))
        unit = results[(setting, "square")][0]["unit"]
        canv = [results[(setting, m)][0]["canvases"] for m in MODES]
        ratio = gr / sq if measure == "train" else sq / gr
        print(f"| ResNet-{depth}-C4 | {policy} | {measure} | {sq:.3f} {unit} "
              f"{canv[0]} | {gr:.3f} {unit} {canv[1]} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
