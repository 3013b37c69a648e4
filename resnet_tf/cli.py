"""The classifier's ``resnet-tf`` subcommands, and the CLI helpers every
package's subcommands share.

    resnet-tf models [NAME ...] [--shortcuts A,B,C] [--json]
    resnet-tf import classifier --from keras-applications|torchvision|timm|keras-hub PATH --out DIR
    resnet-tf train classifier --config cifar|imagenet --model resnet20 --data SPEC --out DIR
    resnet-tf evaluate classifier --model DIR --data SPEC [--crops center|10|multiscale] [--strict]
    resnet-tf predict classifier --model DIR IMAGE... [--json]

The command itself is assembled in ``apps.cli`` (``main``, ``build_parser``)
from each package's ``add_*`` functions: these here, ``detection.cli``
(detector), ``localization.cli`` (localizer), ``apps.export`` (export) and
``apps.demo`` (demo). The shared helpers (``add_precision_and_strategy``,
``add_data_options``, ``add_strict``, ``print_unreadable``,
``numbered_path``) live here, at the bottom layer, so the packages above
reuse them without importing each other. The work happens in library
functions (``train.train_classifier``, ``evaluate.*``) that tests and
notebooks call directly.
"""

import json
import sys

from resnet_tf.precision import AUTO, PRECISIONS


def add_classifier_commands(tasks):
    """Add ``classifier`` to ``tasks["import"]``, ``tasks["train"]``,
    ``tasks["evaluate"]`` and ``tasks["predict"]`` (argparse sub-parser
    actions, one per verb)."""
    add_import(tasks["import"])
    add_train(tasks["train"])
    add_evaluate(tasks["evaluate"])
    add_predict(tasks["predict"])


def add_precision_and_strategy(p):
    """``--precision`` (Keras dtype policy), ``--strategy`` (tf.distribute),
    ``--auto-shard`` and ``--backup-every``, shared by every ``train`` command."""
    p.add_argument("--precision", "--policy", dest="policy", default=AUTO,
                   choices=PRECISIONS,
                   help="auto (default: mixed_bfloat16 on a GPU, a CPU with AMX or an "
                   "AMD CPU with AVX-512 BF16, where it measured faster; float32 "
                   "elsewhere; the choice is printed and recorded), float32, "
                   "mixed_bfloat16, mixed_float16 (GPUs)")
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


def run_options(args):
    """The training-run options every ``train`` command shares, as keyword
    arguments of the trainers (``resnet_tf.runner.TrainingRun``'s settings
    plus the start point and the optimiser's)."""
    return dict(init_from=args.init_from, epochs=args.epochs, iterations=args.iterations,
                batch_size=args.batch_size, learning_rate=args.learning_rate,
                policy=args.policy, strategy=args.strategy, seed=args.seed,
                auto_shard=args.auto_shard, backup_every=args.backup_every,
                synthetic_train=args.synthetic_train, synthetic_eval=args.synthetic_eval,
                verbose=2 if args.json else 1)


def print_trained(args, label, results, list_results=False):
    """A trainer's outcome: ``{"model_dir": ..., **results}`` with ``--json``,
    else one line naming the ``label`` directory written (and, with
    ``list_results``, one line per result). Returns 0."""
    if args.json:
        print(json.dumps({"model_dir": args.out, **results}))
        return 0
    print(f"{label} directory: {args.out}")
    for k, v in (results.items() if list_results else ()):
        print(f"  {k}: {v}")
    return 0


def print_predictions(args, rows, print_row, draw=None):
    """The shared tail of every ``predict`` command.

    rows: one dict per image with ``path`` and either ``error`` or the model's
    outputs. ``draw(row, out_png)`` (when given and ``--draw`` is set) writes
    the image with its boxes and returns the path; ``print_row(row)`` prints
    the outputs of a readable image. Prints JSON with ``--json``. Returns 1
    when any image could not be read (each is named with its error), else 0.
    """
    for i, row in enumerate(rows):
        if draw is not None and getattr(args, "draw", None) and "error" not in row:
            row["drawn"] = draw(row, numbered_path(args.draw, i, len(rows)))
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(row["path"] + (f"  (drawn: {row['drawn']})" if "drawn" in row else ""))
            if "error" in row:
                print(f"  error: {row['error']}")
                continue
            print_row(row)
    return 1 if any("error" in r for r in rows) else 0


def add_data_options(p):
    """``--data-dir``, ``--manual-dir`` and ``--download`` (TFDS)."""
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
    add_data_options(p)
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
    return print_trained(args, "Model", result.results, list_results=True)


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
    add_data_options(p)
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

    def print_row(row):
        for p in row["predictions"]:
            print(f"  {p['probability']:7.2%}  {p['name']} ({p['class']})")

    return print_predictions(args, rows, print_row)


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


def _human(n):
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.1f}M"

