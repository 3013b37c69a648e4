"""``resnet-tf demo --quick`` end to end: every output written, each model
better than its trivial baseline, each export called; and the demo's
``--out`` folder rules, without running it."""

import json
import os

import pytest

from apps.cli import main
from apps.demo import KINDS, MARKER, grid_baseline_detections, prepare_out, run_demo


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
    from apps.export import EXPORTERS

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


def test_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(["demo", "--out", str(other), "--quick"]) == 2
    assert "not written by `resnet-tf demo`" in capsys.readouterr().err
    assert os.listdir(other) == ["keep.txt"]


def test_demo_replaces_its_own_outputs_and_keeps_other_files(tmp_path):
    out = tmp_path / "demo"
    prepare_out(str(out))
    assert json.loads((out / MARKER).read_text()) == {"written_by": "resnet-tf demo"}
    (out / "pictures" / "old.png").write_text("old")
    (out / "summary.txt").write_text("old")
    (out / "my-notes.txt").write_text("keep me")
    prepare_out(str(out))
    assert sorted(os.listdir(out)) == ["images", "models", "my-notes.txt", "pictures",
                                       MARKER, "serving"]
    assert os.listdir(out / "pictures") == []


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
