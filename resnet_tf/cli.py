"""The ``resnet-tf`` command line.

    resnet-tf models [NAME ...] [--shortcuts A,B,C] [--json]

Later subcommands (train, evaluate, predict, export, demo) hang off the
same parser, one ``add_*`` function each.
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
    from resnet_tf import __version__

    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(title="commands")
    add_models(sub)
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
