"""``resnet-tf demo``: the subcommand (added by ``apps.cli``)."""

import json

from apps.demo.run import run_demo


def add_demo_command(sub):
    """``resnet-tf demo``, added to the top-level subparsers ``sub``."""
    p = sub.add_parser(
        "demo", help="train, fine-tune, evaluate, export and serve three models on "
        "synthetic data (minutes, CPU)",
        description="Generate the synthetic data; train a ResNet-18 classifier with "
        "model.fit; fine-tune Faster R-CNN and the per-class RPN localizer from it; "
        "evaluate all three against trivial baselines; export SavedModels for TF "
        "Serving and call each once; write pictures. Minutes on 2 CPU cores; "
        "--quick is the smoke-test size.")
    p.add_argument("--out", default="demo-output",
                   help="output folder: new, empty, or a previous demo's "
                   "(default ./demo-output)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run with smaller sets and fewer epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true",
                   help="print the summary as JSON (progress goes to stderr)")
    p.set_defaults(func=run_demo_command)


def run_demo_command(args):
    if args.json:
        import contextlib
        import sys

        with contextlib.redirect_stdout(sys.stderr):
            summary = run_demo(args.out, quick=args.quick, seed=args.seed, verbose=2)
        print(json.dumps({k: summary[k] for k in ("out_dir", "rows", "all_better",
                                                   "serving", "notes", "outputs",
                                                   "seconds")}, default=float))
    else:
        summary = run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0 if summary["all_better"] else 1
