"""``resnet-tf demo``: from nothing to three served models, on a CPU.

    resnet-tf demo [--out DIR] [--quick] [--seed N] [--json]

``run_demo(out_dir, quick=False, seed=0)`` does, with the package's own
library functions (nothing here is model code):

1. generates the embedded synthetic sets (classification, detection,
   localization; deterministic from ``seed``) and draws samples of each;
2. trains an ImageNet-layout ResNet-18 classifier on the 32x32 shapes with
   ``model.fit`` (``train.train_classifier``); ``--quick`` makes it a
   quarter as wide (width 16: Table 1's layout at ~1/16 of the compute);
3. fine-tunes Faster R-CNN (ResNet-18-C4) from it (``detection.train``);
4. fine-tunes the per-class RPN localizer from it (``localization.train``);
5. evaluates all three, and a trivial baseline for each on the same data,
   and prints one table;
6. exports each model for TF Serving to ``OUT/serving/<kind>/1`` (every kind
   in ``apps.export.EXPORTERS``) and calls each export once, through
   its ``serving_default`` signature, on a real JPEG (from ``../shared/data``
   or ``$RESNET_TF_DATA``; otherwise a synthetic image written as JPEG, with
   a note) and on a synthetic evaluation image;
7. draws training curves, predictions, detections and localizations as PNG.

Outputs (``OUT`` is ``--out``, default ``./demo-output``)::

    OUT/models/{classifier,detector,localizer}/   resnet-tf model directories
    OUT/serving/{classifier,detector,localizer}/1/  SavedModels (TF Serving layout)
    OUT/pictures/*.png                           curves, samples, drawn boxes
    OUT/images/                                  the evaluation images drawn on
    OUT/summary.json, OUT/summary.txt            the numbers and where everything is

Baselines (computed on the same evaluation images):

- classifier: the training set's most frequent class (top-1) and its five
  most frequent classes (top-5) for every image;
- detector: a fixed grid of boxes, the training boxes' median size at
  half-box strides, each box reported for every class with the class's
  training frequency as its score (VOC mAP@0.5, COCO AP);
- localizer: the same class guesses as the model, each with one box of the
  training boxes' average size centred in the image (top-5 localization
  error); and that box for the ground-truth class (oracle error).

Where each part lives (one concern a module; ``run.run_demo`` calls them in
order)::

    settings.py      DemoSettings, QUICK, FULL, the models' settings
    folders.py       the --out folder (resnet_tf.folders.claim_folder), data_root
    data.py          step 1: the synthetic sets and their picture
    classifier.py    step 2: train, evaluate, baseline, draw
    detector.py      step 3: fine-tune, evaluate, grid baseline, draw
    localizer.py     step 4: fine-tune, evaluate, centred-box baseline, draw
    table.py         step 5: model vs baseline rows and the printed table
    export_check.py  step 6: export and call each SavedModel once
    progress.py      step timer, messages, the per-epoch evaluation callback
    run.py           run_demo: the steps in order, summary.json / summary.txt
    cli.py           ``resnet-tf demo`` (add_demo_command, run_demo_command)

Boxes are drawn with ``resnet_tf.plots.draw_boxes``.
"""

from apps.demo.cli import add_demo_command, run_demo_command
from apps.demo.detector import grid_baseline_detections
from apps.demo.export_check import export_and_serve, serving_report
from apps.demo.folders import MARKER, data_root, find_real_jpeg, prepare_out
from apps.demo.run import run_demo
from apps.demo.settings import FULL, KINDS, QUICK, DemoSettings
from apps.demo.table import BASELINE_NAMES, beats, format_table, summary_rows

__all__ = ["BASELINE_NAMES", "FULL", "KINDS", "MARKER", "QUICK", "DemoSettings",
           "add_demo_command", "beats", "data_root", "export_and_serve",
           "find_real_jpeg", "format_table", "grid_baseline_detections", "prepare_out",
           "run_demo", "run_demo_command", "serving_report", "summary_rows"]
