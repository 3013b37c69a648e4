"""resnet_tf.atomic, the one writer of every file a later run reads: a
writer killed at any moment leaves the old complete file or the new complete
one, and the next write cleans what the killed one left."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from resnet_tf import atomic, model_dir

# The child loads resnet_tf/atomic.py by path (it imports only the standard
# library), so a process starts in ~50 ms instead of importing TensorFlow.
WRITER = r'''
import hashlib, importlib.util, json, os, random, sys
spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
target, mode, generation = sys.argv[2], sys.argv[3], int(sys.argv[4])
rng = random.Random(os.getpid())
while True:
    generation += 1
    payload = rng.randbytes(rng.randint(1, 400_000))
    digest = hashlib.sha256(payload).hexdigest()
    if mode == "json":
        atomic.write_json(target, {"generation": generation, "sha256": digest,
                                   "payload": payload.hex()})
    elif mode == "bytes":
        atomic.write_bytes(target, b"%d %s\n" % (generation, digest.encode()) + payload)
    else:  # a writer callable that writes in pieces, as Keras's savers do
        def write(path):
            with open(path, "wb") as f:
                f.write(b"%d %s\n" % (generation, digest.encode()))
                for i in range(0, len(payload), 16_384):
                    f.write(payload[i:i + 16_384])
                    f.flush()
        atomic.atomic_write(target, write)
'''


def parse(path, mode):
    """(generation, complete) of a file a writer left; (None, False) for a
    file cut before its header is whole."""
    data = open(path, "rb").read()
    try:
        if mode == "json":
            obj = json.loads(data)
            payload = bytes.fromhex(obj["payload"])
            return obj["generation"], hashlib.sha256(payload).hexdigest() == obj["sha256"]
        header, _, payload = data.partition(b"\n")
        generation, digest = header.split()
        return int(generation), hashlib.sha256(payload).hexdigest() == digest.decode()
    except ValueError:  # JSONDecodeError too
        return None, False


def temporaries(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(".tmp"))


@pytest.mark.parametrize("mode", ["bytes", "json", "chunks"])
def test_a_writer_killed_at_random_moments_leaves_old_or_new_never_partial(tmp_path, mode):
    """A child rewrites one file in a loop (random sizes up to 400 kB) and is
    SIGKILLed after a random delay, 25 times. Each time the file is a
    complete version, the last one seen or a newer one; the next write
    (here, the test's) removes the killed writer's temporaries."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / ("state.json" if mode == "json" else "state.bin")
    rng = random.Random(1)
    generation, left_behind = 0, 0
    for _ in range(25):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(REPO / "resnet_tf" / "atomic.py"),
             str(target), mode, str(generation)], stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 0.4))
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        if not target.exists():  # killed before its first write completed
            assert generation == 0
        else:
            seen, complete = parse(target, mode)
            assert complete, f"{target}: a partial file ({len(target.read_bytes())} bytes)"
            assert seen >= generation, (seen, generation)
            generation = seen
        left_behind += bool(temporaries(folder))
        # The next write: the killed writer's temporaries go.
        generation += 1
        if mode == "json":
            atomic.write_json(target, {"generation": generation,
                                       "sha256": hashlib.sha256(b"").hexdigest(),
                                       "payload": ""})
        else:
            atomic.write_bytes(target, b"%d %s\n" % (generation, hashlib.sha256(
                b"").hexdigest().encode()))
        assert temporaries(folder) == []
        assert parse(target, mode) == (generation, True)
    # The kills did land mid-write, so the cleaning was put to the test.
    assert left_behind >= 3, left_behind


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_go_and_live_ones_stay(tmp_path):
    """Old and new temporary names of a dead process are removed (also a
    folder, from atomic_directory); those of a live process, and files that
    are not temporaries, stay."""
    dead = dead_pid()
    stale = [f".tmp-{dead}-0a1b2c3d-meta.json", f".tmp-{dead}-last.keras",
             f".tmp{dead}-resnet_tf.json"]
    for name in stale:
        (tmp_path / name).write_text("partial")
    (tmp_path / f".tmp-{dead}-0a1b2c3d-1").mkdir()
    live = tmp_path / f".tmp-{os.getpid()}-0a1b2c3d-meta.json"
    live.write_text("being written")
    (tmp_path / "tmp-note.txt").write_text("mine")
    assert atomic.remove_stale_temporaries(str(tmp_path), "meta.json") == 1
    assert not (tmp_path / stale[0]).exists() and (tmp_path / stale[1]).exists()
    assert atomic.remove_stale_temporaries(str(tmp_path)) == 3
    assert sorted(os.listdir(tmp_path)) == [live.name, "tmp-note.txt"]


def test_model_directory_writes_are_flushed_and_clean_up(tmp_path, monkeypatch):
    """model_dir's files get the writer's full guarantee: the file and its
    folder are fsynced, and a killed writer's temporary of the same file is
    removed by the next write."""
    stale = tmp_path / f".tmp{dead_pid()}-{model_dir.META}"
    stale.write_text("{")
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    model_dir.write_meta(str(tmp_path), "classifier", policy="float32")
    assert str(tmp_path) in synced  # the folder, after the rename
    assert any(os.path.basename(p).endswith(model_dir.META) for p in synced)
    assert not stale.exists()
    assert model_dir.read_meta(str(tmp_path))["kind"] == "classifier"


def test_atomic_directory(tmp_path):
    target = tmp_path / "1"
    with atomic.atomic_directory(str(target)) as tmp:
        with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
            f.write("graph")
        assert not target.exists()
    assert (target / "saved_model.pb").read_text() == "graph"
    with pytest.raises(FileExistsError, match=str(target)):
        with atomic.atomic_directory(str(target)):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_directory(str(tmp_path / "2")) as tmp:
            open(os.path.join(tmp, "half"), "w").close()
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["1"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    atomic.write_json(str(path), {"v": 1})

    def fail(p):
        open(p, "w").write('{"v": 2')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(str(path), fail)
    assert json.loads(path.read_text()) == {"v": 1}
    assert temporaries(tmp_path) == []
    with pytest.raises(TypeError):
        atomic.write_json(str(path), {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}
