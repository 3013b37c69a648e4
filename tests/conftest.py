"""Shared test helpers.

- ``shared_data(name)``: the path of a real dataset folder under
  ``$RESNET_TF_DATA`` or ``../shared/data``; skips when absent, fails under
  ``CI=true`` (CI must test on real data).
- ``shared_case(name)``: a user's failing input under ``../shared/cases``,
  the same way.
- ``op_determinism``: deterministic TF ops for one learning test, so its
  numbers do not vary with thread scheduling from run to run.
- ``keras_session``: every test starts from the float32 policy and a clean
  Keras session, with a fixed seed.
- ``module_scratch`` (autouse): a test file's temporary folders are removed
  after its last test unless one of its tests failed (``session_tmp`` makes
  a folder that lives for the session).
- ``small_data_root`` (session): a data root like ``data_root()`` whose
  datasets are linked in place, except the folders of ``SMALL_CUTS``
  (cifar10-jpg's and hymenoptera's train/val class folders), which keep
  every class but only the first few files of each (``small_data(dest)``
  builds one). End-to-end tests that only need a documented path to run
  (README examples, notebooks) read it instead of training and validating
  on every image (e.g. all 60,000 CIFAR ones).

The tests mirror the packages (``test_resnet_tf/``, ``test_detection/``,
``test_localization/``, ``test_apps/``, plus ``test_faults/`` for the user
cases that cross them). Each folder is put on ``sys.path`` here, so a test
may reuse another folder's fixtures builder by module name (test file names
are unique across folders); shared helpers live beside this file
(``box_fixtures``, ``export_helpers``, ``weight_sources``).
"""

import os
import pathlib
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def worker_thread_budget(cpus, workers):
    """Op threads for each of ``workers`` pytest-xdist processes sharing
    ``cpus`` cores: an equal share, at least 1. (Each TF or torch process
    otherwise starts one op thread a core, and N workers' pools on the same
    cores spin against each other: measured 8% more CPU for a detector test
    file beside one other busy process.)"""
    return max(1, cpus // max(1, workers))


# Under ``make test``'s xdist workers (set before TensorFlow or torch is
# imported, so subprocesses the tests start inherit it too). TF's inter-op
# pool keeps its default size: MirroredStrategy's collectives need it.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(worker_thread_budget(os.cpu_count() or 1,
                                        int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", _threads)
    os.environ.setdefault("OMP_NUM_THREADS", _threads)

# resnet_tf before keras (which imports TensorFlow): the package picks TF's
# oneDNN kernels before TF starts, as it does for users (resnet_tf.__init__).
import resnet_tf  # noqa: E402,F401
import keras  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
TEST_FOLDERS = sorted(p for p in REPO.joinpath("tests").glob("test_*") if p.is_dir())
sys.path.extend(str(p) for p in TEST_FOLDERS if str(p) not in sys.path)


def data_root():
    env = os.environ.get("RESNET_TF_DATA")
    return pathlib.Path(env) if env else REPO.parent / "shared" / "data"


def _present_or_skip(path, reason):
    """``path`` if it exists; else skip, or fail under ``CI=true`` (CI must
    test on the real files)."""
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def shared_data(name):
    path = data_root() / name
    return _present_or_skip(path, f"real data {path} not found (set RESNET_TF_DATA or put "
                                  "the shared data beside the repository)")


def shared_case(name):
    """A user's failing input under ``../shared/cases`` (read in place)."""
    path = REPO.parent / "shared" / "cases" / name
    return _present_or_skip(path, f"user case {path} not found (put the shared cases "
                                  "beside the repository)")


# What ``small_data`` cuts: folder (relative to the data root) -> files kept
# per class folder. Everything else is linked whole.
SMALL_CUTS = {
    "cifar10-jpg/train": 100,
    "cifar10-jpg/test": 50,
    "hymenoptera/hymenoptera_data/train": 16,
    "hymenoptera/hymenoptera_data/val": 8,
}


def small_data(dest, cuts=None):
    """A data root at ``dest`` (created) that mirrors ``data_root()`` with
    links: each folder named in ``cuts`` (default ``SMALL_CUTS``: relative
    path -> n) keeps its class folders, each holding links to only its first
    ``n`` files (sorted); everything else is linked whole. Returns ``dest``."""
    cuts = SMALL_CUTS if cuts is None else cuts
    src, dest = data_root(), pathlib.Path(dest)
    if not src.is_dir():  # no shared data: ``dest`` is not made either
        return dest

    def mirror(rel):
        out = dest / rel
        out.mkdir(parents=True, exist_ok=True)
        for entry in sorted((src / rel).iterdir()):
            sub = pathlib.PurePosixPath(rel, entry.name).as_posix().lstrip("./")
            if sub in cuts:
                for cls in sorted(p for p in entry.iterdir() if p.is_dir()):
                    (out / entry.name / cls.name).mkdir(parents=True)
                    for f in sorted(os.listdir(cls))[:cuts[sub]]:
                        os.symlink(cls / f, out / entry.name / cls.name / f)
            elif any(c.startswith(sub + "/") for c in cuts):
                mirror(sub)
            else:
                os.symlink(entry, out / entry.name)

    mirror(".")
    return dest


# Folders of session-scoped fixtures: ``module_scratch`` leaves them alone.
SESSION_DIRS = set()


def session_tmp(tmp_path_factory, name):
    """A numbered temporary folder that lives for the whole session (a
    session-scoped fixture's); other fixtures' folders are freed at the end
    of their test file."""
    path = tmp_path_factory.mktemp(name)
    SESSION_DIRS.add(path.name)
    return path


@pytest.fixture(scope="session")
def small_data_root(tmp_path_factory):
    """``small_data`` with the default cuts, made once. It skips nothing: a
    test that needs a dataset asks ``shared_data`` for it; without the shared
    data the path does not exist (as ``data_root()`` would not)."""
    return small_data(session_tmp(tmp_path_factory, "small_data") / "data")


@pytest.fixture(scope="module", autouse=True)
def module_scratch(request, tmp_path_factory):
    """Frees the disk a test file used. pyproject's
    ``tmp_path_retention_policy = "failed"`` removes a passing test's
    ``tmp_path``; the folders that module-scoped fixtures made with
    ``tmp_path_factory.mktemp`` (ResNet-50 weight files and SavedModels of
    ~100 MB each) are removed here, after the file's last test, unless a test
    of the file failed (they are kept to debug it, as pytest keeps a failed
    test's ``tmp_path``). Without them the suite held 11.9 GB of temporary
    files at its peak (2.3 GB with them), and CI failed with ENOSPC."""
    import shutil

    base = tmp_path_factory.getbasetemp()
    before = set(os.listdir(base))
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return
    for name in set(os.listdir(base)) - before - SESSION_DIRS:
        path = base / name
        if path.is_symlink():  # pytest's ``<prefix>current`` links
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


# A test that ran longer than this (seconds) has likely built big models: its
# garbage is collected when it ends. Python's own collector frees the rest.
COLLECT_AFTER_S = 2.0


@pytest.fixture(autouse=True)
def keras_session():
    """Each test starts from a clean Keras state (float32, fresh layer names,
    seed 0). ``clear_session`` runs without its ``gc.collect()`` (0.17 s of
    CPU each time with TensorFlow loaded: 200 s over the suite, twice a
    test); a full collection runs only after a test that took longer than
    ``COLLECT_AFTER_S``."""
    import gc
    import time

    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    start = time.monotonic()
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)
    if time.monotonic() - start > COLLECT_AFTER_S:
        gc.collect()


@pytest.fixture
def op_determinism():
    import tensorflow as tf
    from tensorflow.python.framework import config

    tf.config.experimental.enable_op_determinism()
    yield
    config.disable_op_determinism()


def inbound_layers(layer):
    """The layers whose outputs feed ``layer`` (its first call)."""
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    return [t._keras_history.operation for t in inputs]
