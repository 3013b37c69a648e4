"""Issue 8 (a crash inside TensorFlow: oneDNN's 1x1 strided filter gradient
on narrow maps) and issue 9 (reference conventions checked against peer
implementations: RoIAlign at the border, TFDS VOC box origin, the NMS
score threshold's wording)."""

import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import conftest
from box_fixtures import roi_align_reference
from conftest import shared_case
from detection.ops.nms import per_class_nms
from detection.ops.roi_align import roi_align
from resnet_tf import onednn_guard
from resnet_tf.onednn_guard import SubsampledPointwiseConv2D, needs_guard

MALLOC_DEBUG = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"



def _crash_env():
    """oneDNN on, as users run it, and glibc's heap checks where they exist
    so a corruption aborts instead of passing unnoticed."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="2",
               MALLOC_CHECK_="3")
    if os.path.exists(MALLOC_DEBUG):
        env["LD_PRELOAD"] = MALLOC_DEBUG
    return env


def _run(args, cwd, timeout=300):
    proc = subprocess.run(args, cwd=cwd, env=_crash_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"rc {proc.returncode} (139: segfault, 134: glibc abort)\n{proc.stdout[-2000:]}"
        f"\n{proc.stderr[-3000:]}")
    return proc


# --- issue 8: oneDNN ------------------------------------------------------------------


def test_the_width8_detector_case_trains(tmp_path):
    """The user's command, in a child process: it used to end in rc 139/134."""
    case = shared_case("small-voc-for-width8")
    out = tmp_path / "det"
    _run([sys.executable, "-m", "apps.cli", "train", "detector",
          "--data", f"voc:{case}", "--depth", "18", "--width", "8", "--iterations", "1",
          "--batch-size", "1", "--shorter-side", "128", "--max-side", "128",
          "--out", str(out)], cwd=conftest.REPO)
    assert (out / "detector.weights.h5").is_file() and (out / "resnet_tf.json").is_file()


_NARROW_NETS = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    import resnet_tf
    from resnet_tf.onednn_guard import SubsampledPointwiseConv2D
    nets = [dict(depth=18, width=8, input_shape=(128, 128, 3)),
            dict(depth=18, width=3, input_shape=(64, 64, 3), shortcut="C"),
            dict(depth=50, width=2, input_shape=(64, 64, 3), stride_on="1x1"),
            dict(depth=20, family="cifar", width=8, input_shape=(32, 32, 3), shortcut="B")]
    rng = np.random.default_rng(0)
    for kw in nets:
        model = resnet_tf.ResNet(classes=3, **kw)
        guarded = sum(isinstance(l, SubsampledPointwiseConv2D) for l in model.layers)
        assert guarded, kw  # each net has a 1x1 strided conv on < 16 channels
        for batch in (1, 2):
            x = tf.constant(rng.normal(size=(batch, *kw["input_shape"])), tf.float32)
            for _ in range(2):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(model(x, training=True) ** 2)
                grads = tape.gradient(loss, model.trainable_variables)
                assert all(g is not None for g in grads)
    print("ok")
""")


def test_narrow_networks_take_gradients_without_killing_the_process(tmp_path):
    """Beyond the case: every network whose 1x1 strided convolution sees
    fewer than 16 channels (basic and bottleneck blocks, stride on either
    conv, shortcuts B and C, both families), several batch sizes, in a
    child process under glibc's heap checks."""
    proc = _run([sys.executable, "-c", _NARROW_NETS], cwd=conftest.REPO)
    assert proc.stdout.strip().endswith("ok")


def test_the_guard_covers_exactly_the_faulty_convolutions():
    assert needs_guard(1, 2, 15) and needs_guard(1, 3, 1) and needs_guard(1, 2, None)
    assert not needs_guard(1, 2, 16)  # probed: 16 and more never failed
    assert not needs_guard(1, 1, 8) and not needs_guard(3, 2, 8) and not needs_guard(7, 2, 3)
    import resnet_tf

    basic = resnet_tf.ResNet(depth=18, width=8, input_shape=(64, 64, 3), classes=2)
    # conv2_x outputs 8 channels; conv3_x outputs 16, so conv4_x is plain.
    assert _guarded(basic) == {"conv3_block1_0_conv"}
    bottleneck = resnet_tf.ResNet(depth=50, width=2, input_shape=(64, 64, 3), classes=2)
    # conv2_x outputs 4 * 2 = 8 channels, conv3_x 16.
    assert _guarded(bottleneck) == {"conv3_block1_0_conv", "conv3_block1_1_conv"}
    assert resnet_tf.ResNet(depth=18, width=16, input_shape=(64, 64, 3),
                            classes=2).get_layer("conv3_block1_0_conv").__class__ \
        is keras.layers.Conv2D


def _guarded(model):
    return {l.name for l in model.layers if isinstance(l, SubsampledPointwiseConv2D)}


def _numpy_pointwise(x, kernel, s, dy):
    """A 1x1 stride-s convolution and its gradients, from the definition."""
    xs = x[:, ::s, ::s]
    y = np.einsum("bhwc,cf->bhwf", xs, kernel)
    dk = np.einsum("bhwc,bhwf->cf", xs, dy)
    dx = np.zeros_like(x)
    dx[:, ::s, ::s] = np.einsum("bhwf,cf->bhwc", dy, kernel)
    return y, dx, dk


@pytest.mark.parametrize("cin,strides,size,padding", [
    (8, 2, 16, "same"), (3, 2, 9, "valid"), (15, 3, 10, "same"), (1, 4, 7, "valid"),
    (16, 2, 11, "same"), (24, 3, 12, "valid")])
def test_subsampled_pointwise_conv_is_the_strided_conv(cin, strides, size, padding):
    """Same outputs and input/kernel gradients as the definition of a 1x1
    stride-s convolution; at >= 16 channels (where the native kernel is
    safe) also the same as keras.layers.Conv2D, bias included."""
    rng = np.random.default_rng(cin)
    x = rng.normal(size=(2, size, size + 1, cin)).astype(np.float32)
    args = dict(filters=5, kernel_size=1, strides=strides, padding=padding, use_bias=True)
    layer = SubsampledPointwiseConv2D(**args)
    layer.build(x.shape)
    kernel = rng.normal(size=(1, 1, cin, 5)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    layer.set_weights([kernel, bias])
    out_hw = (-(-size // strides), -(-(size + 1) // strides))
    dy = rng.normal(size=(2, *out_hw, 5)).astype(np.float32)

    def run(lay):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = lay(xt)
            loss = tf.reduce_sum(y * dy)
        dx, dk = tape.gradient(loss, [xt, lay.kernel])
        return y.numpy(), dx.numpy(), dk.numpy()

    y, dx, dk = run(layer)
    ry, rdx, rdk = _numpy_pointwise(x, kernel[0, 0], strides, dy)
    np.testing.assert_allclose(y, ry + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, rdx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk[0, 0], rdk, rtol=1e-5, atol=1e-4)
    assert layer.compute_output_shape(x.shape) == (2, *out_hw, 5)
    if cin >= onednn_guard.MIN_SAFE_CHANNELS:
        native = keras.layers.Conv2D(**args)
        native.build(x.shape)
        native.set_weights([kernel, bias])
        for a, b in zip(run(layer), run(native)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="only 1x1"):
        SubsampledPointwiseConv2D(4, 3, strides=2)


def test_guarded_models_keep_names_config_and_weights(tmp_path, monkeypatch):
    """The guard changes no layer name, config or weight key: weights saved
    without the guard (before it existed, or under another TF) load into a
    guarded model and back, with the same outputs; a .keras file holding the
    layer loads in safe mode, guarded."""
    import resnet_tf

    kw = dict(depth=18, width=8, input_shape=(64, 64, 3), classes=3)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    monkeypatch.setattr(onednn_guard, "MIN_SAFE_CHANNELS", 0)
    plain = resnet_tf.ResNet(**kw)
    monkeypatch.undo()
    keras.utils.set_random_seed(1)
    guarded = resnet_tf.ResNet(**kw)
    assert not _guarded(plain) and _guarded(guarded) == {"conv3_block1_0_conv"}
    assert [l.name for l in plain.layers] == [l.name for l in guarded.layers]
    for a, b in zip(plain.layers, guarded.layers):
        assert a.get_config() == b.get_config(), a.name
    for src, dst in ((plain, guarded), (guarded, plain)):
        path = str(tmp_path / f"{src is plain}.weights.h5")
        src.save_weights(path)
        dst.load_weights(path)
        np.testing.assert_allclose(dst.predict(x, verbose=0), src.predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-6)
    features = guarded.feature_model(("C3",))  # a plain functional model
    features.save(tmp_path / "f.keras")
    loaded = keras.saving.load_model(tmp_path / "f.keras", safe_mode=True)
    assert _guarded(loaded) == {"conv3_block1_0_conv"}
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["C3"],
                               features.predict(x, verbose=0)["C3"], rtol=1e-5, atol=1e-6)


_JAX_NARROW = textwrap.dedent("""
    import sys, numpy as np, keras
    assert keras.backend.backend() == "jax"
    import resnet_tf
    from resnet_tf.onednn_guard import SubsampledPointwiseConv2D
    model = resnet_tf.ResNet(depth=18, width=8, input_shape=(64, 64, 3), classes=3)
    assert isinstance(model.get_layer("conv3_block1_0_conv"), SubsampledPointwiseConv2D)
    model.load_weights(sys.argv[1])
    np.save(sys.argv[3], np.asarray(model(np.load(sys.argv[2]), training=False)))
""")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_guarded_model_under_jax_matches_tensorflow(tmp_path):
    """The guarded layer is keras.ops only: the same outputs under JAX."""
    import resnet_tf

    model = resnet_tf.ResNet(depth=18, width=8, input_shape=(64, 64, 3), classes=3)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    model.save_weights(tmp_path / "w.weights.h5")
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _JAX_NARROW, str(tmp_path / "w.weights.h5"),
                           str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          cwd=conftest.REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model(x).numpy(), atol=1e-5)


# --- issue 9: RoIAlign -----------------------------------------------------------------


def test_roi_align_example_from_the_issue():
    out = roi_align(tf.ones([1, 4, 4, 1]), tf.constant([[[0., 0., 32., 32.]]]), 2, 1 / 16, 2)
    np.testing.assert_allclose(out.numpy()[0, ..., 0], np.ones((2, 2)), rtol=1e-6)


@pytest.mark.parametrize("out,sr,scale", [(2, 2, 1 / 16), (3, 1, 1 / 8), (1, 3, 1 / 16)])
def test_roi_align_matches_torchvision_aligned_on_random_maps_and_boxes(out, sr, scale):
    """Random maps and boxes: inside, touching the image's edges (0 and the
    map's extent), past them by less and by more than a cell, thin and
    zero-size boxes."""
    rng = np.random.default_rng(int(out * 10 + sr))
    b, h, w, c = 2, 5, 7, 3
    feats = rng.normal(size=(b, h, w, c)).astype(np.float32)
    ext = np.array([h, w, h, w]) / scale  # the image the map covers, pixels
    boxes = []
    for _ in range(b):
        rows = []
        for kind in range(12):
            lo = rng.uniform(-0.3, 0.9, 2) * ext[:2]
            hi = lo + rng.uniform(0.05, 0.8, 2) * ext[:2]
            box = np.concatenate([lo, hi])
            if kind < 3:  # touching the image's edges
                box[[0, 1]] = np.where(rng.random(2) < 0.5, 0.0, box[[0, 1]])
                box[[2, 3]] = np.where(rng.random(2) < 0.5, ext[:2], box[[2, 3]])
            elif kind < 5:  # within a cell past the border, and far past it
                box[kind - 3] = -rng.uniform(0.1, 2.5) / scale
                box[kind - 1] = ext[kind - 3] + rng.uniform(0.1, 2.5) / scale
            elif kind == 5:  # zero size
                box[2:] = box[:2]
            rows.append(box)
        boxes.append(rows)
    boxes = np.asarray(boxes, np.float32)
    got = roi_align(feats, boxes, output_size=out, spatial_scale=scale,
                    sampling_ratio=sr).numpy()
    assert got.shape == (b * 12, out, out, c)
    near_border = 0
    for i in range(b):
        for r in range(12):
            ref = roi_align_reference(feats[i], boxes[i, r], out, scale, sr)
            np.testing.assert_allclose(got[i * 12 + r], ref, rtol=1e-4, atol=1e-4,
                                       err_msg=f"image {i} box {boxes[i, r]}")
            y0, x0, y1, x1 = boxes[i, r] * scale - 0.5
            near_border += min(y0, x0) < 0 or y1 > h - 1 or x1 > w - 1
    assert near_border >= 8  # the border band is really exercised


def test_roi_align_gradient_is_the_reference_transpose():
    """The gradient reaching the map is the transpose of the reference's
    (linear) sampling, edge repetition included."""
    rng = np.random.default_rng(5)
    h, w = 4, 5
    boxes = np.array([[[0, 0, 64, 80], [-10, 40, 30, 90], [20, 5, 70, 33]]], np.float32)
    weights = rng.normal(size=(3, 2, 2, 1))
    feats = tf.Variable(rng.normal(size=(1, h, w, 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(roi_align(feats, boxes, 2, 1 / 16, 2) * weights)
    grad = tape.gradient(loss, feats).numpy()[0, ..., 0]
    want = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            basis = np.zeros((h, w, 1))
            basis[i, j] = 1
            want[i, j] = sum(np.sum(roi_align_reference(basis, boxes[0, r], 2, 1 / 16, 2)
                                    * weights[r]) for r in range(3))
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-5)


def test_roi_align_refuses_a_zero_grid():
    with pytest.raises(ValueError, match="sampling_ratio >= 1"):
        roi_align(tf.ones([1, 4, 4, 1]), tf.zeros([1, 1, 4]), 2, 1 / 16, 0)


# --- issue 9: TFDS VOC boxes -------------------------------------------------------------

_XML = """<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"""
_OBJ = """<object><name>{label}</name><pose>Unspecified</pose><truncated>0</truncated>
<difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>
<ymax>{b[3]}</ymax></bndbox></object>"""


def _voc_devkit(root):
    """A VOCdevkit/VOC2007 folder, as the TFDS voc builder reads it: two
    JPEGs with 1-based inclusive boxes, one covering the whole image, one
    one pixel wide, and a degenerate one (xmax == xmin)."""
    year = root / "VOCdevkit" / "VOC2007"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (year / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {"a": (40, 60, [("dog", (1, 1, 60, 40)), ("person", (5, 7, 20, 31)),
                             ("cat", (30, 2, 31, 39))]),
              "b": (50, 30, [("car", (3, 4, 28, 50)), ("dog", (10, 10, 10, 20))])}
    for name, (h, w, objects) in images.items():
        pixels = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        tf.io.write_file(str(year / "JPEGImages" / f"{name}.jpg"), tf.io.encode_jpeg(pixels))
        (year / "Annotations" / f"{name}.xml").write_text(_XML.format(
            name=name, w=w, h=h, objects="".join(_OBJ.format(label=lab, b=b)
                                                  for lab, b in objects)))
    (year / "ImageSets" / "Main" / "test.txt").write_text("a\nb\n")
    return root, year


def test_tfds_voc_boxes_equal_the_voc_reader_boxes(tmp_path):
    """The same image and box through ``voc:`` and ``tfds:voc/2007`` (the
    examples made by TFDS's own voc builder code from the same files) give
    the same internal box."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.object_detection import voc as tfds_voc

    from detection.data.sources import open_detection_source
    from detection.data.voc import read_voc

    data_path, year = _voc_devkit(tmp_path)
    voc_anns, _, voc_report = read_voc(str(year), split="test")
    builder = tfds.builder("voc/2007")
    examples = [builder.info.features.encode_example(
        builder._generate_example(str(data_path), i, True)) for i in ("a", "b")]

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        specs = self.info.features.get_serialized_info()
        ds = tf.data.Dataset.from_generator(
            lambda: iter(examples), output_signature=tf.nest.map_structure(
                lambda t: tf.TensorSpec(t.shape, t.dtype), specs))
        ds = ds.map(lambda ex: self.info.features.decode_example(ex, decoders=decoders))
        ids = tf.data.Dataset.from_tensor_slices([f"voc-{split}.tfrecord__{i}"
                                                  for i in range(len(examples))])
        return tf.data.Dataset.zip(ds, ids).map(lambda e, i: {"tfds_id": i, **e})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        split = open_detection_source("tfds:voc/2007").split("eval")
    assert len(split.annotations) == len(voc_anns) == 2
    for v, t in zip(voc_anns, split.annotations):
        assert (t.height, t.width) == (v.height, v.width)
        np.testing.assert_allclose(t.boxes, v.boxes, atol=1e-3)
    np.testing.assert_allclose(split.annotations[0].boxes[0], [0, 0, 40, 60], atol=1e-3)
    assert split.report.dropped_boxes == voc_report.dropped_boxes == 1
    assert tfds_voc._get_example_objects  # the builder's own parser made the boxes


def test_tfds_boxes_of_other_builders_are_not_shifted():
    from detection.data.tfds import to_pixels

    rel = np.array([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.3, 0.4]], np.float32)
    np.testing.assert_allclose(to_pixels(rel, 100, 50, False), [[10, 10, 50, 30],
                                                                 [30, 15, 30, 20]], atol=1e-4)
    # VOC: (ymin - 1, xmin - 1, ymax, xmax); a degenerate box stays as written.
    np.testing.assert_allclose(to_pixels(rel, 100, 50, True), [[9, 9, 50, 30],
                                                                [30, 15, 30, 20]], atol=1e-4)


# --- issue 9: the NMS score threshold as the README states it ------------------------------


def test_readme_states_the_score_threshold_the_code_applies():
    readme = (conftest.REPO / "docs" / "detection.md").read_text()
    stated = re.findall(r"per-class NMS \(keeps score ([>≥]) 0\.05", readme)
    assert stated, "docs/detection.md no longer states the detection score threshold"
    boxes = tf.constant([[[[0., 0., 10., 10.]], [[20., 20., 30., 30.]]]])
    scores = tf.constant([[[0.05], [np.nextafter(np.float32(0.05), np.float32(1))]]])
    _, kept, _, count = per_class_nms(boxes, scores, 10, 10, score_threshold=0.05)
    keeps_equal = int(count[0]) == 2
    assert int(count[0]) >= 1 and float(kept[0, 0]) > 0.05
    assert stated == [("≥" if keeps_equal else ">")]
