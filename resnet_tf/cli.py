"""The ``resnet-tf`` command line.

    resnet-tf models [NAME ...] [--shortcuts A,B,C] [--json]
    resnet-tf import classifier --from keras-applications|torchvision|timm|keras-hub PATH --out DIR
    resnet-tf train classifier --config cifar|imagenet --model resnet20 --data SPEC --out DIR
    resnet-tf evaluate classifier --model DIR --data SPEC [--crops center|10|multiscale] [--strict]
    resnet-tf predict classifier --model DIR IMAGE... [--json]
    resnet-tf train detector --data voc:|coco:|tfds:|synthetic [--init-from DIR] --out DIR
    resnet-tf evaluate detector --model DIR --data SPEC [--strict] [--json]
    resnet-tf predict detector --model DIR IMAGE... [--json] [--draw OUT.png]
    resnet-tf train localizer --data ilsvrc-loc:PATH[:SPLIT]|synthetic --init-from DIR --out DIR
    resnet-tf evaluate localizer --model DIR --data SPEC [--multiscale] [--strict] [--json]
    resnet-tf predict localizer --model DIR IMAGE... [--json] [--draw OUT.png]
    resnet-tf export classifier --model DIR --out BASE [--version N] [--json]
    resnet-tf export detector --model DIR --out BASE [--version N] [--json]
    resnet-tf export localizer --model DIR --out BASE [--version N] [--json]
    resnet-tf demo [--out DIR] [--quick] [--json]

Each subcommand family is one ``add_*`` function; the work happens in
library functions (``train.train_classifier``, ``evaluate.*``) that tests
and notebooks call directly.
"""

import argparse
import json
import sys


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except ValueError as e:
        print(f"resnet-tf: error: {e}", file=sys.stderr)
        return 2


def build_parser():
    parser = argparse.ArgumentParser(
        prog="resnet-tf",
        description="ResNets of He et al. (2015) in Keras 3: models, training, "
        "detection, localization, export.",
    )
    from resnet_tf import __version__, export

    parser.add_argument("--version", action="version", version=__version__)
    # Read when the command starts, before TensorFlow is imported
    # (resnet_tf/__init__.py); listed here for --help and parsing.
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ log lines (oneDNN banners, grappler "
                        "notes), hidden by default; TF_CPP_MIN_LOG_LEVEL, if you set "
                        "it, is respected (0 shows them all)")
    sub = parser.add_subparsers(title="commands")
    add_models(sub)
    tasks = {verb: _task_parser(sub, verb, f"{verb} a model")
             for verb in ("train", "evaluate", "predict", "export")}
    add_import(_task_parser(sub, "import", "import weights you already have"))
    add_train(tasks["train"])
    add_evaluate(tasks["evaluate"])
    add_predict(tasks["predict"])
    add_detector_commands(tasks)
    from localization.cli import add_localizer_commands  # here: localization imports resnet_tf

    add_localizer_commands(tasks)
    export.add_export_commands(tasks)
    __import__("resnet_tf.demo").demo.add_demo_command(sub)
    return parser


def _task_parser(sub, verb, help_text):
    p = sub.add_parser(verb, help=help_text)
    return p.add_subparsers(title="what", dest="task", required=True)


def add_precision_and_strategy(p):
    """``--precision`` (Keras dtype policy), ``--strategy`` (tf.distribute),
    ``--auto-shard`` and ``--backup-every``, shared by every ``train`` command."""
    p.add_argument("--precision", "--policy", dest="policy", default="float32",
                   choices=["float32", "mixed_bfloat16", "mixed_float16"],
                   help="float32 (default; the fastest on CPUs without AMX), "
                   "mixed_bfloat16 (GPUs, TPUs, CPUs with AMX), mixed_float16 (GPUs)")
    p.add_argument("--strategy", choices=["default", "mirrored", "multiworker"],
                   help="mirrored: all local GPUs; multiworker: the machines of "
                   "TF_CONFIG. --batch-size is the global batch")
    p.add_argument("--auto-shard", default="data", choices=["data", "file", "off", "auto"],
                   help="how multiworker runs split the data (default data: every "
                   "worker reads all, keeps its share of each global batch)")
    p.add_argument("--backup-every", type=int,
                   help="back up the run every this many steps and at epoch ends "
                   "(default: every 5 minutes; multiworker: four times an epoch); "
                   "re-running the command resumes from the last backup")


def numbered_path(path, index, count):
    """``--draw OUT.png`` for image ``index`` of ``count``: OUT.png for one
    image, OUT-0.png, OUT-1.png, ... for several."""
    return path if count == 1 else path.replace(".png", f"-{index}.png")


def _data_options(p):
    p.add_argument("--data-dir", help="TFDS data_dir (where prepared datasets live)")
    p.add_argument("--manual-dir", help="TFDS manual_dir (e.g. the ImageNet tar files)")
    p.add_argument("--download", action="store_true",
                   help="let TFDS download and prepare a missing dataset (off by default)")


# --- resnet-tf import classifier --------------------------------------------


def add_import(tasks):
    from resnet_tf.weights.importer import SOURCES

    p = tasks.add_parser(
        "classifier", help="ImageNet weights you have -> a classifier directory",
        description="Read a keras.applications (.h5 weights, .keras/.h5 model), "
        "torchvision (.pth), timm (.safetensors/.pth) or keras-hub (preset folder) "
        "ResNet and write a classifier directory that takes resnet-tf's input (the "
        "source's BGR/mean/std convention is folded into conv1). evaluate, predict, "
        "export and --init-from of train detector/localizer take it unchanged.")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES,
                   help="the framework that wrote the file")
    p.add_argument("path", help="the weight file (keras-hub: the preset folder)")
    p.add_argument("--out", required=True, help="the classifier directory to write")
    p.add_argument("--class-index", help="class names: imagenet_class_index.json (Keras) "
                   "or LOC_synset_mapping.txt; without it names are numbered")
    p.add_argument("--classes", type=int, help="class count for a file without its top "
                   "layer (a new top is initialised randomly)")
    p.add_argument("--depth", type=int, help="check that the file holds this depth")
    p.add_argument("--seed", type=int, default=0, help="seed of a new top layer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_import_classifier)


def run_import_classifier(args):
    from resnet_tf.weights.importer import import_classifier

    info = import_classifier(args.source, args.path, args.out, class_index=args.class_index,
                             classes=args.classes, depth=args.depth, seed=args.seed)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    lay = info["layout"]
    print(f"Imported {info['source']} ResNet-{info['depth']} from {info['file']} "
          f"(stride on the {lay['stride_on']}, conv bias {lay['conv_bias']}, BN epsilon "
          f"{lay['bn_epsilon']:g}) into {info['directory']} in {info['seconds']:.1f} s.")
    print(f"Input convention folded into conv1: {info['convention']['description']}.")
    print(f"Classes: {info['classes']}, names {info['class_names_from']}; top layer "
          f"{info['top']}.")
    return 0


# --- resnet-tf train classifier ---------------------------------------------


def add_train(tasks):
    p = tasks.add_parser(
        "classifier", help="train a ResNet classifier with model.fit",
        description="Train a classifier with one of the paper's recipes and write "
        "a model directory (model.keras, resnet_tf.json, mean_image.npy, "
        "checkpoints/, logs/, history.csv). Re-running the same command resumes "
        "an interrupted run.")
    p.add_argument("--config", default="cifar", choices=["cifar", "imagenet"],
                   help="the training recipe (default cifar)")
    p.add_argument("--model", default="resnet20",
                   help="architecture, e.g. resnet20, plain56, resnet50 (default resnet20)")
    p.add_argument("--data", required=True,
                   help="tfds:NAME[:SPLIT], folder:PATH or synthetic")
    p.add_argument("--val-data", help="a separate data spec for validation")
    p.add_argument("--val-fraction", type=float,
                   help="hold out this fraction of the training data for validation")
    p.add_argument("--out", required=True, help="the model directory to write")
    p.add_argument("--epochs", type=int, help="train this many epochs")
    p.add_argument("--iterations", type=int,
                   help="train this many iterations (default: the recipe's full run)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float,
                   help="default: the recipe's, scaled by batch size")
    add_precision_and_strategy(p)
    p.add_argument("--step-epochs", help="divide the learning rate by 10 at these "
                   "epochs, e.g. 30,60 (instead of the recipe's schedule)")
    p.add_argument("--clipnorm", type=float, help="clip gradients to this global norm")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--shortcut", choices=["A", "B", "C"])
    p.add_argument("--width", type=int,
                   help="first-stage width, doubled per stage (default the paper's: "
                   "64 ImageNet, 16 CIFAR); e.g. 16 for a quick ResNet-18")
    p.add_argument("--stride-on", choices=["1x1", "3x3"])
    p.add_argument("--zero-init-residual", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true",
                   help="fixed seeds and order (slower input pipeline)")
    p.add_argument("--no-cache", action="store_true",
                   help="never cache decoded images in memory")
    p.add_argument("--mean-images", type=int,
                   help="compute the mean image over at most this many images")
    p.add_argument("--synthetic-size", type=int, default=32)
    p.add_argument("--synthetic-train", type=int, default=2000)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _data_options(p)
    p.set_defaults(func=run_train_classifier)


def run_train_classifier(args):
    from resnet_tf.train import train_classifier

    model_kwargs = {}
    if args.shortcut:
        model_kwargs["shortcut"] = args.shortcut
    if args.stride_on:
        model_kwargs["stride_on"] = args.stride_on
    if args.width:
        model_kwargs["width"] = args.width
    if args.zero_init_residual:
        model_kwargs["zero_init_residual"] = True
    result = train_classifier(
        args.data, args.out, model=args.model, recipe=args.config,
        epochs=args.epochs, iterations=args.iterations, batch_size=args.batch_size,
        learning_rate=args.learning_rate, policy=args.policy, strategy=args.strategy,
        auto_shard=args.auto_shard, backup_every=args.backup_every,
        clipnorm=args.clipnorm, label_smoothing=args.label_smoothing,
        val_fraction=args.val_fraction, val_data=args.val_data, seed=args.seed,
        deterministic=args.deterministic, cache=False if args.no_cache else "auto",
        mean_images=args.mean_images, data_dir=args.data_dir,
        manual_dir=args.manual_dir, download=args.download,
        synthetic_size=args.synthetic_size, synthetic_train=args.synthetic_train,
        step_epochs=(tuple(int(e) for e in args.step_epochs.split(","))
                     if args.step_epochs else None),
        model_kwargs=model_kwargs, verbose=2 if args.json else 1)
    if args.json:
        print(json.dumps({"model_dir": args.out, **result.results}))
    else:
        print(f"Model directory: {args.out}")
        for k, v in result.results.items():
            print(f"  {k}: {v}")
    return 0


# --- resnet-tf evaluate classifier ------------------------------------------


def add_evaluate(tasks):
    p = tasks.add_parser("classifier", help="top-1 and top-5 error",
                         description="Top-1/top-5 error of a classifier directory "
                         "on a data set's evaluation split.")
    p.add_argument("--model", required=True, help="a classifier model directory")
    p.add_argument("--data", required=True,
                   help="tfds:NAME[:SPLIT], folder:PATH or synthetic")
    p.add_argument("--crops", default="center", choices=["center", "10", "multiscale"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-images", type=int)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_strict(p, "they count as wrong at top-1 and top-5")
    _data_options(p)
    p.set_defaults(func=run_evaluate_classifier)


def add_strict(p, consequence):
    """``--strict`` for an evaluate command."""
    p.add_argument("--strict", action="store_true",
                   help="fail if any image can't be decoded (default: name and count "
                   f"them, and finish the evaluation; {consequence})")


def print_unreadable(r, consequence):
    """The unreadable images of an evaluation result, one line each."""
    if not r.get("unreadable_images"):
        return
    print(f"  {r['unreadable_images']} unreadable images ({consequence}; --strict "
          "refuses them):")
    for path in r["unreadable_paths"]:
        print(f"    {path}")


def run_evaluate_classifier(args):
    from resnet_tf.evaluate import evaluate_classifier

    r = evaluate_classifier(args.model, args.data, crops=args.crops,
                            batch_size=args.batch_size, max_images=args.max_images,
                            data_dir=args.data_dir, manual_dir=args.manual_dir,
                            download=args.download, strict=args.strict)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['data']} [{r['split']}], {r['images']} images, {r['crops']} crops: "
              f"top-1 error {100 * r['top1_error']:.2f}%, "
              f"top-5 error {100 * r['top5_error']:.2f}%")
        if r["unreadable_images"]:
            print(f"  over the {r['readable_images']} readable images: top-1 error "
                  f"{100 * r['top1_error_readable']:.2f}%, top-5 error "
                  f"{100 * r['top5_error_readable']:.2f}%")
        print_unreadable(r, "counted as wrong")
    return 0


# --- resnet-tf predict classifier -------------------------------------------


def add_predict(tasks):
    p = tasks.add_parser("classifier", help="top-5 classes of image files")
    p.add_argument("--model", required=True, help="a classifier model directory")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, GIF, BMP)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--class-index",
                   help="imagenet_class_index.json (Keras) or LOC_synset_mapping.txt "
                   "to print human-readable ImageNet names")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_predict_classifier)


def run_predict_classifier(args):
    from resnet_tf.evaluate import predict_files

    rows = predict_files(args.model, args.images, top=args.top,
                         class_index=args.class_index)
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(row["path"])
            if "error" in row:
                print(f"  error: {row['error']}")
                continue
            for p in row["predictions"]:
                print(f"  {p['probability']:7.2%}  {p['name']} ({p['class']})")
    return 1 if any("error" in r for r in rows) else 0


# --- resnet-tf models --------------------------------------------------------


def add_models(sub):
    p = sub.add_parser(
        "models",
        help="list every architecture with parameters and multiply-adds",
        description="Build every architecture of the paper at its default "
        "input (224x224 ImageNet, 32x32 CIFAR) and count its parameters and "
        "multiply-adds (convolutions and fully connected layers, as Table 1 "
        "counts FLOPs).",
    )
    p.add_argument("names", nargs="*",
                   help="architectures to list (default: all), e.g. resnet50 plain20")
    p.add_argument("--shortcuts", default=None,
                   help="comma-separated shortcut options to list for residual "
                   "nets (default: each family's paper default, B for ImageNet "
                   "and A for CIFAR)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=run_models)


def describe_models(names=None, shortcuts=None, progress=None):
    """One dict per architecture: name, family, depth, block, shortcut,
    input_size, params, trainable_params, macs."""
    import keras

    from resnet_tf import zoo
    from resnet_tf.backbone import ResNet

    names = list(names or zoo.architecture_names())
    rows = []
    for name in names:
        depth, residual = zoo.parse_name(name)
        layout = zoo.stage_layout(depth)
        options = [None]
        if residual:
            options = list(shortcuts or [layout.default_shortcut])
        for option in options:
            if progress:
                progress(name, option)
            size = layout.default_input_size
            model = ResNet(depth=depth, residual=residual, shortcut=option,
                           input_shape=(size, size, 3))
            total, trainable = zoo.count_params(model)
            rows.append({
                "name": name,
                "family": layout.family,
                "depth": depth,
                "block": layout.block,
                "shortcut": model.shortcut if residual else "none",
                "input_size": size,
                "params": total,
                "trainable_params": trainable,
                "macs": zoo.count_macs(model),
            })
            del model
            keras.backend.clear_session()
    return rows


def run_models(args):
    shortcuts = None
    if args.shortcuts:
        shortcuts = [s.strip().upper() for s in args.shortcuts.split(",") if s.strip()]
        from resnet_tf.zoo import SHORTCUT_OPTIONS

        bad = [s for s in shortcuts if s not in SHORTCUT_OPTIONS]
        if bad:
            raise ValueError(f"unknown shortcut option {bad[0]!r} in --shortcuts; "
                             "use A, B or C.")

    def progress(name, option):
        if not args.json:
            print(f"building {name}{'' if option is None else ' (' + option + ')'}...",
                  end="\r", file=sys.stderr, flush=True)

    rows = describe_models(args.names, shortcuts, progress)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(" " * 60, end="\r", file=sys.stderr)
    header = f"{'name':<12}{'family':<10}{'block':<12}{'shortcut':<10}{'input':>7}" \
             f"{'params':>14}{'trainable':>14}{'mult-adds':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<12}{r['family']:<10}{r['block']:<12}{r['shortcut']:<10}"
              f"{r['input_size']:>7}{r['params']:>14,}{r['trainable_params']:>14,}"
              f"{_human(r['macs']):>12}")
    return 0


# --- resnet-tf {train,evaluate,predict} detector -----------------------------


DETECTION_DATA = ("voc:PATH[:SPLIT], coco:PATH[:SPLIT], tfds:NAME[:SPLIT] (voc/2007, "
                  "voc/2012, coco/2017) or synthetic")


def add_detector_commands(tasks):
    p = tasks["train"].add_parser(
        "detector", help="fine-tune Faster R-CNN (ResNet C4) with model.fit",
        description="Train Faster R-CNN in the paper's C4 layout and write a "
        "detector directory. --init-from a classifier directory carries conv1..conv4 "
        "into the trunk and conv5 into the RoI head, with frozen BN; without it the "
        "detector trains from scratch with trainable BN.")
    p.add_argument("--data", required=True, help=DETECTION_DATA)
    _data_options(p)
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
    p.add_argument("--anchor-scales", default="128,256,512",
                   help="anchor sizes in pixels (sqrt of area), e.g. 32,64,128 for "
                   "small objects")
    p.add_argument("--rpn-batch", type=int, default=256, help="anchors sampled per image")
    p.add_argument("--roi-batch", type=int, default=512, help="RoIs sampled per image")
    p.add_argument("--pooled-size", type=int, default=14, help="RoI pooling output side")
    p.add_argument("--pooler", choices=["align", "pool"], default="align")
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
    _data_options(p)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--synthetic-eval", type=int, default=16)
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

    r = train_detector(args.data, args.out, init_from=args.init_from, depth=args.depth,
                       epochs=args.epochs, iterations=args.iterations,
                       batch_size=args.batch_size, learning_rate=args.learning_rate,
                       shorter_side=args.shorter_side, max_side=args.max_side,
                       policy=args.policy, strategy=args.strategy, seed=args.seed,
                       auto_shard=args.auto_shard, backup_every=args.backup_every,
                       deterministic=args.deterministic,
                       synthetic_train=args.synthetic_train,
                       synthetic_eval=args.synthetic_eval, data_dir=args.data_dir,
                       manual_dir=args.manual_dir, download=args.download,
                       model_kwargs=dict(
                           anchor_scales=tuple(float(v) for v in
                                               args.anchor_scales.split(",")),
                           rpn_batch=args.rpn_batch, roi_batch=args.roi_batch,
                           pooled_size=args.pooled_size, pooler=args.pooler,
                           **({"width": args.width} if args.width else {})),
                       verbose=2 if args.json else 1)
    if args.json:
        print(json.dumps({"model_dir": args.out, **r["results"]}))
    else:
        print(f"Detector directory: {args.out}")
    return 0


def run_evaluate_detector(args):
    from detection.evaluate import evaluate_detector

    r = evaluate_detector(args.model, args.data, batch_size=args.batch_size,
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
          f"APs {c['APs']:.4f}  APm {c['APm']:.4f}  APl {c['APl']:.4f}")
    print_unreadable(r, f"their {r['unreadable_objects']} objects counted as missed; "
                     f"VOC mAP@0.5 over the readable images alone: "
                     f"{r.get('voc_map50_readable', float('nan')):.4f}")
    return 0


def run_predict_detector(args):
    from detection.evaluate import draw_detections, predict_detector

    rows = predict_detector(args.model, args.images)
    for i, row in enumerate(rows):
        if args.draw and "error" not in row:
            row["drawn"] = draw_detections(row["path"], row,
                                           numbered_path(args.draw, i, len(rows)),
                                           args.min_score)
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(row["path"] + (f"  (drawn: {row['drawn']})" if "drawn" in row else ""))
            if "error" in row:
                print(f"  error: {row['error']}")
                continue
            for box, name, score in zip(row["boxes"], row["names"], row["scores"]):
                if score >= args.min_score:
                    print(f"  {score:6.2%}  {name:<15} {box}")
    return 1 if any("error" in r for r in rows) else 0


def _human(n):
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.1f}M"


if __name__ == "__main__":
    sys.exit(main())
