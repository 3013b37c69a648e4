"""``resnet_tf.folders.claim_folder``: a tool replaces what it wrote in a
folder it owns, and never touches anything else."""

import json
import os

import pytest

from resnet_tf.folders import claim_folder

MARKER = "tool.json"


def _tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path)
                  for d, dirs, files in os.walk(path) for f in files + dirs)


def test_a_new_folder_is_created_and_marked_first(tmp_path):
    out = tmp_path / "a" / "b"
    assert claim_folder(str(out), MARKER, owner="tool") == str(out)
    assert json.loads((out / MARKER).read_text()) == {"written_by": "tool"}
    claim_folder(str(tmp_path / "c"), MARKER, owner="tool", record={"n": 1})
    assert json.loads((tmp_path / "c" / MARKER).read_text()) == {"n": 1}
    (tmp_path / "empty").mkdir()
    claim_folder(str(tmp_path / "empty"), MARKER, owner="tool")
    assert os.listdir(tmp_path / "empty") == [MARKER]


def test_a_folder_the_tool_did_not_write_is_refused_and_left_alone(tmp_path):
    mine = tmp_path / "mine"
    (mine / "models").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    before = _tree(mine)
    with pytest.raises(ValueError, match=r"--out .*mine is not empty and was not written "
                       r"by `the tool` \(no tool.json\); give a new or empty folder"):
        claim_folder(str(mine), MARKER, owner="`the tool`", owned=("models",),
                     label="--out ")
    assert _tree(mine) == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file is a file; give a new or empty folder"):
        claim_folder(str(tmp_path / "file"), MARKER, owner="tool")
    assert (tmp_path / "file").read_text() == "x"


def test_a_marked_folder_loses_only_what_the_tool_owns(tmp_path):
    out = tmp_path / "out"
    claim_folder(str(out), MARKER, owner="tool", owned=("models", "summary.json"))
    (out / "models" / "m").mkdir(parents=True)
    (out / "models" / "m" / "w.h5").write_text("w")
    (out / "summary.json").write_text("{}")
    (out / "my-notes.txt").write_text("keep me")
    claim_folder(str(out), MARKER, owner="tool", owned=("models", "summary.json"))
    assert sorted(os.listdir(out)) == ["my-notes.txt", MARKER]


def test_exclusive_folders_clear_the_listed_entries_and_refuse_others(tmp_path):
    out = tmp_path / "crops"
    kw = dict(owner="tool", listed_key="splits", exclusive=True)
    claim_folder(str(out), MARKER, record={"splits": ["train", "val"]}, **kw)
    for split in ("train", "val"):
        (out / split / "cat").mkdir(parents=True)
        (out / split / "cat" / "0.jpg").write_text("j")
    claim_folder(str(out), MARKER, record={"splits": ["train"]}, **kw)
    assert sorted(os.listdir(out)) == [MARKER]
    # Something the tool did not write: refused, and nothing is removed.
    (out / "train").mkdir()
    (out / "extra").mkdir()
    with pytest.raises(ValueError, match=r"holds \['extra'\], which tool did not write"):
        claim_folder(str(out), MARKER, record={"splits": ["train"]}, **kw)
    assert sorted(os.listdir(out)) == ["extra", MARKER, "train"]
    # Entries the marker lists are removed only by plain name, never as a path.
    victim = tmp_path / "victim"
    victim.mkdir()
    (out / "extra").rmdir()
    (out / MARKER).write_text(json.dumps({"splits": ["train", "../victim", ".."]}))
    claim_folder(str(out), MARKER, record={"splits": []}, **kw)
    assert victim.is_dir() and os.listdir(out) == [MARKER]


def test_an_unreadable_marker_is_named(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("{not json")
    with pytest.raises(ValueError, match=r"tool.json is unreadable; delete .*out or give"):
        claim_folder(str(out), MARKER, owner="tool", listed_key="splits")
    assert (out / MARKER).read_text() == "{not json"
