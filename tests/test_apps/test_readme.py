"""Every command and code example in README.md and docs/*.md is run here.

The documents are read, not copied, in reading order: README.md, then the
guides in docs/ in the order the README first links them, then any other
guide. Their fenced blocks are extracted and
- every ``resnet-tf`` line (examples and the command reference) must parse
  with the real CLI parser, and every flag of the reference must exist;
- the ``resnet-tf models`` table must equal what the built models report;
- the Python examples are executed;
- the shell examples are executed in order, each distinct line once, in a
  scratch folder, through the CLI's ``main`` (the same function the console
  script calls), with the substitutions in ``SUBSTITUTIONS`` (where the
  docs name data or paths a test machine does not have) and the size flags
  in ``SMALL`` appended (argparse keeps the last value, so the docs' own
  flags are still parsed and any flag not overridden keeps its documented
  value); the shared data is read through ``conftest.small_data_root``
  (every dataset linked in place, but cifar10-jpg's and hymenoptera's class
  folders cut to their first few images: the same folder paths, minutes
  less of validation);
- the ``docker run`` and ``curl`` lines are checked against the exported
  model: the mounted folder is a TF Serving model base path, and the curl
  body (built by bash from a real JPEG) is answered by the exported
  SavedModel with TF Serving's REST rules (tests/test_resnet_tf/test_export_requests.py).
The README is a front door (at most ``README_MAX_LINES`` lines), and every
relative link of the README and the guides points at a file that exists
(and, with ``#anchor``, at a heading of it).
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess

import pytest

import conftest
from conftest import shared_data

ROOT = str(conftest.REPO)
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
README_MAX_LINES = 220

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def cli_module():
    """The module whose ``build_parser`` / ``main`` the console script uses:
    ``apps.cli`` (the application layer), or ``resnet_tf.cli`` in a tree
    that does not have it yet."""
    import importlib

    try:
        return importlib.import_module("apps.cli")
    except ModuleNotFoundError as e:
        if e.name not in ("apps", "apps.cli"):
            raise
        return importlib.import_module("resnet_tf.cli")


def _strip_code(text):
    """``text`` without fenced blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(path):
    """The relative link targets of a markdown file, in order."""
    text = _strip_code(open(path, encoding="utf-8").read())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def documents():
    """README.md, then docs/*.md in the order the README first links them,
    then any guide the README does not link (sorted)."""
    guides = sorted(glob.glob(os.path.join(DOCS, "*.md")))
    linked = []
    for target in relative_links(README):
        path = os.path.normpath(os.path.join(ROOT, target.split("#")[0]))
        if path in guides and path not in linked:
            linked.append(path)
    return [README] + linked + [g for g in guides if g not in linked]


def readme_blocks(lang=None):
    """``(language, text)`` of each fenced block of the README and the
    guides, in reading order."""
    out = []
    for path in documents():
        text = open(path, encoding="utf-8").read()
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
        out += [(lg, body) for lg, body in blocks if lang is None or lg == lang]
    return out


def shell_lines(body):
    """The commands of a shell block: continuations joined, comments cut."""
    joined = re.sub(r"\\\n\s*", " ", body)
    lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def readme_commands():
    """Each ``resnet-tf`` example line (not the reference) and its block, in
    reading order; a line written again later (the same command in two
    documents) is listed once, at its first place."""
    out, seen = [], set()
    for i, (lang, body) in enumerate(readme_blocks("")):
        if "[options]" in body:  # the command reference
            continue
        for line in shell_lines(body):
            if line.startswith("resnet-tf ") and line not in seen:
                seen.add(line)
                out.append((i, line))
    return out


def reference_block():
    (body,) = [b for lang, b in readme_blocks("") if "[options]" in b]
    return shell_lines(body)


def expand_reference(line):
    """``resnet-tf train classifier --config cifar|imagenet ... [options]`` ->
    argument lists, one per alternative of each ``a|b`` token."""
    line = line.replace("[options]", "").replace("[", "").replace("]", "")
    line = re.sub(r"\bN\b", "1", line)  # the one numeric metavar (--seed N, --version N)
    tokens = shlex.split(line)[1:]
    width = max(len(t.split("|")) for t in tokens)
    return [[t.split("|")[min(k, len(t.split("|")) - 1)] for t in tokens]
            for k in range(width)]


def example_argv(line):
    """A README example line -> argv: optional ``[...]`` parts included, the
    numeric metavar ``N`` (``--version N``) given as 1."""
    line = re.sub(r"\bN\b", "1", line.replace("[", "").replace("]", ""))
    return shlex.split(line)[1:]


def test_readme_blocks_are_found():
    kinds = [lang for lang, _ in readme_blocks()]
    assert kinds.count("python") >= 3 and len(readme_commands()) >= 14
    assert len(reference_block()) >= 10


def heading_anchors(path):
    """The ``#anchor`` of each heading of a markdown file, as GitHub makes
    them: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", open(path, encoding="utf-8").read(),
                  flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


def test_readme_is_a_front_door():
    lines = open(README, encoding="utf-8").read().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it a front door of at most "
        f"{README_MAX_LINES} and move the rest into a guide in docs/")


def test_every_relative_link_resolves():
    broken = []
    for doc in documents():
        for target in relative_links(doc):
            file, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(doc), file)) if file else doc
            name = os.path.relpath(doc, ROOT)
            if not os.path.exists(path):
                broken.append(f"{name}: {target} (no such file)")
            elif anchor and path.endswith(".md") and anchor not in heading_anchors(path):
                broken.append(f"{name}: {target} (no heading #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_links_every_guide():
    guides = sorted(glob.glob(os.path.join(DOCS, "*.md")))
    assert len(guides) >= 8, "the guides are missing from docs/"
    linked = {os.path.normpath(os.path.join(ROOT, t.split("#")[0]))
              for t in relative_links(README)}
    unlinked = [os.path.relpath(g, ROOT) for g in guides if g not in linked]
    assert not unlinked, f"the README does not link {unlinked}"


def test_every_readme_command_parses():
    parser = cli_module().build_parser()
    for _, line in readme_commands():
        argv = example_argv(line)
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README command does not parse: {line}")
        assert callable(args.func), line


def test_reference_lists_every_command_with_real_flags():
    import argparse

    parser = cli_module().build_parser()
    listed = set()
    for line in reference_block():
        for argv in expand_reference(line):
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"README reference line does not parse: {argv}")
            listed.add(argv[0] if argv[0] in ("models", "demo") else " ".join(argv[:2]))
    # Every command the CLI has is in the reference.
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = set()
    for verb, p in sub.choices.items():
        tasks = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        commands |= {f"{verb} {t}" for t in tasks[0].choices} if tasks else {verb}
    assert listed == commands, (f"missing from the README's reference: "
                                f"{sorted(commands - listed)}; not commands: "
                                f"{sorted(listed - commands)}")


def test_models_table_matches_the_built_models():
    from resnet_tf.cli import _human, describe_models

    (table,) = [b for lang, b in readme_blocks("") if b.startswith("name ")]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    names = ["resnet18", "plain18", "resnet20", "plain56", "resnet110"]
    for r in describe_models(names):
        got = [r["name"], r["family"], r["block"], r["shortcut"], str(r["input_size"]),
               f"{r['params']:,}", f"{r['trainable_params']:,}", _human(r["macs"])]
        assert rows[r["name"]] == got


def test_make_targets_in_the_readme_exist():
    for target in ("demo", "test"):
        out = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr
    assert "resnet-tf demo" in subprocess.run(
        ["make", "-n", "-W", ".venv/.runtime", "demo"], cwd=ROOT, capture_output=True,
        text=True).stdout
    assert "make test" in open(os.path.join(ROOT, ".ci", "run")).read()


@pytest.fixture(scope="module")
def resnet50_h5(tmp_path_factory):
    """A weights file in keras.applications' own (legacy HDF5) format, any
    values, standing in for the downloaded one (both example tests read it)."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    path = tmp_path_factory.mktemp("weights") / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(
            f, keras.applications.ResNet50(weights=None))
    keras.backend.clear_session()
    return path


@pytest.mark.slow
def test_python_examples_run(tmp_path, monkeypatch, small_data_root, resnet50_h5):
    import numpy as np
    import keras

    blocks = [b for lang, b in readme_blocks("python")]
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    path = resnet50_h5
    shared_data("hymenoptera")
    # hymenoptera cut to 16 + 8 images a class (conftest.small_data): one
    # training step of the same folder path instead of eight.
    data = str(small_data_root)
    scopes = []
    for body in blocks:
        code = (body.replace("/path/to/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                             str(path))
                .replace("../shared/data", data)
                .replace("epochs=30", "epochs=1")
                .replace('crops="10"', 'crops="10", max_images=16'))
        scope = {}
        exec(compile(code, "README.md or docs/", "exec"), scope)  # noqa: S102
        scopes.append(scope)
        keras.backend.clear_session()
    assert [s for s in scopes if "result" in s][0]["result"].history["val_top1"]
    fast = [s for s in scopes if "run" in s and "probs" in s][0]  # "Fast inference"
    np.testing.assert_allclose(fast["probs"], np.asarray(fast["model"](fast["images"])),
                               atol=1e-5)


def _ilsvrc_subset(dest, n=6):
    """An ILSVRC LOC folder (images/, the val CSV, the synset mapping) holding
    the first ``n`` of the shared val images, linked, not copied."""
    src = shared_data("imagenet-val-loc")
    (dest / "images").mkdir(parents=True)
    rows = open(src / "LOC_val_solution_subset.csv").read().splitlines()
    keep = rows[:1] + rows[1:n + 1]
    with open(dest / "LOC_val_solution.csv", "w") as f:
        f.write("\n".join(keep) + "\n")
    for row in keep[1:]:
        name = row.split(",")[0] + ".JPEG"
        os.symlink(src / "images" / name, dest / "images" / name)
    shutil.copy(src / "LOC_synset_mapping.txt", dest / "LOC_synset_mapping.txt")


def _weight_files(dest, resnet50_h5):
    """The ImageNet weight files the README's import examples name, each in
    its framework's real format with random weights (nothing downloads); the
    keras.applications one is ``resnet50_h5``, linked."""
    import numpy as np
    import keras

    from test_weights_import import torch_source

    os.symlink(resnet50_h5, dest / resnet50_h5.name)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.save(dest / "pixels.npy", pixels)
    torch_source("torchvision:resnet18", str(dest / "pixels.npy"),
                 dest / "resnet18-f37072fd.pth")
    torch_source("timm:resnet18", str(dest / "pixels.npy"), dest / "model.safetensors")
    try:
        from test_weights_keras_hub import make_classifier
    except pytest.skip.Exception:  # keras-hub not installed: the command must say so
        return
    make_classifier(18, np.resize(pixels, (2, 224, 224, 3))).save_to_preset(
        str(dest / "resnet_18_imagenet"))
    keras.backend.clear_session()


# Where the README names something this machine does not have.
SUBSTITUTIONS = [
    # The shared data, wherever it is (cifar10-jpg cut to a few images a
    # class: conftest.small_data).
    ("../shared/data", "{data}"),
    # ImageNet from TFDS: TFDS's own mock_data stands in for the prepared set
    # (the test runs these commands inside tfds.testing.mock_data).
    ("--data-dir ~/tensorflow_datasets", "--data-dir {tmp}/tfds"),
    # An ILSVRC LOC folder: six real val images with their CSV rows.
    ("ilsvrc-loc:PATH:val", "ilsvrc-loc:{tmp}/ilsvrc:val"),
    ("ilsvrc-loc:PATH", "ilsvrc-loc:{tmp}/ilsvrc:val"),
    # A photo of the user's: real JPEGs from the shared data.
    ("photo.jpg", "{tmp}/photo.jpg"),
    ("cells.jpg", "{tmp}/cells.jpg"),
    # Size: ResNet-18 instead of ResNet-50 (same code path, 1/2 the time).
    ("--model resnet50", "--model resnet18"),
]

# Appended per command so each runs in seconds.
SMALL = {
    ("train", "classifier"): ["--iterations", "2", "--batch-size", "4", "--mean-images", "64"],
    ("evaluate", "classifier"): ["--max-images", "8", "--batch-size", "4"],
    ("train", "detector"): ["--iterations", "2", "--batch-size", "1", "--shorter-side",
                            "128", "--max-side", "160"],
    # 300 proposals an image through conv5 cost 2 s an image: four images, not 72.
    ("evaluate", "detector"): ["--max-images", "4"],
    # A 32-channel head: the 1,000 classes' per-class layers at 512 channels
    # (23M weights) dominated training, testing and both exports.
    ("train", "localizer"): ["--iterations", "2", "--batch-size", "4", "--num-proposals", "8",
                             "--warp-size", "64", "--head-channels", "32"],
    ("evaluate", "localizer"): ["--max-images", "3", "--scales", "224,256",
                                "--num-proposals", "8"],
}


def _substitute(line, tmp, data):
    for old, new in SUBSTITUTIONS:
        line = line.replace(old, new.format(tmp=tmp, data=data))
    return line


@pytest.mark.slow
def test_shell_examples_run(tmp_path, monkeypatch, capsys, small_data_root, resnet50_h5):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from test_export_requests import serve_rest

    cli = cli_module()
    shared_data("bccd")
    # The shared data with cifar10-jpg cut to 100 + 50 images a class (the
    # same folder layout): `train classifier --data folder:...cifar10-jpg`
    # otherwise validates on all 10,000 test images (2,500 steps at batch 4).
    data = str(small_data_root)
    monkeypatch.chdir(tmp_path)
    os.symlink(next((shared_data("hymenoptera") / "hymenoptera_data" / "val" / "bees")
                    .glob("*.jpg")), tmp_path / "photo.jpg")
    os.symlink(shared_data("bccd") / "BCCD" / "JPEGImages" / "BloodImage_00001.jpg",
               tmp_path / "cells.jpg")
    os.symlink(tmp_path / "photo.jpg", tmp_path / "cat.jpg")
    _ilsvrc_subset(tmp_path / "ilsvrc")
    _weight_files(tmp_path, resnet50_h5)

    ran = []
    with tfds.testing.mock_data(num_examples=8):
        for _, line in readme_commands():
            line = _substitute(line, tmp_path, data)
            argv = example_argv(line)
            if argv[0] in ("models", "demo"):  # tested above / by test_demo.py
                continue
            argv += SMALL.get(tuple(argv[:2]), [])
            code = cli.main(argv)
            out = capsys.readouterr()
            assert code == 0, f"{line}\n{out.out[-2000:]}\n{out.err[-2000:]}"
            ran.append(" ".join(argv[:2]))
    for name in ("import classifier", "train classifier", "evaluate classifier",
                 "predict classifier",
                 "train detector", "evaluate detector", "predict detector",
                 "train localizer", "evaluate localizer", "predict localizer",
                 "export classifier", "export detector", "export localizer"):
        assert name in ran, f"the README has no `resnet-tf {name}` example that ran"
    assert (tmp_path / "cells-boxes.png").stat().st_size > 1000
    assert (tmp_path / "photo-box.png").stat().st_size > 1000

    # docker run: the mounted folder is a model base path with version 1,
    # served under MODEL_NAME; the curl line asks that name.
    (serve,) = [b for _, b in readme_blocks("") if "docker run" in b]
    docker = next(line for line in shell_lines(serve) if line.startswith("docker run"))
    mount = re.search(r'-v "\$PWD/([^:]+):/models/(\w+)"', docker)
    name = re.search(r"MODEL_NAME=(\w+)", docker).group(1)
    assert mount and mount.group(2) == name
    assert (tmp_path / mount.group(1) / "1" / "saved_model.pb").exists()
    (curl_block,) = [b for _, b in readme_blocks("") if "curl" in b]
    curl = shell_lines(curl_block)[0]
    assert f"/v1/models/{name}:predict" in curl
    # bash builds the body exactly as the README line would send it.
    body_expr = curl.split(" -d ", 1)[1]
    body = subprocess.run(["bash", "-c", f"printf %s {body_expr}"], cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout
    loaded = tf.saved_model.load(str(tmp_path / mount.group(1) / "1"))
    answer = json.loads(serve_rest(loaded, body))
    (prediction,) = answer["predictions"]
    assert len(prediction["top_k_labels"]) == 5
    assert abs(sum(prediction["probabilities"]) - 1) < 1e-3
