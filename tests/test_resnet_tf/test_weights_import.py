"""Importing the ImageNet weights users have: each source's own model and
preprocessing against ``predict_files`` on the imported directory, on real
JPEGs; the folding guarded by sabotage; and every clear error.

The source models are built with random weights and BN statistics of the
real images, and saved in their framework's real file format (torch.save,
safetensors, Keras 2 HDF5 weights written by tf_keras, Keras 3 .keras/.h5).
Nothing is downloaded.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from conftest import REPO, shared_data
from resnet_tf import model_dir
from resnet_tf.weights import convention, import_classifier, importer
from weight_sources import keras_source, save_keras2_weights, tiny_torchvision_file, torch_source

pytest.importorskip("torch")
pytest.importorskip("safetensors")


def real_image_paths():
    hym = shared_data("hymenoptera") / "hymenoptera_data" / "val"
    loc = shared_data("imagenet-val-loc") / "images"
    return [str(hym / "ants" / "10308379_1b6c72e180.jpg"),
            str(hym / "bees" / sorted(os.listdir(hym / "bees"))[0]),
            str(loc / "ILSVRC2012_val_00000034.JPEG"),  # grayscale
            str(loc / "ILSVRC2012_val_00000001.JPEG"),
            str(loc / "ILSVRC2012_val_00000002.JPEG")]


@pytest.fixture(scope="module")
def real_pixels(tmp_path_factory):
    """``(paths, float32 [N, 224, 224, 3])``: the exact view ``predict``
    feeds (shorter side 256, centre 224), before mean subtraction."""
    from resnet_tf.data.decode import read_image_file
    from resnet_tf.data.preprocessing import Preprocessing

    prep = Preprocessing.for_style("imagenet")
    paths = real_image_paths()
    views = []
    for p in paths:
        image, error = read_image_file(p)
        assert error is None, (p, error)
        views.append(np.asarray(prep.mean_view(image), np.float32))
    pixels = np.stack(views)
    npy = tmp_path_factory.mktemp("pixels") / "pixels.npy"
    np.save(npy, pixels)
    return paths, pixels, str(npy)


@pytest.fixture(scope="module")
def keras_h5(real_pixels, tmp_path_factory):
    """``(model, logits, h5 path)``: the keras.applications ResNet50 source,
    its logits on the real views, and its Keras 2 HDF5 weights file (built
    once: two tests import it)."""
    _, pixels, _ = real_pixels
    src, want = keras_source(pixels)
    h5 = tmp_path_factory.mktemp("keras") / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    save_keras2_weights(src, h5)
    return src, want, h5


@pytest.fixture(scope="module")
def torchvision_files(real_pixels, tmp_path_factory):
    """``arch -> (logits, .pth path)``: torchvision sources written by
    torch.save on first use (resnet18 is read by two tests)."""
    import functools

    _, _, npy = real_pixels

    @functools.cache
    def get(arch):
        pth = tmp_path_factory.mktemp(arch) / f"{arch}.pth"
        return torch_source(f"torchvision:{arch}", npy, pth), pth

    return get


def imported_logits(directory, paths):
    """``predict_files`` on the imported directory, with the top's softmax
    switched off so the logits themselves are compared."""
    from resnet_tf.evaluate import predict_files

    clf = model_dir.load_classifier(directory)
    clf.model.get_layer("predictions").activation = keras.activations.linear
    n = len(clf.class_names)
    out = np.zeros((len(paths), n), np.float32)
    for i, row in enumerate(predict_files(clf, paths, top=n)):
        assert "error" not in row, row
        for p in row["predictions"]:
            out[i, p["class"]] = p["probability"]
    return out


def relative_gap(ours, theirs):
    """Largest |difference| over the largest |logit| of the source."""
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


# --- equality with each source's own model and preprocessing ------------------


@pytest.mark.slow
def test_keras_applications_h5_weights_match_keras_preprocess_input(real_pixels, keras_h5,
                                                                    tmp_path):
    paths, _, _ = real_pixels
    src, want, h5 = keras_h5
    info = import_classifier("keras-applications", str(h5), str(tmp_path / "clf"))
    assert info["depth"] == 50 and info["layout"] == {
        "stride_on": "1x1", "conv_bias": True, "bn_epsilon": pytest.approx(1.001e-5)}
    got = imported_logits(str(tmp_path / "clf"), paths)
    assert relative_gap(got, want) < 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()
    # The saved whole model, .keras and legacy .h5, give the same weights.
    for name in ("model.keras", "model.h5"):
        src.save(tmp_path / name)
        import_classifier("keras-applications", str(tmp_path / name), str(tmp_path / name[6:]))
        a = model_dir.load_classifier(str(tmp_path / "clf")).model
        b = model_dir.load_classifier(str(tmp_path / name[6:])).model
        for la, lb in zip(a.weights, b.weights):
            np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_pth_matches_torch_normalisation(real_pixels, torchvision_files, tmp_path,
                                                    arch):
    paths, _, _ = real_pixels
    want, pth = torchvision_files(arch)
    info = import_classifier("torchvision", str(pth), str(tmp_path / "clf"))
    assert info["layout"] == {"stride_on": "3x3", "conv_bias": False, "bn_epsilon": 1e-5}
    got = imported_logits(str(tmp_path / "clf"), paths)
    assert relative_gap(got, want) < 1e-4
    meta = model_dir.read_meta(str(tmp_path / "clf"))
    assert meta["preprocessing"]["imported_from"]["framework"] == "torchvision"
    mean = np.load(tmp_path / "clf" / "mean_image.npy")
    np.testing.assert_allclose(mean[0, 0], 255 * np.array(convention.IMAGENET_MEAN_RGB),
                               rtol=1e-6)
    assert np.ptp(mean.reshape(-1, 3), axis=0).max() == 0  # a constant image


@pytest.mark.slow
def test_timm_safetensors_reads_its_pretrained_config(real_pixels, tmp_path):
    """A hub-style timm folder whose config.json has its own mean and std
    (Inception-style 0.5/0.5): the import must use them, not ImageNet's."""
    paths, _, npy = real_pixels
    st = tmp_path / "model.safetensors"
    want = torch_source("timm:resnet18", npy, st, "--mean", "0.5,0.5,0.5",
                        "--std", "0.5,0.5,0.5", "--config-json")
    info = import_classifier("timm", str(st), str(tmp_path / "clf"))
    assert info["convention"]["mean_rgb_0_255"] == [127.5] * 3
    assert relative_gap(imported_logits(str(tmp_path / "clf"), paths), want) < 1e-4
    # The same weights as a .pth state dict without a config: ImageNet's
    # convention, so the logits differ from the 0.5/0.5 source.
    import torch
    from safetensors.torch import load_file

    os.remove(tmp_path / "config.json")
    pth = tmp_path / "plain" / "resnet18.pth"
    pth.parent.mkdir()
    torch.save(load_file(str(st)), pth)
    import_classifier("timm", str(pth), str(tmp_path / "clf2"))
    assert relative_gap(imported_logits(str(tmp_path / "clf2"), paths), want) > 1e-2


# --- the comparisons fail when the fold is broken -----------------------------


def _fold_without_permutation(kernel, conv):
    return convention.fold_into_conv1(kernel, convention.InputConvention(
        "RGB", conv.mean, conv.std))


def _fold_without_std(kernel, conv):
    return convention.fold_into_conv1(kernel, convention.InputConvention(
        conv.channel_order, conv.mean, (1.0, 1.0, 1.0)))


@pytest.mark.slow
def test_the_comparisons_fail_with_the_fold_broken(real_pixels, keras_h5, torchvision_files,
                                                  tmp_path, monkeypatch):
    paths, _, _ = real_pixels
    _, want_keras, h5 = keras_h5
    want_torch, pth = torchvision_files("resnet18")
    monkeypatch.setattr(importer, "fold_into_conv1", _fold_without_permutation)
    import_classifier("keras-applications", str(h5), str(tmp_path / "a"))
    assert relative_gap(imported_logits(str(tmp_path / "a"), paths), want_keras) > 1e-2
    monkeypatch.setattr(importer, "fold_into_conv1", _fold_without_std)
    import_classifier("torchvision", str(pth), str(tmp_path / "b"))
    assert relative_gap(imported_logits(str(tmp_path / "b"), paths), want_torch) > 1e-2


def test_fold_is_exact_on_random_convolutions():
    """The folded kernel on ``rgb - mean`` equals the source kernel on the
    source's normalised input, zero padding included (numpy, both orders)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 255, (2, 9, 11, 3)).astype(np.float32)
    kernel = rng.normal(size=(7, 7, 3, 4)).astype(np.float32)
    for conv in (convention.KERAS_CAFFE, convention.TORCH_IMAGENET):
        want = tf.nn.conv2d(conv.apply(rgb).astype(np.float32), kernel, 2, "SAME")
        ours = tf.nn.conv2d(rgb - np.asarray(conv.mean, np.float32),
                            convention.fold_into_conv1(kernel, conv), 2, "SAME")
        np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="3-channel"):
        convention.fold_into_conv1(np.zeros((7, 7, 4, 8)), convention.KERAS_CAFFE)


# --- class names --------------------------------------------------------------


def test_class_index_files_give_wnids_and_display_names(tmp_path):
    from resnet_tf.evaluate import predict_files

    meta_dir = shared_data("imagenet-meta")
    pth = tiny_torchvision_file(tmp_path)
    for i, index in enumerate(("imagenet_class_index.json", "LOC_synset_mapping.txt")):
        out = tmp_path / f"clf{i}"
        info = import_classifier("torchvision", pth, str(out),
                                 class_index=str(meta_dir / index))
        meta = model_dir.read_meta(str(out))
        assert meta["class_names"][:2] == ["n01440764", "n01443537"]
        assert meta["class_display_names"][0] == "tench"
        assert info["class_names_from"].endswith(index)
    row = predict_files(str(tmp_path / "clf0"), real_image_paths()[:1], top=1)[0]
    assert row["predictions"][0]["name"] in meta["class_display_names"]
    # Without a class index: numbered names, and the summary says so.
    info = import_classifier("torchvision", pth, str(tmp_path / "plain"))
    assert model_dir.read_meta(str(tmp_path / "plain"))["class_names"][7] == "class_0007"
    assert info["class_names_from"].startswith("numbered")


def test_a_no_top_file_needs_classes_and_gets_a_new_top(tmp_path):
    pth = tiny_torchvision_file(tmp_path, top=False)
    with pytest.raises(ValueError, match=r"resnet18_notop\.pth.*no classifier layer.*--classes"):
        import_classifier("torchvision", pth, str(tmp_path / "x"))
    info = import_classifier("torchvision", pth, str(tmp_path / "c5"), classes=5)
    assert info["classes"] == 5 and info["top"].startswith("new")
    with pytest.raises(ValueError, match="1000 classes, but --classes 5"):
        import_classifier("torchvision", tiny_torchvision_file(tmp_path), str(tmp_path / "y"),
                          classes=5)


# --- clear errors, each naming the file ----------------------------------------


def test_wrong_architecture_or_depth_is_named(tmp_path):
    import torch

    vgg = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3),
                "features.0.bias": torch.zeros(64)}, vgg)
    with pytest.raises(ValueError, match=r"vgg16\.pth: no 7x7 stem"):
        import_classifier("torchvision", str(vgg), str(tmp_path / "x"))
    r18 = tiny_torchvision_file(tmp_path)
    with pytest.raises(ValueError, match=r"resnet18\.pth: holds a ResNet-18, not the ResNet-50"):
        import_classifier("torchvision", r18, str(tmp_path / "x"), depth=50)
    # A ResNeXt-like file: grouped 3x3 kernels.
    state = torch.load(tiny_torchvision_file(tmp_path, depth=50), weights_only=True)
    state["layer1.0.conv2.weight"] = state["layer1.0.conv2.weight"][:, :2]
    torch.save(state, tmp_path / "resnext.pth")
    with pytest.raises(ValueError, match=r"resnext\.pth: grouped"):
        import_classifier("torchvision", str(tmp_path / "resnext.pth"), str(tmp_path / "x"))
    # keras.applications ResNet50V2 (pre-activation) is refused by name.
    v2 = keras.applications.ResNet50V2(weights=None, include_top=False,
                                       input_shape=(64, 64, 3))
    v2.save(tmp_path / "resnet50v2.keras")
    with pytest.raises(ValueError, match=r"resnet50v2\.keras: a pre-activation ResNetV2"):
        import_classifier("keras-applications", str(tmp_path / "resnet50v2.keras"),
                          str(tmp_path / "x"))


def test_truncated_garbage_and_lfs_pointer_files_are_named(tmp_path):
    good = tiny_torchvision_file(tmp_path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(good, "rb").read()[:100_000])
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(5000))
    lfs = tmp_path / "resnet50.pth"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:"
                   + "0" * 64 + "\nsize 102530333\n")
    cases = [("torchvision", truncated, r"truncated\.pth: could not read it"),
             ("timm", truncated, r"truncated\.pth: could not read it"),
             ("keras-applications", garbage, r"garbage\.h5: not a keras.applications file"),
             ("torchvision", lfs, r"resnet50\.pth: this is a git-lfs pointer"),
             ("keras-applications", lfs, r"resnet50\.pth: this is a git-lfs pointer"),
             ("torchvision", tmp_path / "missing.pth", r"missing\.pth: no such"),
             ("torchvision", tmp_path, "is a folder")]
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    cases.append(("timm", bad_st, r"bad\.safetensors: could not read it"))
    h5 = tmp_path / "half.h5"
    keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)).save(tmp_path / "m.h5")
    h5.write_bytes((tmp_path / "m.h5").read_bytes()[:300_000])
    cases.append(("keras-applications", h5, r"half\.h5: could not read it"))
    for source, path, message in cases:
        with pytest.raises(ValueError, match=message):
            import_classifier(source, str(path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_torch_file_without_torch_says_what_to_install(tmp_path):
    pth = tiny_torchvision_file(tmp_path)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from resnet_tf.weights import import_classifier\n"
            f"import_classifier('torchvision', {pth!r}, {str(tmp_path / 'x')!r})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode != 0
    assert "resnet18.pth: reading PyTorch checkpoints needs torch" in r.stderr
    assert "pip install torch" in r.stderr


def test_cli_import_classifier_json(tmp_path, capsys):
    from apps.cli import main

    pth = tiny_torchvision_file(tmp_path)
    index = shared_data("imagenet-meta") / "imagenet_class_index.json"
    rc = main(["import", "classifier", "--from", "torchvision", pth, "--out",
               str(tmp_path / "clf"), "--class-index", str(index), "--json"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["depth"] == 18 and info["classes"] == 1000
    assert info["convention"]["channel_order"] == "RGB"
    rc = main(["import", "classifier", "--from", "torchvision", str(tmp_path / "no.pth"),
               "--out", str(tmp_path / "c2")])
    assert rc == 2 and "no.pth: no such" in capsys.readouterr().err


@pytest.mark.slow
def test_keras_hub_preset_matches_its_image_converter(real_pixels, tmp_path):
    pytest.importorskip("keras_hub")
    from test_weights_keras_hub import make_classifier

    paths, pixels, _ = real_pixels
    clf = make_classifier(18, pixels)
    want = np.asarray(clf(clf.preprocessor.image_converter(pixels), training=False))
    clf.save_to_preset(str(tmp_path / "resnet_18_imagenet"))
    info = import_classifier("keras-hub", str(tmp_path / "resnet_18_imagenet"),
                             str(tmp_path / "clf"))
    assert info["layout"]["stride_on"] == "3x3"
    assert relative_gap(imported_logits(str(tmp_path / "clf"), paths), want) < 1e-4


def test_source_for_path_reads_the_form_of_the_name(tmp_path):
    from resnet_tf.weights.importer import source_for_path

    assert source_for_path("a/resnet50_weights_tf_dim_ordering_tf_kernels.h5") == \
        "keras-applications"
    assert source_for_path("r50.keras") == "keras-applications"
    assert source_for_path("resnet18-f37072fd.pth") == "torchvision"
    assert source_for_path("model.safetensors") == "timm"
    assert source_for_path(str(tmp_path)) == "keras-hub"
    with pytest.raises(ValueError, match=r"weights\.bin: can't tell"):
        source_for_path("weights.bin")
    with pytest.raises(ValueError, match="unknown weight source 'caffe'"):
        importer.read_source("caffe", "x.caffemodel")


@pytest.mark.slow
def test_keras_applications_no_top_weights_file(tmp_path):
    """The ``_notop.h5`` download: conv1..conv5 from the file, a new top of
    ``classes`` outputs."""
    tf_keras = pytest.importorskip("tf_keras")
    k2 = tf_keras.applications.ResNet50(weights=None, include_top=False,
                                        input_shape=(224, 224, 3))
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    k2.save_weights(str(path))
    with pytest.raises(ValueError, match=r"_notop\.h5: has no classifier layer"):
        import_classifier("keras-applications", str(path), str(tmp_path / "x"))
    info = import_classifier("keras-applications", str(path), str(tmp_path / "c"), classes=3)
    assert info["classes"] == 3 and info["depth"] == 50
    model = model_dir.load_classifier(str(tmp_path / "c")).model
    np.testing.assert_array_equal(  # not conv1 (folded): a later layer, bias included
        model.get_layer("conv5_block3_3_conv").get_weights()[1],
        k2.get_layer("conv5_block3_3_conv").get_weights()[1])


@pytest.mark.slow
@pytest.mark.parametrize("depth", [34, 101, 152])
def test_every_torchvision_depth_maps_onto_its_resnet(tmp_path, depth):
    """Depths whose source models the comparisons above do not build: the
    key mapping gives a ResNet of that depth whose every shape fits."""
    from resnet_tf import ResNet
    from resnet_tf.weights import assign_by_name
    from resnet_tf.weights.torch_files import read_torchvision

    sw = read_torchvision(tiny_torchvision_file(tmp_path, depth=depth))
    assert sw.config["depth"] == depth and sw.config["stride_on"] == "3x3"
    model = ResNet(**sw.config)
    assign_by_name(model, sw.weights)  # raises on any missing layer or shape


def test_an_imported_directory_evaluates_and_exports(tmp_path):
    """evaluate, predict and export take an imported directory unchanged: a
    folder of WordNet-ID class folders maps onto its classes, and the served
    probabilities equal predict's."""
    import tensorflow as tf

    from resnet_tf import export
    from resnet_tf.evaluate import evaluate_classifier, predict_files

    pth = tiny_torchvision_file(tmp_path)
    index = shared_data("imagenet-meta") / "LOC_synset_mapping.txt"
    clf = str(tmp_path / "clf")
    import_classifier("torchvision", pth, clf, class_index=str(index))
    files = real_image_paths()[:3]
    folder = tmp_path / "val"
    for wnid, f in zip(("n01440764", "n01443537", "n01443537"), files):
        (folder / wnid).mkdir(parents=True, exist_ok=True)
        os.symlink(f, folder / wnid / os.path.basename(f))
    r = evaluate_classifier(clf, f"folder:{folder}")
    assert r["images"] == 3 and 0 <= r["top1_error"] <= 1
    base = export.export_classifier(clf, str(tmp_path / "serving"))
    served = tf.saved_model.load(base).signatures["serving_default"](
        image_bytes=tf.constant([open(f, "rb").read() for f in files]))
    rows = predict_files(clf, files, top=1)
    for i, row in enumerate(rows):
        top = row["predictions"][0]
        assert int(served["top_k_classes"][i, 0]) == top["class"]
        np.testing.assert_allclose(float(served["top_k_scores"][i, 0]), top["probability"],
                                   rtol=1e-4)
