"""The ``resnet-tf`` command line: the top level that assembles each
package's subcommands.

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
    resnet-tf export classifier|detector|localizer --model DIR --out BASE [--version N] [--json]
    resnet-tf demo [--out DIR] [--quick] [--json]

Where each family lives (the package that owns the model owns its
commands; this module only assembles them):

- ``models``, ``import classifier``, ``{train,evaluate,predict} classifier``
  and the shared CLI helpers: ``resnet_tf.cli``;
- ``{train,evaluate,predict} detector``: ``detection.cli``;
- ``{train,evaluate,predict} localizer``: ``localization.cli``;
- ``export <kind>`` and the export registry: ``apps.export``;
- ``demo``: ``apps.demo``.

``main(argv)`` is the console script's entry point (``resnet-tf``, also
``python -m apps.cli``); tests call it directly.
"""

import argparse
import sys

# First: importing resnet_tf hides TensorFlow's import-time C++ log lines for
# the command (resnet_tf/__init__.py); detection and localization import
# Keras, hence TensorFlow, before they import resnet_tf.
import resnet_tf  # noqa: F401  isort: skip
from apps import export
from apps.demo import add_demo_command
from detection import cli as detection_cli
from localization import cli as localization_cli
from resnet_tf import __version__
from resnet_tf import cli as classifier_cli

# The verbs whose sub-commands name a model kind, in --help order.
VERBS = (
    ("train", "train a model"),
    ("evaluate", "evaluate a model"),
    ("predict", "predict a model"),
    ("export", "export a model"),
    ("import", "import weights you already have"),
)


def main(argv=None):
    """Run ``resnet-tf`` with ``argv`` (default ``sys.argv[1:]``); return the
    exit status: 0, 2 for a ``ValueError`` or a missing command (printed as
    ``resnet-tf: error: ...``), or what the command returns (1 when some
    input of ``predict`` failed).

    Raises:
        SystemExit: from argparse: 2 on a usage error, 0 after ``--help``.
    """
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
    """The ``argparse`` parser of the whole command."""
    parser = argparse.ArgumentParser(
        prog="resnet-tf",
        description="ResNets of He et al. (2015) in Keras 3: models, training, "
        "detection, localization, export.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    # Read when the command starts, before TensorFlow is imported
    # (resnet_tf/__init__.py); listed here for --help and parsing.
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ log lines (oneDNN banners, grappler "
                        "notes), hidden by default; TF_CPP_MIN_LOG_LEVEL, if you set "
                        "it, is respected (0 shows them all)")
    sub = parser.add_subparsers(title="commands")
    classifier_cli.add_models(sub)
    tasks = {verb: _task_parser(sub, verb, help_text) for verb, help_text in VERBS}
    classifier_cli.add_classifier_commands(tasks)
    detection_cli.add_detector_commands(tasks)
    localization_cli.add_localizer_commands(tasks)
    export.add_export_commands(tasks)
    add_demo_command(sub)
    return parser


def _task_parser(sub, verb, help_text):
    p = sub.add_parser(verb, help=help_text)
    return p.add_subparsers(title="what", dest="task", required=True)


if __name__ == "__main__":
    sys.exit(main())
