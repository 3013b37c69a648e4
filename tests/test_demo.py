"""``resnet-tf demo --quick`` end to end: every output written, each model
better than its trivial baseline, each export called."""

import json
import os

import pytest

from resnet_tf import cli
from resnet_tf.demo import KINDS, grid_baseline_detections, run_demo


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, op_determinism):
    out = tmp_path / "demo"
    s = run_demo(str(out), quick=True, verbose=2)
    for row in s["rows"]:
        assert row["better"], f"{row['model']} {row['metric']}: {row['value']:.4f} is not " \
                              f"better than the baseline's {row['baseline']:.4f}"
    assert s["all_better"]
    for kind in KINDS:
        meta = json.load(open(out / "models" / kind / "resnet_tf.json"))
        assert meta["kind"] == kind
    from resnet_tf.export import EXPORTERS

    exported = [k for k in KINDS if k in EXPORTERS]
    assert {"classifier", "detector"} <= set(exported)
    for kind in exported:
        assert (out / "serving" / kind / "1" / "saved_model.pb").exists()
        called = s["serving"][kind]
        # [real photo, synthetic JPEG], or the synthetic one alone (and a note)
        # where no real photo is found: never a synthetic file called real.
        sent = 2 if called["real_photo"] else 1
        assert len(called["files"]) == sent and called["outputs"]
        assert all(shape[0] == sent for shape in called["outputs"].values())
        assert called["files"][0] == (called["real_photo"] or called["files"][-1])
        assert (called["real"] is None) == (not called["real_photo"])
        assert called["real_photo"] or any(kind in n and "no real photo" in n
                                           for n in s["notes"])
    for path in s["pictures"]:
        assert os.path.getsize(path) > 1000, path
    names = {os.path.basename(p) for p in s["pictures"]}
    assert {"classifier_curves.png", "detector_curves.png", "localizer_curves.png",
            "detections.png", "localizations.png"} <= names
    summary = json.load(open(out / "summary.json"))
    assert summary["all_better"] and "top-1 error" in open(out / "summary.txt").read()
    # A second run into the same folder replaces the first's outputs; any
    # other non-empty folder is refused.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    assert cli.main(["demo", "--out", str(tmp_path / "other"), "--quick"]) == 2


def test_grid_baseline_covers_the_image_with_every_class():
    import numpy as np

    from detection.data.annotations import ImageAnnotation

    anns = [ImageAnnotation("a", 100, 100, np.array([[10, 10, 30, 50]], np.float32),
                            np.array([1], np.int32), np.zeros(1, bool))]
    d = grid_baseline_detections(anns, 3, 100, 100)
    assert set(d["classes"].tolist()) == {0, 1, 2}
    assert d["scores"][d["classes"] == 1].max() == 1.0
    assert d["boxes"][:, 2].max() <= 100 and d["boxes"][:, 3].max() <= 100
    assert np.allclose(np.median(d["boxes"][:, 2] - d["boxes"][:, 0]), 20)
