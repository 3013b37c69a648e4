"""Train the localizer's second stage (``localization.rcnn``) from a
first-stage (per-class RPN) localizer directory, and write a two-stage
directory (``localization.model_dir.save_rcnn_localizer``).

1. The first stage runs over every training image for its ground-truth
   class (whole image, shorter side = the classifier's crop size, as it is
   tested): its ``num_proposals`` highest-scored boxes are the image's
   class-dependent proposals (``proposal_stats`` reports how good they are).
2. ``localization.data.rcnn.make_rcnn_dataset`` crops, warps, labels and
   samples them RoI-centric; ``RegionClassifier`` is fine-tuned from the
   classifier with ``model.fit`` (``resnet_tf.runner``'s SGD run).

The classifier's weights come from the first-stage directory's frozen
classifier copy (the same weights as the classifier it was trained from),
so ``--init-from`` names only the first-stage directory.
"""

import time

import numpy as np

from detection.ops.boxes import pairwise_iou
from localization.data.pipeline import test_examples
from localization.data.rcnn import make_rcnn_dataset, pad_proposals
from localization.data.sources import open_localization_source
from localization.evaluate import Tester
from localization.model_dir import load_localizer, save_rcnn_localizer
from localization.rcnn import RegionClassifier
from localization.train import fit_counted
from resnet_tf.data.decode import SkipCounter
from resnet_tf.data.labels import label_map_for
from resnet_tf.runner import TrainingRun


def first_stage_proposals(model, prep, mean_image, annotations, num_proposals, *,
                          images=None, label_map=None, counter=None, chunk=64):
    """The first stage's top boxes for each image's ground-truth class.

    Returns:
        ``(proposals float32 [N, P, 4] original pixels, padded -1; scores
        float32 [N, P], -inf for padding)``, one row per annotation; an
        unreadable image (counted in ``counter``) gets padding only.
    """
    tester = Tester(model, prep, mean_image, top_k=0, num_proposals=num_proposals)
    found, pending = {}, []

    def flush():
        rs = tester.many([e["image"] for e in pending], [[int(e["label"])] for e in pending])
        for e, r in zip(pending, rs):
            found.setdefault(e["path"].numpy().decode("utf-8", "replace"), []).append(
                (r["proposals"][0], r["proposal_scores"][0]))
        pending.clear()

    for e in test_examples(annotations, counter=counter, images=images,
                           label_map=label_map):
        pending.append(e)
        if len(pending) == chunk:
            flush()
    if pending:
        flush()
    rows = [found[a.path].pop(0) if found.get(a.path) else
            (np.zeros([0, 4], np.float32), np.zeros([0], np.float32)) for a in annotations]
    boxes = pad_proposals([b for b, _ in rows], num_proposals)
    scores = np.full(boxes.shape[:2], -np.inf, np.float32)
    for i, (_, s) in enumerate(rows):
        scores[i, :len(s)] = s[:boxes.shape[1]]
    return boxes, scores


def proposal_stats(proposals, annotations, iou=0.5):
    """How good the proposals are: ``{"images", "top1_recall" (the top box
    has IoU >= iou with a ground-truth box: the first stage's own oracle
    hit rate), "recall" (any of them does), "mean_positives" (boxes per
    image at IoU >= iou)}``."""
    top1 = anyhit = positives = 0
    for p, a in zip(proposals, annotations):
        p = p[(p != -1).any(-1)]
        if not len(p):
            continue
        best = np.asarray(pairwise_iou(p, np.asarray(a.boxes, np.float32))).max(axis=1)
        top1 += bool(best[0] >= iou)
        anyhit += bool((best >= iou).any())
        positives += int((best >= iou).sum())
    n = max(1, len(annotations))
    return {"images": len(annotations), "top1_recall": top1 / n, "recall": anyhit / n,
            "mean_positives": positives / n}


def train_rcnn_localizer(data, out_dir, *, init_from, num_proposals=200, warp_size=None,
                         epochs=None, iterations=None, batch_size=256, regions_per_image=32,
                         positive_fraction=0.25, fg_iou=0.5, bg_iou=0.5,
                         learning_rate=0.001, decay_fraction=0.75, warmup_iterations=0,
                         momentum=0.9, weight_decay=1e-4, clipnorm=None, policy="float32",
                         strategy=None, seed=0, cache="auto", auto_shard="data",
                         backup_every=None, model_kwargs=None, extra_callbacks=(),
                         verbose=1, **source_kwargs):
    """Fine-tune the second stage.

    Args:
        data: ``ilsvrc-loc:PATH[:SPLIT]`` or ``synthetic``; its training split.
        init_from: a first-stage localizer directory (``train_localizer``).
        num_proposals: the first stage's boxes per image kept as proposals,
            and per class rescored at test time (the paper: 200).
        warp_size: the regions' side (default: the classifier's crop size,
            224 for ImageNet nets as in the paper).
        epochs / iterations: the run's length (default 10 epochs, an epoch
            being ``regions_per_image`` regions of every training image).
        batch_size: regions per step (the paper: 256), drawn across images.
        regions_per_image, positive_fraction, fg_iou, bg_iou: the sample
            (``localization.data.rcnn.make_rcnn_dataset``).
        other arguments: as ``localization.train.train_localizer``'s.
    Returns:
        dict with ``model`` (the ``RegionClassifier``), ``history``,
        ``results``, ``directory``.
    Raises:
        ValueError: no ``init_from``, or not a first-stage directory.
    """
    t0 = time.time()
    run = TrainingRun(out_dir, epochs=epochs, iterations=iterations, strategy=strategy,
                      policy=policy, seed=seed, auto_shard=auto_shard,
                      backup_every=backup_every)
    if not init_from:
        raise ValueError("the second stage needs init_from, a first-stage localizer "
                         "directory (`resnet-tf train localizer ... --out DIR`).")
    stage1, prep, mean, meta = load_localizer(init_from)
    source = open_localization_source(data, seed=seed, class_names=meta["class_names"],
                                      **source_kwargs)
    train = source.split("train")
    if train.report is not None:
        print(f"{data} [{train.name}]: {train.report.summary()}", flush=True)
    label_map = label_map_for(source.class_names, meta["class_names"], data)
    counter = SkipCounter()
    if cache == "auto":
        cache = train.images is None and len(train.annotations) <= 20_000
    warp = int(warp_size or prep.crop_size)
    t1 = time.time()
    proposals, _ = first_stage_proposals(stage1, prep, mean, train.annotations,
                                         num_proposals, images=train.images,
                                         label_map=label_map, counter=SkipCounter())
    stats = proposal_stats(proposals, train.annotations, fg_iou)
    print(f"First stage: {proposals.shape[1]} proposals per image for "
          f"{len(train.annotations)} images in {time.time() - t1:.1f} s; top box at IoU "
          f">= {fg_iou:g}: {stats['top1_recall']:.1%} of images, any box: "
          f"{stats['recall']:.1%}, {stats['mean_positives']:.1f} such boxes per image",
          flush=True)

    def train_stream(step):
        ds = make_rcnn_dataset(train.annotations, proposals, prep, mean, warp_size=warp,
                               view_side=prep.crop_size, batch_size=batch_size,
                               regions_per_image=regions_per_image,
                               positive_fraction=positive_fraction, fg_iou=fg_iou,
                               bg_iou=bg_iou, seed=seed, counter=counter,
                               images=train.images, label_map=label_map, cache=cache)
        return run.shard(ds.skip(step) if step else ds)

    plan = run.plan(len(train.annotations) * regions_per_image, batch_size,
                    default_epochs=10, what=data)

    def build_model():
        model = RegionClassifier(stage1.classifier_config, class_names=meta["class_names"],
                                 warp_size=warp, weight_decay=weight_decay, seed=seed,
                                 **dict(model_kwargs or {}))
        model.ensure_built()
        model.load_classifier_weights(stage1.classifier)
        return model

    def describe(model, lr_schedule):
        return (f"Fine-tuning the second stage (R-CNN on {warp}x{warp} warped proposals, "
                f"{model.num_classes} + 1 classes) from {init_from} on {data} "
                f"[{len(train.annotations)} images, {proposals.shape[1]} proposals each]: "
                f"{plan.iterations} iterations = {plan.epochs} epochs of "
                f"{plan.steps_per_epoch}, batch {batch_size} regions "
                f"({regions_per_image} per image, at most {positive_fraction:.0%} "
                f"foreground at IoU >= {fg_iou:g}), lr {learning_rate:g} (/10 at "
                f"{lr_schedule.boundaries[0]})")

    model, hist, results = fit_counted(run, build_model, train_stream, counter, train, plan, t0,
                                       describe, learning_rate=learning_rate,
                                       momentum=momentum, clipnorm=clipnorm,
                                       decay_fraction=decay_fraction,
                                       warmup_iterations=warmup_iterations,
                                       extra_callbacks=extra_callbacks, verbose=verbose)
    results["proposals"] = stats
    save_rcnn_localizer(run.directory, model, init_from, prep, mean,
                        num_proposals=num_proposals, results=results,
                        display_names=meta.get("display_names"),
                        training=run.record(
                            data=data, init_from=init_from, learning_rate=learning_rate,
                            batch_size=batch_size, regions_per_image=regions_per_image,
                            positive_fraction=positive_fraction, fg_iou=fg_iou,
                            bg_iou=bg_iou, warp_size=warp))
    return {"model": model, "history": hist, "results": results,
            "directory": run.directory}
