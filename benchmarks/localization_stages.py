"""Localization, Table 13 in small: the per-class RPN alone against RPN+R-CNN
on the same held-out ILSVRC images, with the same weights for the first
stage and the same class guesses.

Data: ``../shared/data/imagenet-val-loc`` (100 ILSVRC 2012 validation
images with boxes), split by the localization loader's ``val_fraction``
rule (the lowest CRC-32 of the ImageId held out): 80 images train both
stages, 20 are tested. CPU-sized: a ResNet-18 of width 8 (ImageNet family,
1000 classes, random initialisation: there is no ImageNet-trained
classifier here, so the class guesses are chance and the top-1 / top-5
columns sit near 100%; the oracle column, with the ground-truth class
given, is the one that measures the boxes), test shorter side 64, the
first stage at C4 (stride 16), BN trained (no ImageNet statistics to
keep), the second stage on 64 x 64 warps of the first stage's top
``--proposals`` boxes.

    .venv/bin/python benchmarks/localization_stages.py
    .venv/bin/python benchmarks/localization_stages.py --rpn-steps 300 --rcnn-steps 300
    .venv/bin/python benchmarks/localization_stages.py --data synthetic

Time per image: one tester's second pass over the held-out images, decoded
beforehand (the first pass traces the graphs), top-5 classes, one process.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _harness  # noqa: E402

DATA = os.environ.get("RESNET_TF_DATA") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
VAL_FRACTION = 0.2
SIDE = 64


def classifier_dir(directory, wnids, seed):
    import keras
    import numpy as np

    import resnet_tf
    from resnet_tf import model_dir
    from resnet_tf.data.preprocessing import Preprocessing

    keras.utils.set_random_seed(seed)
    clf = resnet_tf.ResNet(18, width=8, classes=len(wnids), input_shape=(None, None, 3))
    prep = Preprocessing.for_style("imagenet", crop_size=SIDE, eval_resize=72,
                                   scale_range=(72, 96))
    mean = np.broadcast_to(np.float32([123.7, 116.3, 103.5]), (SIDE, SIDE, 3)).copy()
    model_dir.save_classifier(directory, clf, wnids, mean, prep)
    return directory


def seconds_per_image(directory, spec, stage, source):
    """Testing time per held-out image (decoded beforehand), one tester,
    the second pass over the images (the first traces the graphs)."""
    from localization.data.pipeline import test_examples
    from localization.data.sources import open_localization_source
    from localization.evaluate import make_tester

    tester, meta = make_tester(directory, stage=stage)
    split = open_localization_source(spec, class_names=meta["class_names"],
                                     **source).split("eval")
    images = [e["image"] for e in test_examples(split.annotations, images=split.images)]
    tester.many(images)
    t = time.perf_counter()
    tester.many(images)
    return (time.perf_counter() - t) / len(images)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rpn-steps", type=int, default=200)
    p.add_argument("--rcnn-steps", type=int, default=200)
    p.add_argument("--proposals", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", choices=["ilsvrc", "synthetic"], default="ilsvrc",
                   help="ilsvrc: the 100 real images (default); synthetic: the embedded "
                   "shapes set (600 training, 200 test images), with a trained classifier")
    p.add_argument("--out", help="keep the model directories here (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from localization.evaluate import evaluate_localizer
    from localization.rcnn_train import train_rcnn_localizer
    from localization.train import train_localizer

    work = args.out or tempfile.mkdtemp(prefix="loc_stages_")
    loc, two = os.path.join(work, "rpn"), os.path.join(work, "rcnn")
    if args.data == "synthetic":
        from resnet_tf.train import train_classifier

        spec, source = "synthetic", {"synthetic_train": 600, "synthetic_eval": 200}
        clf = os.path.join(work, "clf")
        train_classifier("synthetic", clf, model="resnet8", recipe="cifar", epochs=4,
                         batch_size=32, learning_rate=0.1, verbose=0, seed=args.seed,
                         **source)
        stage1 = dict(batch_size=32, learning_rate=0.05, anchor_scales=(10, 16, 24),
                      anchor_ratios=(1.0,), head_channels=32)
        stage2 = dict(warp_size=32, learning_rate=0.05)
        what = "synthetic shapes (6 classes, 32 x 32), ResNet-8 classifier trained 4 epochs"
    else:
        root = os.path.join(DATA, "imagenet-val-loc")
        if not os.path.isdir(root):
            raise SystemExit(f"{root}: not found (set RESNET_TF_DATA to the shared data "
                             "folder).")
        spec, source = f"ilsvrc-loc:{root}", {"val_fraction": VAL_FRACTION}
        wnids = [line.split()[0] for line in
                 open(os.path.join(root, "LOC_synset_mapping.txt"))]
        clf = classifier_dir(os.path.join(work, "clf"), wnids, args.seed)
        bn = {"model_kwargs": {"frozen_bn": False}}
        stage1 = dict(batch_size=16, learning_rate=0.01, feature_level="C4",
                      anchor_scales=(16, 32, 56), head_channels=32, **bn)
        stage2 = dict(learning_rate=0.01, **bn)
        what = (f"val_fraction {VAL_FRACTION}; ResNet-18 width 8, 1000 classes, random "
                f"init; shorter side {SIDE}")
    t0 = time.time()
    train_localizer(spec, loc, init_from=clf, iterations=args.rpn_steps, seed=args.seed,
                    verbose=0, **stage1, **source)
    t1 = time.time()
    r2 = train_rcnn_localizer(spec, two, init_from=loc, num_proposals=args.proposals,
                              iterations=args.rcnn_steps, batch_size=64,
                              regions_per_image=16, seed=args.seed, verbose=0, **stage2,
                              **source)
    t2 = time.time()
    rows = {}
    for stage in ("rpn", "rcnn"):
        rows[stage] = evaluate_localizer(two, spec, stage=stage, **source)
        rows[stage]["seconds_per_image"] = seconds_per_image(two, spec, stage, source)
    print(f"machine: {_harness.machine_summary()}")
    print(f"data: {spec}, {what}: {rows['rpn']['images']} held-out images tested; "
          f"first stage {args.rpn_steps} steps of {stage1['batch_size']} images "
          f"({t1 - t0:.0f} s), "
          f"second stage {args.rcnn_steps} steps of 64 regions ({t2 - t1:.0f} s, "
          f"{args.proposals} proposals per image; training proposals: top box IoU >= 0.5 "
          f"on {r2['results']['proposals']['top1_recall']:.1%} of images, any box on "
          f"{r2['results']['proposals']['recall']:.1%})")
    print()
    print("| method | top-1 loc err | top-5 loc err | oracle loc err | ms/img |")
    print("|---|---|---|---|---|")
    names = {"rpn": "RPN alone", "rcnn": f"RPN+R-CNN ({args.proposals} boxes per class)"}
    for stage, r in rows.items():
        print(f"| {names[stage]} | {100 * r['top1_loc_error']:.1f}% | "
              f"{100 * r['top5_loc_error']:.1f}% | {100 * r['oracle_loc_error']:.1f}% | "
              f"{1000 * r['seconds_per_image']:.0f} |")
    if args.json:
        print(json.dumps({s: {k: r[k] for k in ("top1_loc_error", "top5_loc_error",
                                                 "oracle_loc_error", "seconds_per_image",
                                                 "images")} for s, r in rows.items()}))


if __name__ == "__main__":
    main()
