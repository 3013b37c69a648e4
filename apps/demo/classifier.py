"""Step 2: the ImageNet-layout ResNet-18 classifier: trained with
``model.fit`` (``resnet_tf.train.train_classifier``), evaluated, set against
its baseline (the training set's most frequent classes), and drawn."""

import os

import numpy as np

from apps.demo.folders import save_png
from apps.demo.settings import CLF_PREPROCESSING, backbone_name
from resnet_tf import plots


def train_and_evaluate_classifier(s, seed, out_dir, data, verbose):
    from resnet_tf.evaluate import evaluate_classifier, top_k_errors
    from resnet_tf.train import train_classifier

    directory = os.path.join(out_dir, "models", "classifier")
    kw = dict(synthetic_size=32, synthetic_train=s.clf_train, synthetic_eval=s.clf_eval)
    r = train_classifier("synthetic", directory, model="resnet18", recipe="cifar",
                         epochs=s.clf_epochs, batch_size=s.clf_batch,
                         learning_rate=s.clf_lr, step_epochs=(s.clf_epochs - 1,),
                         model_kwargs={"zero_init_residual": True, "width": s.clf_width},
                         seed=seed,
                         preprocessing_overrides=CLF_PREPROCESSING, verbose=verbose, **kw)
    ev = evaluate_classifier(directory, "synthetic", seed=seed, **kw)
    source = data["sources"]["classifier"]
    _, train_labels = source.arrays("train")
    _, eval_labels = source.arrays("eval")
    # Baseline: always answer the training set's most frequent classes.
    freq = np.bincount(train_labels, minlength=len(source.class_names)).astype(np.float64)
    prior = np.tile(freq / freq.sum(), (len(eval_labels), 1))
    base1, base5 = top_k_errors(prior, eval_labels)
    curves = os.path.join(out_dir, "pictures", "classifier_curves.png")
    plots.training_curves(r.history, f"classifier ({backbone_name(s)})", curves,
                          baselines={"majority class": base1})
    return {"directory": directory, "history": r.history, "eval": ev,
            "metrics": {"top1_error": ev["top1_error"], "top5_error": ev["top5_error"]},
            "baseline": {"top1_error": float(base1), "top5_error": float(base5)},
            "pictures": [curves], "train_seconds": r.results["train_seconds"]}


def draw_classifier_predictions(out_dir, data, s):
    """Eval images with the classifier's top guess (from its directory)."""
    from resnet_tf.evaluate import predict_files

    source = data["sources"]["classifier"]
    images, labels = source.arrays("eval")
    paths = [save_png(images[i], os.path.join(out_dir, "images", f"classify_{i}.png"))
             for i in range(s.drawn)]
    rows = predict_files(os.path.join(out_dir, "models", "classifier"), paths, top=1)
    tiles, caps = [], []
    for i, row in enumerate(rows):
        guess = row["predictions"][0]["name"]
        truth = source.class_names[labels[i]]
        tiles.append(plots.draw_boxes(images[i], [], scale=3))
        caps.append(f"{guess}{'' if guess == truth else ' (' + truth + ')'}")
    path = os.path.join(out_dir, "pictures", "classifier_predictions.png")
    plots.grid(tiles, columns=s.drawn, captions=caps).save(path)
    return path
