"""conftest.small_data: the cut copy of the shared data that the README and
notebook tests read keeps every class and the first files of each, and
links everything else whole."""

import os

import conftest
from conftest import shared_data


def test_small_data_cuts_only_the_named_folders(tmp_path):
    src = shared_data("cifar10-jpg")
    shared_data("bccd")
    root = conftest.small_data(tmp_path / "data", cuts={"cifar10-jpg/train": 3})
    classes = sorted(os.listdir(src / "train"))
    assert sorted(os.listdir(root / "cifar10-jpg" / "train")) == classes
    for c in classes:
        kept = root / "cifar10-jpg" / "train" / c
        assert sorted(os.listdir(kept)) == sorted(os.listdir(src / "train" / c))[:3]
        assert all(os.path.realpath(kept / f) == os.path.realpath(src / "train" / c / f)
                   for f in os.listdir(kept))
    # Not named: linked whole, at every level.
    assert os.path.realpath(root / "cifar10-jpg" / "test") == os.path.realpath(src / "test")
    assert os.path.realpath(root / "bccd") == os.path.realpath(src.parent / "bccd")
    assert not (root / "cifar10-jpg").is_symlink()


def test_the_default_cuts_name_folders_that_exist():
    # A renamed dataset folder would otherwise be linked whole, silently.
    for rel in conftest.SMALL_CUTS:
        assert (shared_data(rel.split("/")[0]).parent / rel).is_dir(), rel
