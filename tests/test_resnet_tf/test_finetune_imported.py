"""Detection and localization fine-tune from every imported layout:
keras.applications v1 with conv bias (ResNet-50), torchvision v1.5 without
(ResNet-18 and -50). The trunk and the conv5 RoI head hold exactly the
imported weights, a training step runs, and frozen BN statistics stay put.
"""

import numpy as np
import pytest

from conftest import shared_data
from resnet_tf import model_dir
from resnet_tf.weights import import_classifier, named_weights
from weight_sources import keras_source, save_keras2_weights, torch_source

pytest.importorskip("torch")

SMALL_DETECTOR = dict(anchor_scales=(32, 64), roi_batch=16, rpn_batch=32, pooled_size=14,
                      proposals=dict(pre_nms_train=200, post_nms_train=32,
                                     pre_nms_test=100, post_nms_test=16))


@pytest.fixture(scope="module", params=["keras50", "torchvision18", "torchvision50"])
def imported(request, tmp_path_factory):
    """``(layout name, classifier directory)``, imported with the ILSVRC
    synsets as class names."""
    tmp = tmp_path_factory.mktemp(request.param)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    index = str(shared_data("imagenet-meta") / "LOC_synset_mapping.txt")
    if request.param == "keras50":
        src, _ = keras_source(np.resize(pixels, (2, 224, 224, 3)))
        path = tmp / "resnet50.h5"
        save_keras2_weights(src, path)
        source = "keras-applications"
    else:
        np.save(tmp / "px.npy", pixels)
        path = tmp / f"resnet{request.param[-2:]}.pth"
        torch_source(f"torchvision:resnet{request.param[-2:]}", str(tmp / "px.npy"), path)
        source = "torchvision"
    out = tmp / "clf"
    import_classifier(source, str(path), str(out), class_index=index)
    return request.param, str(out)


def _assert_same(layer_names, mine, theirs, what):
    assert layer_names, what
    for name in layer_names:
        assert len(mine[name]) == len(theirs[name]), (what, name)
        for a, b in zip(mine[name], theirs[name]):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: {name}")


def _bn_statistics(weights):
    return {n: w[2:] for n, w in weights.items() if n.endswith("_bn")}


@pytest.mark.slow
def test_the_detector_fine_tunes_from_the_imported_layout(imported, tmp_path):
    from detection.heads import load_backbone_weights
    from detection.model import FasterRCNN
    from detection.model_dir import load_detector
    from detection.train import train_detector

    name, directory = imported
    clf = model_dir.load_classifier(directory)
    cfg = clf.model.get_config()
    want = named_weights(clf.model)
    layout = {k: cfg[k] for k in ("stride_on", "conv_bias", "bn_epsilon")}
    assert layout["conv_bias"] == (name == "keras50")
    assert layout["stride_on"] == ("1x1" if name == "keras50" else "3x3")

    # Loading: every trunk and conv5 layer, biases included, equals the import.
    model = FasterRCNN(2, depth=clf.model.depth, **layout, **SMALL_DETECTOR)
    model.ensure_built()
    copied = load_backbone_weights(model, clf.model)
    head = named_weights(model.roi_head)
    conv5 = [n for n in head if n.startswith("conv5")]
    assert len(conv5) == len([n for n in want if n.startswith("conv5")])
    _assert_same(conv5, head, want, "conv5 head")
    if layout["conv_bias"]:
        assert len(head["conv5_block1_1_conv"]) == 2  # kernel and bias
    trunk = named_weights(model.trunk)
    _assert_same(list(trunk), trunk, want, "trunk")
    assert set(copied) == set(trunk) | set(conv5)

    # A training step through the library entry point the CLI calls.
    r = train_detector("synthetic", str(tmp_path / "det"), init_from=directory,
                       iterations=1, batch_size=1, shorter_side=128, max_side=128,
                       learning_rate=0.01, warmup_iterations=0, verbose=0,
                       model_kwargs=SMALL_DETECTOR, synthetic_train=2, synthetic_eval=1)
    trained = r["model"]
    assert trained.get_config()["stride_on"] == layout["stride_on"]
    after = {**named_weights(trained.trunk), **named_weights(trained.roi_head)}
    for n, stats in _bn_statistics(after).items():  # frozen BN: statistics kept
        for a, b in zip(stats, want[n][2:]):
            np.testing.assert_array_equal(a, b, err_msg=n)
    _assert_same(["conv1_conv", "conv2_block1_1_conv"], after, want, "frozen stem/conv2")
    assert not np.array_equal(after["conv4_block1_1_conv"][0],
                              want["conv4_block1_1_conv"][0])  # the step ran
    reloaded, _, _ = load_detector(r["directory"])
    assert reloaded.get_config()["conv_bias"] == layout["conv_bias"]


@pytest.mark.slow
# The localizer's trunk is the same code at: one v1.5 depth is enough.
@pytest.mark.parametrize("imported", ["keras50", "torchvision18"], indirect=True)
def test_the_localizer_fine_tunes_from_the_imported_layout(imported, tmp_path):
    from localization.train import train_localizer

    name, directory = imported
    clf = model_dir.load_classifier(directory)
    want = named_weights(clf.model)
    root = shared_data("imagenet-val-loc")
    r = train_localizer(f"ilsvrc-loc:{root}", str(tmp_path / "loc"), init_from=directory,
                        iterations=1, batch_size=2, learning_rate=0.001, verbose=0,
                        anchor_scales=(64, 128), anchor_ratios=(1.0,), head_channels=16)
    model = r["model"]
    # The kept classifier is the import, unchanged.
    _assert_same(list(want), named_weights(model.classifier), want, "classifier")
    trunk = named_weights(model.trunk)
    for n, stats in _bn_statistics(trunk).items():
        for a, b in zip(stats, want[n][2:]):
            np.testing.assert_array_equal(a, b, err_msg=n)
    assert model.trunk.get_layer("conv1_conv").use_bias == clf.model.conv_bias
