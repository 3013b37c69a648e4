"""The export registry and ``resnet-tf export <kind>``.

    resnet-tf export classifier --model DIR --out BASE [--version N] [--json]
    resnet-tf export detector --model DIR --out BASE [--version N] [--json]
    resnet-tf export localizer --model DIR --out BASE [--version N] [--json]

``EXPORTERS`` maps a model kind to the function exporting a model directory
of that kind, each imported plainly from the package that owns the kind, so
the import graph (and import-linter) sees every edge. The shared serving
machinery (signatures, in-graph decoding, versions, the atomic write) and
the classifier's export live in ``resnet_tf.export``; the detector's in
``detection.export``, the localizer's in ``localization.export``. This
module sits above all three (``apps -> localization -> detection ->
resnet_tf``), which is why the registry is here and not in ``resnet_tf``.

Adding a model kind: write ``export_<kind>(model_dir, base, version=None)``
in the kind's package (it builds a ``resnet_tf.export.ServingModel`` and
returns ``export_serving_model(serving, base, version)``; see
``detection.export.export_detector``), then add one entry to ``EXPORTERS``.
"""

import json
import os

from detection.export import export_detector
from localization.export import export_localizer
from resnet_tf import model_dir
from resnet_tf.export import (BYTES_SIGNATURE, EXPORT_INFO, TENSOR_SIGNATURE,
                              export_classifier)

# model kind (the "kind" of the directory's resnet_tf.json) -> export function
# ``fn(directory, base, version=None) -> path of BASE/<version>``.
EXPORTERS = {
    "classifier": export_classifier,
    "detector": export_detector,
    "localizer": export_localizer,
}


def export_model(kind, directory, base, version=None):
    """Export a model directory of ``kind`` (see ``EXPORTERS``) to
    ``base/<version>/``; return that path.

    Raises:
        ValueError: ``kind`` is not exportable, or ``directory`` holds a
            model of another kind (the message names the right command).
    """
    if kind not in EXPORTERS:
        raise ValueError(f"Cannot export a {kind!r}; exportable kinds: "
                         f"{', '.join(EXPORTERS)}.")
    meta = model_dir.read_meta(directory)
    if meta.get("kind") != kind:
        raise ValueError(f"{directory} holds a {meta.get('kind')}, not a {kind}; use "
                         f"`resnet-tf export {meta.get('kind')}`.")
    return EXPORTERS[kind](directory, base, version)


# --- resnet-tf export classifier|detector|localizer ------------------------------


def add_export_commands(tasks):
    """Add ``export <kind>`` for every kind in ``EXPORTERS`` to ``tasks["export"]``."""
    for kind in EXPORTERS:
        p = tasks["export"].add_parser(
            kind, help=f"write a {kind} SavedModel for TensorFlow Serving",
            description=f"Export a {kind} directory as a SavedModel in TF Serving's "
            "layout BASE/<version>/, with signatures serving_default (image_bytes: "
            "encoded images) and serve_image_tensor (images: uint8 [N, H, W, 3]); "
            "preprocessing runs inside the graph.")
        p.add_argument("--model", required=True, help=f"a {kind} model directory")
        p.add_argument("--out", required=True, metavar="BASE",
                       help="the model base folder TF Serving watches "
                       "(docker ... -v BASE:/models/NAME)")
        p.add_argument("--version", type=int,
                       help="the version folder to write (default: the next free "
                       "integer, 1 for a new BASE)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=run_export, kind=kind)


def run_export(args):
    path = export_model(args.kind, args.model, args.out, args.version)
    if args.json:
        print(json.dumps({"kind": args.kind, "export": path,
                          "version": int(os.path.basename(path))}))
    else:
        print(f"SavedModel for TF Serving: {path}  (signatures {BYTES_SIGNATURE}, "
              f"{TENSOR_SIGNATURE})")
        # Every limit the signatures put on a request (see each kind's module;
        # also in assets.extra/resnet_tf_export.json, "caps").
        with open(os.path.join(path, "assets.extra", EXPORT_INFO)) as f:
            caps = json.load(f).get("caps", {})
        print("Caps: " + (", ".join(f"{k} {v}" for k, v in caps.items()) or "none")
              + ".")
    return 0
