"""Reading keras-hub ResNet preset folders (resnet_tf.weights.keras_hub).

Presets are made here with random weights (nothing is downloaded): a
keras-hub ResNetImageClassifier with its preprocessor, BN statistics taken
from real images, saved with ``save_to_preset``; the resnet-tf model built
from what ``read_keras_hub`` returns must give the same logits.
"""

import json
import os
import shutil

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import shared_data  # noqa: E402
from resnet_tf import ResNet  # noqa: E402
from resnet_tf.weights.assign import assign_by_name  # noqa: E402
from resnet_tf.weights.convention import TORCH_IMAGENET  # noqa: E402
from resnet_tf.weights.keras_hub import read_keras_hub  # noqa: E402
from weight_sources import calibrate_batch_norms  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's, as keras-hub converts
LAYOUTS = {18: ("basic_block", [2, 2, 2, 2]), 50: ("bottleneck_block", [3, 4, 6, 3])}
CLASSES = 7


def ant_pixels(n=4, size=224):
    """float32 [n, size, size, 3]: real JPEGs, RGB in [0, 255]."""
    files = sorted((shared_data("hymenoptera/hymenoptera_data") / "val" / "ants")
                   .glob("*.jpg"))[:n]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize(
        (size, size), Image.BILINEAR), np.float32) for f in files])


def backbone_kwargs(depth=18, **overrides):
    block_type, blocks = LAYOUTS[depth]
    kw = dict(input_conv_filters=[64], input_conv_kernel_sizes=[7],
              stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=blocks,
              stackwise_num_strides=[1, 2, 2, 2], block_type=block_type,
              use_pre_activation=False)
    kw.update(overrides)
    return kw


def make_classifier(depth, pixels, seed=0):
    """A keras-hub ResNet classifier (logits) with random weights and BN
    statistics of ``pixels`` (one training-mode pass, momentum 0)."""
    backbone = keras_hub.models.ResNetBackbone(**backbone_kwargs(depth))
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(224, 224), scale=[1 / 255 / s for s in STD],
        offset=[-m / s for m, s in zip(MEAN, STD)])
    preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(
        image_converter=converter)
    clf = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=CLASSES, preprocessor=preprocessor,
        activation=None)
    rng = calibrate_batch_norms(backbone, lambda: backbone(converter(pixels), training=True),
                                seed)
    head = clf.get_layer("predictions")
    head.bias.assign(rng.normal(0, 0.1, CLASSES).astype("float32"))
    return clf


@pytest.fixture(scope="module")
def pixels():
    return ant_pixels()


@pytest.fixture(scope="module")
def presets(pixels, tmp_path_factory):
    """{depth: (preset folder, keras-hub logits of ``pixels``)}."""
    out = {}
    for depth in LAYOUTS:
        keras.utils.set_random_seed(depth)
        clf = make_classifier(depth, pixels, seed=depth)
        x = clf.preprocessor.image_converter(pixels)
        folder = tmp_path_factory.mktemp(f"resnet{depth}")
        clf.save_to_preset(str(folder))
        out[depth] = (str(folder), np.asarray(clf(x, training=False)),
                      np.asarray(x))
    return out


@pytest.mark.parametrize("depth", sorted(LAYOUTS))
def test_preset_gives_the_same_logits(presets, pixels, depth):
    folder, want, converted = presets[depth]
    sw = read_keras_hub(folder)
    assert sw.source == "keras-hub" and sw.path == folder
    assert sw.config == dict(depth=depth, family="imagenet", shortcut="B",
                             stride_on="3x3", conv_bias=False, bn_epsilon=1e-5,
                             include_top=True, classes=CLASSES)
    assert sw.details["classifier_activation"] is None
    assert sw.details["image_size"] == [224, 224]
    conv = sw.convention
    assert conv.channel_order == "RGB"
    np.testing.assert_allclose(conv.mean, TORCH_IMAGENET.mean, rtol=1e-9)
    np.testing.assert_allclose(conv.std, TORCH_IMAGENET.std, rtol=1e-9)
    # The convention reproduces keras-hub's own preprocessing of the pixels.
    np.testing.assert_allclose(conv.apply(pixels), converted, atol=1e-4, rtol=0)
    assert all(w.dtype == np.float32 for ws in sw.weights.values() for w in ws)

    model = ResNet(**sw.config, classifier_activation=None)
    assign_by_name(model, sw.weights, source=folder)
    got = np.asarray(model(conv.apply(pixels).astype("float32"), training=False))
    scale = np.abs(want).max()
    assert scale > 1e-3  # a real comparison, not of zeros
    np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=0)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def copy_preset(src, dst, skip=()):
    """A copy of preset folder ``src`` (weights hard-linked, to be cheap)."""
    os.makedirs(dst)
    for name in os.listdir(src):
        if name in skip:
            continue
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if name.endswith(".h5"):
            os.link(s, d)
        else:
            shutil.copy(s, d)
    return str(dst)


def edit_json(path, edit):
    with open(path) as f:
        obj = json.load(f)
    edit(obj)
    with open(path, "w") as f:
        json.dump(obj, f)


def test_backbone_alone_needs_a_convention(presets, tmp_path):
    src = presets[18][0]
    folder = copy_preset(src, tmp_path / "bb", skip=("task.json", "task.weights.h5",
                                                       "preprocessor.json",
                                                       "image_converter.json"))
    with pytest.raises(ValueError, match="has no image converter"):
        read_keras_hub(folder)
    sw = read_keras_hub(folder, convention=TORCH_IMAGENET)
    assert sw.config["include_top"] is False and "predictions" not in sw.weights
    assert sw.convention == TORCH_IMAGENET
    assign_by_name(ResNet(**sw.config), sw.weights)
    # image_converter.json alone is enough.
    shutil.copy(os.path.join(src, "image_converter.json"), folder)
    conv = read_keras_hub(folder).convention
    np.testing.assert_allclose(conv.mean, TORCH_IMAGENET.mean, rtol=1e-9)


def test_missing_files_are_named(presets, tmp_path):
    src = presets[18][0]
    with pytest.raises(ValueError, match="does not exist"):
        read_keras_hub(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="config.json: no such file"):
        read_keras_hub(copy_preset(src, tmp_path / "a", skip=("config.json",)))
    with pytest.raises(ValueError, match="model.weights.h5 file"):
        read_keras_hub(copy_preset(src, tmp_path / "b", skip=("model.weights.h5",)))
    with pytest.raises(ValueError, match="task.weights.h5 file"):
        read_keras_hub(copy_preset(src, tmp_path / "c", skip=("task.weights.h5",)))


def test_lfs_pointer_and_truncated_file(presets, tmp_path):
    src = presets[18][0]
    folder = copy_preset(src, tmp_path / "lfs", skip=("model.weights.h5",))
    with open(os.path.join(folder, "model.weights.h5"), "w") as f:
        f.write("version https://git-lfs.github.com/spec/v1\n"
                "oid sha256:" + "0" * 64 + "\nsize 44929368\n")
    with pytest.raises(ValueError, match="git-lfs pointer"):
        read_keras_hub(folder)
    folder = copy_preset(src, tmp_path / "cut", skip=("model.weights.h5",))
    with open(os.path.join(src, "model.weights.h5"), "rb") as f:
        head = f.read(1 << 20)
    with open(os.path.join(folder, "model.weights.h5"), "wb") as f:
        f.write(head)
    with pytest.raises(ValueError, match=r"model\.weights\.h5: could not read it"):
        read_keras_hub(folder)
    folder = copy_preset(src, tmp_path / "json", skip=("config.json",))
    with open(os.path.join(src, "config.json")) as f:
        text = f.read()
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(text[:len(text) // 2])
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        read_keras_hub(folder)


def test_weights_of_another_preset_are_refused(presets, tmp_path):
    folder = copy_preset(presets[18][0], tmp_path / "mix", skip=("model.weights.h5",))
    os.link(os.path.join(presets[50][0], "model.weights.h5"),
            os.path.join(folder, "model.weights.h5"))
    with pytest.raises(ValueError, match="does not fit the model of"):
        read_keras_hub(folder)


def write_backbone_config(presets, tmp_path, name, backbone):
    folder = copy_preset(presets[18][0], tmp_path / name,
                         skip=("config.json", "task.json", "task.weights.h5"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(keras.saving.serialize_keras_object(backbone), f)
    return folder


@pytest.mark.parametrize("name, backbone, message", [
    ("v2", lambda: keras_hub.models.ResNetBackbone(**backbone_kwargs(
        use_pre_activation=True)), "pre-activation ResNetV2"),
    ("vd", lambda: keras_hub.models.ResNetBackbone(**backbone_kwargs(
        block_type="basic_block_vd", input_conv_filters=[32, 32, 64],
        input_conv_kernel_sizes=[3, 3, 3])), "ResNet-vd"),
    ("stem3", lambda: keras_hub.models.ResNetBackbone(**backbone_kwargs(
        input_conv_kernel_sizes=[3])), "its stem has convolutions with kernels"),
    ("resnet26", lambda: keras_hub.models.ResNetBackbone(**backbone_kwargs(
        block_type="bottleneck_block")), r"bottleneck blocks per stage \[2, 2, 2, 2\]"),
    ("vgg", lambda: keras_hub.models.VGGBackbone(
        stackwise_num_repeats=[1], stackwise_num_filters=[4], image_shape=(32, 32, 3)),
     "holds a keras-hub VGGBackbone"),
])
def test_layouts_resnet_tf_cannot_represent(presets, tmp_path, name, backbone, message):
    folder = write_backbone_config(presets, tmp_path, name, backbone())
    with pytest.raises(ValueError, match=message) as err:
        read_keras_hub(folder)
    assert folder in str(err.value)


def test_max_pooling_head_is_refused(presets, tmp_path):
    folder = copy_preset(presets[18][0], tmp_path / "maxpool")
    edit_json(os.path.join(folder, "task.json"),
              lambda t: t["config"].update(pooling="max"))
    with pytest.raises(ValueError, match="global average pooling"):
        read_keras_hub(folder)
