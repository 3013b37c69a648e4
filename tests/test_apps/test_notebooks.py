"""Every notebook runs top to bottom at the small size (a cell error fails),
and the committed notebooks carry no outputs."""

import os
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_five_notebooks():
    assert [p.stem for p in NOTEBOOKS] == ["01_classification", "02_degradation",
                                           "03_detection", "04_localization",
                                           "05_export_and_serving"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_are_stripped(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {i} has outputs; strip them"
            assert cell.execution_count is None, f"{path.name} cell {i} has a count"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, small_data_root):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # The kernel inherits the environment: the small size, and the shared data
    # with cifar10-jpg and hymenoptera cut to a few images a class
    # (conftest.small_data: the same folder paths; notebook 01 no longer
    # validates on all 10,000 CIFAR test images).
    # The notebooks' WORK folders (tempfile.mkdtemp) go in this test's tmp_path,
    # freed when it passes (~450 MB for 03 and 04).
    env = {"RESNET_TF_NB_SIZE": "small", "RESNET_TF_DATA": str(small_data_root),
           "TMPDIR": str(tmp_path)}
    env_before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in env_before.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_notebook_03_imports_the_weights_file_it_is_given(tmp_path):
    """With RESNET_TF_WEIGHTS set, notebook 03's set-up cells import the file
    (here a torchvision ResNet-18 .pth) and the detector starts from it. The
    cells after are the ones test_notebook_runs executes."""
    import nbformat
    from nbclient import NotebookClient

    pytest.importorskip("torch")
    from weight_sources import tiny_torchvision_file

    pth = tiny_torchvision_file(tmp_path)
    path = [p for p in NOTEBOOKS if p.stem == "03_detection"][0]
    nb = nbformat.read(path, as_version=4)
    nb.cells = nb.cells[:5] + [nbformat.v4.new_code_cell(
        "from resnet_tf import model_dir\n"
        "print('LAYOUT', model_dir.load_classifier(clf).model.stride_on, clf)")]
    old = {k: os.environ.get(k) for k in ("RESNET_TF_WEIGHTS", "RESNET_TF_NB_SIZE", "TMPDIR")}
    os.environ.update(RESNET_TF_WEIGHTS=pth, RESNET_TF_NB_SIZE="small", TMPDIR=str(tmp_path))
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "Imported torchvision ResNet-18 from" in text
    assert "LAYOUT 3x3" in text and "imported" in text
