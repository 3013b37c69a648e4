"""``resnet-tf {train,evaluate,predict} localizer``: wired into the command by
``apps.cli`` through ``add_localizer_commands(tasks)``.

    resnet-tf train localizer --data ilsvrc-loc:PATH[:SPLIT]|synthetic --init-from CLF_DIR --out DIR
    resnet-tf train localizer --stage rcnn --data SPEC --init-from LOC_DIR --out DIR2
    resnet-tf evaluate localizer --model DIR --data SPEC [--stage rpn] [--multiscale]
        [--strict] [--json]
    resnet-tf predict localizer --model DIR IMAGE... [--json] [--draw OUT.png]

``--stage rcnn`` trains the second stage (``localization.rcnn_train``) from
a first-stage directory, whose frozen classifier copy gives the R-CNN's
starting weights; ``evaluate`` and ``predict`` test a second-stage
directory RPN+R-CNN (``--stage rpn``: its first stage alone).

It reuses the shared CLI helpers of ``resnet_tf.cli`` (imports flow
``localization -> resnet_tf``; nothing below imports this module).
"""

import json

from resnet_tf.cli import (add_precision_and_strategy, add_strict, print_predictions,
                           print_trained, print_unreadable, run_options)

DATA_HELP = "ilsvrc-loc:PATH[:train|val] (Kaggle CSVs or ILSVRC XML) or synthetic"


def _floats(text):
    return tuple(float(v) for v in text.split(",") if v.strip())


def add_localizer_commands(tasks):
    """Add ``localizer`` to ``tasks["train"]``, ``tasks["evaluate"]`` and
    ``tasks["predict"]`` (argparse sub-parser actions)."""
    p = tasks["train"].add_parser(
        "localizer", help="fine-tune the paper's per-class RPN localizer with model.fit",
        description="Fine-tune a per-class RPN (Appendix C: C logistic outputs and C x 4 "
        "box regressors per anchor) from a classifier directory, on random crops of "
        "the classifier's training augmentation, sampling 8 anchors per image (1:1), "
        "and write a localizer directory.")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--init-from", required=True,
                   help="a resnet-tf classifier directory (--stage rpn) or a first-stage "
                   "localizer directory (--stage rcnn)")
    p.add_argument("--out", required=True)
    p.add_argument("--stage", choices=["rpn", "rcnn"], default="rpn",
                   help="rpn: the per-class RPN (default); rcnn: the R-CNN second stage "
                   "on the first stage's proposals (Appendix C, Table 13)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch-size", type=int, default=256,
                   help="images per step (default 256, the paper's)")
    p.add_argument("--learning-rate", type=float, default=0.001)
    p.add_argument("--feature-level", choices=["C2", "C3", "C4", "C5"],
                   help="the trunk output the head sits on (default: the last stage)")
    p.add_argument("--anchor-scales", default="64,128,256",
                   help="anchor sizes in pixels (sqrt of area)")
    p.add_argument("--anchor-ratios", default="0.5,1,2", help="anchor heights / widths")
    p.add_argument("--head-channels", type=int, default=512,
                   help="the head's 3x3 conv width; 0 for none")
    p.add_argument("--anchors-per-image", type=int, default=8)
    g = p.add_argument_group("second stage (--stage rcnn)")
    g.add_argument("--num-proposals", type=int, default=200,
                   help="first-stage boxes kept per image and rescored per class (200)")
    g.add_argument("--warp-size", type=int,
                   help="regions are warped to this side (default: the classifier's crop "
                   "size, 224 for ImageNet nets)")
    g.add_argument("--regions-per-image", type=int, default=32,
                   help="regions sampled from an image each time it is drawn (32)")
    g.add_argument("--positive-fraction", type=float, default=0.25,
                   help="the most of them foreground (0.25, R-CNN's 32 of 128)")
    g.add_argument("--fg-iou", type=float, default=0.5,
                   help="foreground at IoU >= this with a ground-truth box (0.5)")
    g.add_argument("--bg-iou", type=float, default=0.5,
                   help="background below this IoU; between the two: ignored (0.5)")
    add_precision_and_strategy(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic-train", type=int, default=600)
    p.add_argument("--synthetic-eval", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_train_localizer)

    p = tasks["evaluate"].add_parser(
        "localizer", help="ILSVRC top-1/top-5 localization error, oracle error",
        description="Top-1 and top-5 localization error (class right and IoU >= 0.5), "
        "the error with the ground-truth class (oracle) and the classification error "
        "of the same guesses, testing each whole image fully convolutionally.")
    p.add_argument("--model", required=True, help="a localizer directory")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--multiscale", action="store_true",
                   help="dense testing at the classifier's multi-scale shorter sides")
    p.add_argument("--scales", help="test shorter sides, e.g. 224,384 (overrides)")
    p.add_argument("--flip", action="store_true", help="also test mirrored views")
    p.add_argument("--top-k", type=int, default=5)
    add_stage_options(p)
    p.add_argument("--max-images", type=int)
    p.add_argument("--synthetic-eval", type=int, default=200)
    p.add_argument("--json", action="store_true")
    add_strict(p, "they count as misses at every k")
    p.set_defaults(func=run_evaluate_localizer)

    p = tasks["predict"].add_parser("localizer", help="top-k classes and their boxes")
    p.add_argument("--model", required=True, help="a localizer directory")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--multiscale", action="store_true")
    add_stage_options(p)
    p.add_argument("--draw", help="write the (first) image with its top guess's box to "
                   "this PNG; with several images, NAME-0.png, NAME-1.png, ...")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_predict_localizer)


def add_stage_options(p):
    p.add_argument("--stage", choices=["rpn", "rcnn"],
                   help="test a two-stage directory's first stage alone (rpn); default: "
                   "every stage the directory has")
    p.add_argument("--num-proposals", type=int,
                   help="boxes per class the second stage rescores (default: the "
                   "directory's)")


def run_train_localizer(args):
    if args.stage == "rcnn":
        from localization.rcnn_train import train_rcnn_localizer

        r = train_rcnn_localizer(args.data, args.out, num_proposals=args.num_proposals,
                                 warp_size=args.warp_size,
                                 regions_per_image=args.regions_per_image,
                                 positive_fraction=args.positive_fraction,
                                 fg_iou=args.fg_iou, bg_iou=args.bg_iou, **run_options(args))
        return print_trained(args, "Two-stage localizer", r["results"])
    from localization.train import train_localizer

    r = train_localizer(args.data, args.out, feature_level=args.feature_level,
                        anchor_scales=_floats(args.anchor_scales),
                        anchor_ratios=_floats(args.anchor_ratios),
                        head_channels=args.head_channels,
                        anchors_per_image=args.anchors_per_image, **run_options(args))
    return print_trained(args, "Localizer", r["results"])


def run_evaluate_localizer(args):
    from localization.evaluate import evaluate_localizer

    scales = [int(v) for v in _floats(args.scales)] if args.scales else None
    r = evaluate_localizer(args.model, args.data, multiscale=args.multiscale, scales=scales,
                           flip=args.flip, top_k=args.top_k, max_images=args.max_images,
                           synthetic_eval=args.synthetic_eval, strict=args.strict,
                           stage=args.stage, num_proposals=args.num_proposals)
    if args.json:
        print(json.dumps(r))
        return 0
    k = args.top_k
    stage = ("RPN+R-CNN, " + f"{r['num_proposals']} proposals per class"
             if r["stage"] == "rcnn" else "RPN")
    print(f"{r['data']} [{r['split']}], {r['images']} images, scales {r['scales']}"
          + (" + flips" if r["flip"] else "") + f", {stage}, "
          f"{1000 * r['seconds_per_image']:.0f} ms/img")
    print(f"  localization error: top-1 {100 * r['top1_loc_error']:.2f}%, top-{k} "
          f"{100 * r[f'top{k}_loc_error']:.2f}%, oracle (ground-truth class) "
          f"{100 * r['oracle_loc_error']:.2f}%")
    print(f"  classification error of the same guesses: top-1 "
          f"{100 * r['top1_cls_error']:.2f}%, top-{k} {100 * r[f'top{k}_cls_error']:.2f}%")
    print_unreadable(r, f"counted as misses, with their {r['unreadable_objects']} boxes; "
                     "over the readable images alone: top-1 localization error "
                     f"{100 * r['top1_loc_error_readable']:.2f}%")
    return 0


def run_predict_localizer(args):
    from localization.evaluate import draw_localizations, predict_localizer

    rows = predict_localizer(args.model, args.images, multiscale=args.multiscale,
                             top_k=args.top_k, stage=args.stage,
                             num_proposals=args.num_proposals)

    def print_row(row):
        for p in row["predictions"]:
            print(f"  {p['probability']:7.2%}  {p['name']:<25} box {p['box']} "
                  f"(score {p['score']:.3f})")

    return print_predictions(
        args, rows, print_row, draw=lambda row, out: draw_localizations(row["path"], row, out))
