"""``resnet-tf {train,evaluate,predict} detector``: wired into the command by
``apps.cli`` through ``add_detector_commands(tasks)``.

    resnet-tf train detector --data voc:|coco:|tfds:|synthetic [--init-from DIR] --out DIR
    resnet-tf evaluate detector --model DIR --data SPEC [--strict] [--json]
    resnet-tf predict detector --model DIR IMAGE... [--json] [--draw OUT.png]

The work happens in ``detection.train.train_detector`` and
``detection.evaluate``; these functions only parse flags and print.
"""

import argparse
import json

from resnet_tf.cli import (add_data_options, add_precision_and_strategy, add_strict,
                           print_predictions, print_trained, print_unreadable,
                           run_options)

DETECTION_DATA = ("voc:PATH[:SPLIT], coco:PATH[:SPLIT], tfds:NAME[:SPLIT] (voc/2007, "
                  "voc/2012, coco/2017) or synthetic")


def int_list(text):
    """argparse type: "400,500,600" -> (400, 500, 600); anything else is a
    usage error naming the value."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of positive integers "
            f"(pixels), e.g. 400,500,600")
    return values


def add_detector_commands(tasks):
    """Add ``detector`` to ``tasks["train"]``, ``tasks["evaluate"]`` and
    ``tasks["predict"]`` (argparse sub-parser actions)."""
    p = tasks["train"].add_parser(
        "detector", help="fine-tune Faster R-CNN (ResNet C4) with model.fit",
        description="Train Faster R-CNN in the paper's C4 layout and write a "
        "detector directory. --init-from a classifier directory carries conv1..conv4 "
        "into the trunk and conv5 into the RoI head, with frozen BN; without it the "
        "detector trains from scratch with trainable BN.")
    p.add_argument("--data", required=True, help=DETECTION_DATA)
    add_data_options(p)
    p.add_argument("--out", required=True)
    p.add_argument("--init-from", help="a resnet-tf classifier directory")
    p.add_argument("--depth", type=int, default=50,
                   help="backbone depth without --init-from (default 50)")
    p.add_argument("--width", type=int,
                   help="backbone first-stage width without --init-from (default 64)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=0.001)
    p.add_argument("--shorter-side", type=int, default=600)
    p.add_argument("--max-side", type=int, default=1000)
    p.add_argument("--train-scales", type=int_list,
                   help="multi-scale training: shorter sides drawn at random per image, "
                   "e.g. 480,576,688,864,1000 (default: --shorter-side only); evaluation "
                   "uses --shorter-side")
    p.add_argument("--batching", choices=["grouped", "square"], default="grouped",
                   help="grouped (default): batches of one aspect ratio, padded to their "
                   "bucket's canvas; square: every image padded to a --max-side square")
    p.add_argument("--anchor-scales", default="128,256,512",
                   help="anchor sizes in pixels (sqrt of area), e.g. 32,64,128 for "
                   "small objects")
    p.add_argument("--rpn-batch", type=int, default=256, help="anchors sampled per image")
    p.add_argument("--roi-batch", type=int, default=128,
                   help="RoIs sampled per image, a quarter foreground at most (default "
                   "128: the original Faster R-CNN code's TRAIN.BATCH_SIZE; 512: "
                   "detectron2's and torchvision's, about 4x the per-RoI head work)")
    p.add_argument("--pooled-size", type=int, default=14, help="RoI pooling output side")
    p.add_argument("--pooler", choices=["align", "pool"], default="align")
    p.add_argument("--global-context", action="store_true",
                   help="global context (the paper's Appendix B): the whole image pooled as "
                   "one more RoI through conv5_x, its feature joined to each region's "
                   "before the class and box layers; trained with it")
    p.add_argument("--test-scales",
                   help="multi-scale testing (Appendix B): shorter sides of the test-time "
                   "image pyramid, e.g. 200,400,600,800,1000; each RoI is read at the two "
                   "adjacent scales nearest 224x224 and merged by maxout; proposals stay "
                   "single-scale; stored in the model, so evaluate, predict and export use it")
    p.add_argument("--scale-target", type=float, default=224,
                   help="with --test-scales: the side in pixels whose square each RoI's "
                   "area is brought nearest to when choosing its two scales (default 224, "
                   "the paper's 224x224 training crops); set it near your objects' "
                   "training size")
    p.add_argument("--box-refinement", action="store_true",
                   help="test-time box refinement with box voting (the paper's Appendix B): "
                   "a second head pass on the regressed boxes, NMS at 0.3 over both "
                   "passes, voting at IoU 0.5; stored in the model, so evaluate, predict "
                   "and export use it (about one more RoI-head pass per image)")
    add_precision_and_strategy(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true",
                   help="fixed seeds and deterministic TF ops (slower)")
    p.add_argument("--synthetic-train", type=int, default=64)
    p.add_argument("--synthetic-eval", type=int, default=16)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_train_detector)

    p = tasks["evaluate"].add_parser("detector", help="VOC mAP@0.5 and COCO AP")
    p.add_argument("--model", required=True, help="a detector directory")
    p.add_argument("--data", required=True, help=DETECTION_DATA)
    add_data_options(p)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--synthetic-eval", type=int, default=16)
    p.add_argument("--max-images", type=int, default=None,
                   help="evaluate the first N images of the split only (a quick check; "
                   "the cut is printed)")
    p.add_argument("--json", action="store_true")
    add_strict(p, "their objects count as missed")
    p.set_defaults(func=run_evaluate_detector)

    p = tasks["predict"].add_parser("detector", help="boxes, class names and scores")
    p.add_argument("--model", required=True, help="a detector directory")
    p.add_argument("images", nargs="+")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="print and draw detections at least this confident")
    p.add_argument("--draw", help="write the (first) image with its boxes to this PNG; "
                   "with several images, NAME-0.png, NAME-1.png, ...")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_predict_detector)


def run_train_detector(args):
    from detection.train import train_detector

    r = train_detector(args.data, args.out, depth=args.depth,
                       shorter_side=args.shorter_side, max_side=args.max_side,
                       train_scales=args.train_scales,
                       batching=args.batching,
                       deterministic=args.deterministic, data_dir=args.data_dir,
                       manual_dir=args.manual_dir, download=args.download,
                       model_kwargs=dict(
                           anchor_scales=tuple(float(v) for v in
                                               args.anchor_scales.split(",")),
                           rpn_batch=args.rpn_batch, roi_batch=args.roi_batch,
                           pooled_size=args.pooled_size, pooler=args.pooler,
                           box_refinement=args.box_refinement,
                           global_context=args.global_context,
                           test_scales=args.test_scales or None,
                           scale_target=args.scale_target,
                           **({"width": args.width} if args.width else {})),
                       **run_options(args))
    return print_trained(args, "Detector", r["results"])


def run_evaluate_detector(args):
    from detection.evaluate import evaluate_detector

    r = evaluate_detector(args.model, args.data, batch_size=args.batch_size,
                          max_images=args.max_images,
                          synthetic_eval=args.synthetic_eval, data_dir=args.data_dir,
                          manual_dir=args.manual_dir, download=args.download,
                          strict=args.strict)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['data']} [{r['split']}], {r['images']} images")
    for name, ap in r["per_class_ap50"].items():
        print(f"  {name:<20} AP@0.5 {ap:.4f}")
    print(f"VOC mAP@0.5: {r['voc_map50']:.4f} (all points), {r['voc07_map50']:.4f} "
          f"(VOC2007 11-point)")
    c = r["coco"]
    print(f"COCO AP@[.5:.95] {c['AP']:.4f}  AP50 {c['AP50']:.4f}  AP75 {c['AP75']:.4f}  "
          f"APs {c['APs']:.4f}  APm {c['APm']:.4f}  APl {c['APl']:.4f}  "
          f"(maxDets {c['max_dets']})")
    if args.max_images and r["max_images"]["of"] > r["images"]:
        print(f"Capped: --max-images evaluated the first {r['images']} of "
              f"{r['max_images']['of']} images.")
    cap = r["detections_capped"]
    print(f"Capped: detections {cap['images']}/{cap['of']} images filled max_detections="
          f"{cap['limit']}" + (" (some detections may be lost; raise max_detections)"
                               if cap["images"] else "") + ".")
    print_unreadable(r, f"their {r['unreadable_objects']} objects counted as missed; "
                     f"VOC mAP@0.5 over the readable images alone: "
                     f"{r.get('voc_map50_readable', float('nan')):.4f}")
    return 0


def run_predict_detector(args):
    from detection.evaluate import draw_detections, predict_detector

    rows = predict_detector(args.model, args.images)

    def print_row(row):
        for box, name, score in zip(row["boxes"], row["names"], row["scores"]):
            if score >= args.min_score:
                print(f"  {score:6.2%}  {name:<15} {box}")

    return print_predictions(
        args, rows, print_row,
        draw=lambda row, out: draw_detections(row["path"], row, out, args.min_score))
