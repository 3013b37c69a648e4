"""Step 1: the three synthetic sets and a picture of samples."""

import os

from resnet_tf import plots


def make_data(s, seed, out_dir):
    """The three synthetic sets (the same ones the training functions open
    from the ``synthetic`` spec) and a picture of samples."""
    from detection.data.sources import SyntheticDetectionSource
    from localization.data.sources import SyntheticLocSource
    from resnet_tf.data.sources import SyntheticSource

    clf = SyntheticSource(size=32, num_train=s.clf_train, num_eval=s.clf_eval, seed=seed)
    det = SyntheticDetectionSource(s.det_train, s.det_eval, s.det_size, seed)
    loc = SyntheticLocSource(s.loc_train, s.loc_eval, 32, seed)
    images, labels = clf.arrays("train")
    tiles = [plots.draw_boxes(images[i], [], scale=3) for i in range(8)]
    caps = [clf.class_names[labels[i]] for i in range(8)]
    split = det.split("train")
    for i in range(4):
        a = split.annotations[i]
        tiles.append(plots.draw_boxes(split.images[i], a.boxes,
                                [det.class_names[c] for c in a.classes],
                                colors=[(0, 200, 0)] * len(a.boxes)))
        caps.append(f"{len(a.boxes)} object{'s' if len(a.boxes) != 1 else ''}")
    lsplit = loc.split("train")
    for i in range(4):
        a = lsplit.annotations[i]
        tiles.append(plots.draw_boxes(lsplit.images[i], a.boxes, colors=[(0, 200, 0)] * 9,
                                scale=3))
        caps.append(loc.class_names[a.classes[0]])
    # Classification tiles are 96 px, detection tiles 128 px.
    path = os.path.join(out_dir, "pictures", "data_samples.png")
    plots.grid(tiles, columns=8, captions=caps).save(path)
    counts = {"classification": (s.clf_train, s.clf_eval),
              "detection": (s.det_train, s.det_eval),
              "localization": (s.loc_train, s.loc_eval)}
    return {"sources": {"classifier": clf, "detector": det, "localizer": loc},
            "counts": counts, "picture": path}
