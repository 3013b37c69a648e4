"""Step 4: the per-class RPN localizer fine-tuned from the classifier
(``localization.train.train_localizer``), evaluated (top-5 and oracle
localization error), set against its baseline (the same class guesses with
one centred box of the training boxes' mean size), and drawn."""

import os

import numpy as np

from apps.demo.progress import epoch_callback
from apps.demo.settings import LOC_KWARGS
from resnet_tf import plots


def train_and_evaluate_localizer(s, seed, out_dir, data, clf_dir, verbose):
    from localization.evaluate import Tester, evaluate_localizer
    from localization.metrics import localization_errors, oracle_error
    from localization.train import train_localizer
    from resnet_tf import model_dir

    directory = os.path.join(out_dir, "models", "localizer")
    source = data["sources"]["localizer"]
    train_split, eval_split = source.split("train"), source.split("eval")
    truth = [(a.classes, a.boxes) for a in eval_split.annotations]
    clf = model_dir.load_classifier(clf_dir)
    probe = min(len(truth), 100)
    tester = None

    def oracle(model):
        nonlocal tester  # built once: its graph functions are traced once
        tester = tester or Tester(model, clf.preprocessing, clf.mean_image, top_k=1)
        found = tester.many(eval_split.images[:probe],
                            [[int(t[0][0])] for t in truth[:probe]])
        return oracle_error([r["extra_boxes"][0] for r in found], truth[:probe])

    per_epoch = epoch_callback(oracle)
    kw = dict(synthetic_train=s.loc_train, synthetic_eval=s.loc_eval)
    r = train_localizer("synthetic", directory, init_from=clf_dir, epochs=s.loc_epochs,
                        batch_size=s.loc_batch, learning_rate=s.loc_lr, seed=seed,
                        extra_callbacks=[per_epoch], verbose=verbose, **LOC_KWARGS, **kw)
    ev = evaluate_localizer(directory, "synthetic", per_image=True, seed=seed, **kw)
    # Baseline: the same class guesses, one centred box of the training
    # boxes' average size.
    tb = np.concatenate([a.boxes for a in train_split.annotations])
    h, w = float((tb[:, 2] - tb[:, 0]).mean()), float((tb[:, 3] - tb[:, 1]).mean())
    a0 = eval_split.annotations[0]
    cy, cx = a0.height / 2, a0.width / 2
    centred = np.array([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], np.float32)
    k = len(ev["per_image"][0]["classes"])
    base = localization_errors([(row["classes"], np.tile(centred, (k, 1)))
                                for row in ev["per_image"]], truth, ks=(1, k))
    base_oracle = oracle_error([centred] * len(truth), truth)
    curves = os.path.join(out_dir, "pictures", "localizer_curves.png")
    plots.training_curves(
        r["history"], "localizer (per-class RPN)", curves,
        loss_keys=["loss", "loc_cls", "loc_reg"],
        error_keys={f"oracle loc. error (eval, {probe} images)": per_epoch.values},
        baselines={"centred box": base_oracle})
    return {"directory": directory, "history": r["history"],
            "eval": {k2: v for k2, v in ev.items() if k2 != "per_image"},
            "per_image": ev["per_image"], "oracle_per_epoch": per_epoch.values,
            "metrics": {"top5_loc_error": ev[f"top{k}_loc_error"],
                        "oracle_loc_error": ev["oracle_loc_error"]},
            "baseline": {"top5_loc_error": base[f"top{k}_loc_error"],
                         "oracle_loc_error": base_oracle},
            "pictures": [curves], "train_seconds": r["results"]["train_seconds"]}


def draw_localizer_predictions(out_dir, data, loc, s):

    split = data["sources"]["localizer"].split("eval")
    names = data["sources"]["localizer"].class_names
    tiles, caps = [], []
    for i, row in enumerate(loc["per_image"][:s.drawn]):
        a = split.annotations[i]
        boxes = list(a.boxes) + [row["boxes"][0]]
        colors = [(0, 200, 0)] * len(a.boxes) + [(230, 25, 75)]
        tiles.append(plots.draw_boxes(split.images[i], boxes, colors=colors, scale=4))
        caps.append(names[row["classes"][0]])
    path = os.path.join(out_dir, "pictures", "localizations.png")
    plots.grid(tiles, columns=s.drawn, captions=caps).save(path)
    return path
