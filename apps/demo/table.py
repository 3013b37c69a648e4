"""Step 5: the table of each model's numbers against its baseline's."""


def summary_rows(models):
    """``(model, metric, model value, baseline value, lower_is_better)`` rows."""
    rows = []
    if "classifier" in models:
        m, b = models["classifier"]["metrics"], models["classifier"]["baseline"]
        rows += [("classifier", "top-1 error", m["top1_error"], b["top1_error"], True),
                 ("classifier", "top-5 error", m["top5_error"], b["top5_error"], True)]
    if "detector" in models:
        m, b = models["detector"]["metrics"], models["detector"]["baseline"]
        rows += [("detector", "VOC mAP@0.5", m["voc_map50"], b["voc_map50"], False),
                 ("detector", "COCO AP", m["coco_ap"], b["coco_ap"], False)]
    if "localizer" in models:
        m, b = models["localizer"]["metrics"], models["localizer"]["baseline"]
        rows += [("localizer", "top-5 loc. error", m["top5_loc_error"],
                  b["top5_loc_error"], True),
                 ("localizer", "oracle loc. error", m["oracle_loc_error"],
                  b["oracle_loc_error"], True)]
    return rows


def beats(model_value, baseline_value, lower_is_better):
    return model_value < baseline_value if lower_is_better else model_value > baseline_value


def format_table(rows, baselines):
    lines = [f"{'model':<11} {'metric':<18} {'model':>8} {'baseline':>9}  "
             f"{'baseline is':<40}", "-" * 92]
    for name, metric, v, b, lower in rows:
        mark = "better" if beats(v, b, lower) else "NOT better"
        lines.append(f"{name:<11} {metric:<18} {100 * v:7.1f}% {100 * b:8.1f}%  "
                     f"{baselines[name]:<31} {mark}")
    return "\n".join(lines)


BASELINE_NAMES = {"classifier": "most frequent training class(es)",
                  "detector": "fixed grid of boxes, class prior",
                  "localizer": "same classes, centred mean box"}
