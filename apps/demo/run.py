"""``run_demo``: the seven steps, in order, into one output folder."""

import dataclasses
import json
import os
import time

from apps.demo.classifier import draw_classifier_predictions, train_and_evaluate_classifier
from apps.demo.data import make_data
from apps.demo.detector import draw_detector_predictions, train_and_evaluate_detector
from apps.demo.export_check import export_and_serve, serving_report
from apps.demo.folders import prepare_out
from apps.demo.localizer import draw_localizer_predictions, train_and_evaluate_localizer
from apps.demo.progress import Timer
from apps.demo.progress import say as _say
from apps.demo.settings import FULL, KINDS, QUICK, backbone_name
from apps.demo.table import BASELINE_NAMES, beats, format_table, summary_rows


def run_demo(out_dir="demo-output", quick=False, seed=0, verbose=1, settings=None):
    """Run the seven steps (see ``apps.demo``) into ``out_dir``.

    Args:
        out_dir: a new or empty folder, or one a previous demo wrote (its
            outputs are replaced).
        quick: the smoke-test sizes (``QUICK``), else ``FULL``.
        seed: the synthetic data and training seed.
        verbose: 1 progress bars and messages, 2 one line per epoch, 0 quiet.
        settings: a ``DemoSettings`` overriding ``quick``.
    Returns:
        dict: ``settings``, ``models`` (per kind: metrics, baseline,
        directory...), ``rows`` (the table), ``all_better``, ``serving``,
        ``notes``, ``pictures``, ``outputs``, ``seconds``.
    """
    import keras

    s = settings or (QUICK if quick else FULL)
    out_dir = os.path.abspath(out_dir)
    prepare_out(out_dir)
    keras.utils.set_random_seed(seed)
    timer = Timer()
    fit_verbose = verbose if verbose in (0, 1) else 2
    say = lambda text: _say(text, verbose)  # noqa: E731

    say(f"resnet-tf demo ({s.name}) -> {out_dir}")
    say("[1/7] Generating the synthetic data sets (classification 32x32, detection "
        f"{s.det_size}x{s.det_size}, localization 32x32; seed {seed})")
    data = timer.step("data", lambda: make_data(s, seed, out_dir))
    pictures = [data["picture"]]

    say(f"[2/7] Training the classifier (ImageNet-layout {backbone_name(s)}) with model.fit")
    models = {}
    models["classifier"] = timer.step("classifier", lambda: train_and_evaluate_classifier(
        s, seed, out_dir, data, fit_verbose))
    clf_dir = models["classifier"]["directory"]

    say(f"[3/7] Fine-tuning Faster R-CNN ({backbone_name(s)}, C4) from the classifier")
    models["detector"] = timer.step("detector", lambda: train_and_evaluate_detector(
        s, seed, out_dir, data, clf_dir, fit_verbose))

    say("[4/7] Fine-tuning the per-class RPN localizer from the classifier")
    models["localizer"] = timer.step("localizer", lambda: train_and_evaluate_localizer(
        s, seed, out_dir, data, clf_dir, fit_verbose))

    rows = summary_rows(models)
    table = format_table(rows, BASELINE_NAMES)
    all_better = all(beats(v, b, lower) for _, _, v, b, lower in rows)
    say("[5/7] Evaluation on the held-out synthetic images (model vs trivial baseline):")
    say(table)

    say("[6/7] Exporting SavedModels for TF Serving and calling each once")
    serving, notes = timer.step("export", lambda: export_and_serve(
        out_dir, data, models, verbose))
    for line in serving_report(serving, notes):
        say(line)

    say("[7/7] Drawing predictions")

    def draw():
        return [draw_classifier_predictions(out_dir, data, s),
                draw_detector_predictions(out_dir, data, s),
                draw_localizer_predictions(out_dir, data, models["localizer"], s)]

    drawn = timer.step("pictures", draw)
    for kind in KINDS:
        pictures += models[kind]["pictures"]
    pictures += drawn

    outputs = {"models": {k: models[k]["directory"] for k in models},
               "serving": {k: r["export"] for k, r in serving.items()},
               "pictures": pictures,
               "summary": [os.path.join(out_dir, "summary.json"),
                           os.path.join(out_dir, "summary.txt")]}
    seconds = {**timer.steps, "total": round(time.time() - timer.t0, 1)}
    summary = {
        "settings": dataclasses.asdict(s), "seed": seed, "out_dir": out_dir,
        "models": {k: {kk: vv for kk, vv in m.items() if kk != "per_image"}
                   for k, m in models.items()},
        "rows": [{"model": r[0], "metric": r[1], "value": r[2], "baseline": r[3],
                  "lower_is_better": r[4], "better": beats(r[2], r[3], r[4])}
                 for r in rows],
        "all_better": all_better, "table": table, "serving": serving, "notes": notes,
        "pictures": pictures, "outputs": outputs, "seconds": seconds}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(table + "\n")
    say(f"\nDone in {seconds['total']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in timer.steps.items())}). Outputs:")
    for kind, path in outputs["models"].items():
        say(f"  model directory  {kind:<11} {path}")
    for kind, path in outputs["serving"].items():
        say(f"  SavedModel       {kind:<11} {path}")
    for path in pictures:
        say(f"  picture          {path}")
    for path in outputs["summary"]:
        say(f"  summary          {path}")
    if not all_better:
        say("WARNING: a model did not beat its baseline (see the table above).")
    return summary
