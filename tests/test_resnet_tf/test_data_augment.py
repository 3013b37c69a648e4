"""The paper's augmentation and evaluation views: numerical invariants,
stateless determinism, and the ImageNet chain on real photos."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import shared_data
from resnet_tf.data import augment, views
from resnet_tf.data.decode import decode_image


def seed(i):
    return tf.constant([i, 17], tf.int64)


def random_image(height, width, low=0, rng=0):
    return np.random.default_rng(rng).integers(low, 256, (height, width, 3)).astype(np.uint8)


def find_window(big, small):
    """All (top, left) where ``small`` equals a window of ``big`` (numpy)."""
    h, w = small.shape[:2]
    return [(t, l) for t in range(big.shape[0] - h + 1) for l in range(big.shape[1] - w + 1)
            if np.array_equal(big[t:t + h, l:l + w], small)]


# --- resizing -----------------------------------------------------------------


@pytest.mark.parametrize("height,width,size", [(375, 500, 256), (500, 333, 256),
                                               (100, 100, 224), (30, 47, 480),
                                               (256, 300, 256)])
def test_resize_shorter_side(height, width, size):
    out = augment.resize_shorter_side(random_image(height, width), size)
    assert out.dtype == tf.float32
    short, long_ = sorted((height, width))
    expected_long = int(np.round(long_ * size / short))
    expected = (size, expected_long) if height <= width else (expected_long, size)
    assert out.shape == (*expected, 3)


def test_resize_keeps_value_range_and_identity():
    constant = np.full((40, 60, 3), 200, np.uint8)
    np.testing.assert_allclose(augment.resize_shorter_side(constant, 100), 200, atol=1e-3)
    image = random_image(32, 48)
    np.testing.assert_array_equal(augment.resize_shorter_side(image, 32), image)


def test_random_resized_scale_covers_256_to_480():
    image = random_image(6, 9)  # landscape: the height becomes s
    sizes = []
    for i in range(300):
        out = augment.random_resized_scale(image, seed(i))
        assert out.shape[1] == int(np.round(9 * out.shape[0] / 6))
        sizes.append(out.shape[0])
    sizes = np.array(sizes)
    assert sizes.min() >= 256 and sizes.max() <= 480
    assert sizes.min() < 256 + 15 and sizes.max() > 480 - 15  # both ends reached
    assert abs(sizes.mean() - 368) < 15  # uniform: mean (256 + 480) / 2
    assert len(set(sizes)) > 150  # integers, not a few fixed scales
    portrait = augment.random_resized_scale(random_image(9, 6), seed(0))
    assert portrait.shape[1] == sizes[0]


# --- random ops: determinism ------------------------------------------------------

RANDOM_OPS = {
    "random_resized_scale": lambda x, s: augment.random_resized_scale(x, s),
    "random_crop": lambda x, s: augment.random_crop(x, s, 24),
    "random_flip": lambda x, s: augment.random_flip(x, s),
    "pca_color": lambda x, s: augment.pca_color(tf.cast(x, tf.float32), s),
    "pad_and_crop": lambda x, s: augment.pad_and_crop(x, s),
}


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_same_seed_same_output_different_seed_different_output(name):
    op, image = RANDOM_OPS[name], random_image(32, 40)
    first = op(image, seed(3)).numpy()
    np.testing.assert_array_equal(first, op(image, seed(3)).numpy())
    np.testing.assert_array_equal(first, op(image, tf.constant([3, 17], tf.int32)).numpy())
    others = [op(image, seed(i)).numpy() for i in range(4, 12)]
    assert any(o.shape != first.shape or not np.array_equal(o, first) for o in others)


def test_split_seed():
    seeds = augment.split_seed(seed(0), 4)
    assert len(seeds) == 4 and all(s.shape == (2,) for s in seeds)
    assert len({tuple(s.numpy()) for s in seeds}) == 4
    again = augment.split_seed(seed(0), 4)
    assert all(np.array_equal(a, b) for a, b in zip(seeds, again))

    @tf.function(input_signature=[tf.TensorSpec([2], tf.int64)])
    def in_graph(s):
        first, second = augment.split_seed(s, 2)  # unpacking works in graph mode
        return first, second
    np.testing.assert_array_equal(in_graph(seed(0))[1], augment.split_seed(seed(0), 2)[1])


# --- crops and flips --------------------------------------------------------------


def test_random_crop_is_a_window_of_the_image():
    image = random_image(20, 30)
    positions = set()
    for i in range(20):
        crop = augment.random_crop(image, seed(i), 16).numpy()
        assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
        (position,) = find_window(image, crop)
        positions.add(position)
    assert len(positions) > 5


def test_random_flip_is_mirror_or_identity_and_both_happen():
    image = random_image(8, 12)
    flipped = 0
    for i in range(40):
        out = augment.random_flip(image, seed(i)).numpy()
        if np.array_equal(out, image[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, image)
    assert 5 < flipped < 35


def test_pad_and_crop_is_a_window_of_the_zero_padded_image():
    image = random_image(32, 32, low=1)  # no zeros, so padding is identifiable
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    positions = set()
    for i in range(30):
        crop = augment.pad_and_crop(image, seed(i)).numpy()
        assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
        (position,) = find_window(padded, crop)
        assert 0 <= min(position) and max(position) <= 8
        positions.add(position)
    assert len(positions) > 10


# --- PCA colour ------------------------------------------------------------------


def test_pca_color_matches_numpy_reference():
    image = random_image(10, 14).astype(np.float32)
    for i in range(5):
        out = augment.pca_color(image, seed(i)).numpy()
        offset = out - image
        np.testing.assert_allclose(offset, np.broadcast_to(offset[0, 0], offset.shape),
                                   atol=1e-4)  # the same RGB offset at every pixel
        alpha = tf.random.stateless_normal([3], seed(i), stddev=0.1).numpy()
        eigval = np.array(augment.IMAGENET_EIGVAL)
        eigvec = np.array(augment.IMAGENET_EIGVEC)
        expected = sum(alpha[k] * eigval[k] * eigvec[:, k] for k in range(3))
        np.testing.assert_allclose(offset[0, 0], expected, atol=1e-4)


def test_pca_color_offsets_have_the_expected_scale():
    eigvec = np.array(augment.IMAGENET_EIGVEC)
    eigval = np.array(augment.IMAGENET_EIGVAL)
    # columns are unit eigenvectors of a symmetric matrix: orthonormal
    np.testing.assert_allclose(eigvec.T @ eigvec, np.eye(3), atol=2e-3)
    zero = np.zeros((1, 1, 3), np.float32)
    offsets = np.stack([augment.pca_color(zero, seed(i)).numpy()[0, 0] for i in range(400)])
    coefficients = np.linalg.solve(eigvec, offsets.T).T  # alpha_i * lambda_i
    alphas = coefficients / eigval
    np.testing.assert_allclose(alphas.std(0), 0.1, atol=0.015)
    np.testing.assert_allclose(alphas.mean(0), 0.0, atol=0.02)
    # per channel, std sqrt(sum_i (0.1 lambda_i p_ci)^2): about 3.2 grey
    # levels, nearly all from the first (luminance) component
    expected_std = np.sqrt(((0.1 * eigval * eigvec) ** 2).sum(1))
    np.testing.assert_allclose(offsets.std(0), expected_std, rtol=0.15)
    assert 3.0 < expected_std.min() and expected_std.max() < 3.4
    assert augment.pca_color(zero, seed(0), std=0.0).numpy().max() == 0


# --- mean --------------------------------------------------------------------------


def test_subtract_mean_same_size_is_exact():
    image = random_image(16, 20).astype(np.float32)
    mean = np.random.default_rng(1).uniform(0, 255, (16, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(augment.subtract_mean(image, mean), image - mean)


def test_subtract_mean_resizes_the_mean_image():
    image = random_image(24, 30).astype(np.float32)
    mean = np.random.default_rng(1).uniform(0, 255, (16, 20, 3)).astype(np.float32)
    out = augment.subtract_mean(image, mean)
    assert out.shape == (24, 30, 3)
    np.testing.assert_allclose(out, image - tf.image.resize(mean, [24, 30]).numpy(),
                               atol=1e-4)
    constant = np.full((8, 8, 3), [10.0, 20.0, 30.0], np.float32)
    np.testing.assert_allclose(augment.subtract_mean(image, constant),
                               image - [10.0, 20.0, 30.0], atol=1e-4)


# --- evaluation views -------------------------------------------------------------


def test_center_crop_view_is_the_centre():
    image = random_image(300, 400)
    resized = augment.resize_shorter_side(image, 256).numpy()
    assert resized.shape == (256, 341, 3)
    view = views.center_crop_view(image)
    assert view.shape == (224, 224, 3) and view.dtype == tf.float32
    # Only the crop is resampled (views.center_crop_view): equal to the
    # resize's window up to float rounding of the sample positions.
    np.testing.assert_allclose(view, resized[16:240, 58:282], atol=0.02)


def test_ten_crop_views_are_corners_centre_and_mirrors():
    image = random_image(280, 210)  # portrait
    resized = augment.resize_shorter_side(image, 64).numpy()
    h, w = resized.shape[:2]
    assert (h, w) == (85, 64)
    crops = views.ten_crop_views(image, resize=64, crop=48).numpy()
    assert crops.shape == (10, 48, 48, 3)
    expected = [resized[:48, :48], resized[:48, w - 48:], resized[h - 48:, :48],
                resized[h - 48:, w - 48:],
                resized[(h - 48) // 2:(h - 48) // 2 + 48, (w - 48) // 2:(w - 48) // 2 + 48]]
    expected += [e[:, ::-1] for e in expected]
    for k in range(10):
        np.testing.assert_allclose(crops[k], expected[k], atol=0.02, err_msg=f"crop {k}")


def test_multiscale_views_shorter_sides():
    image = random_image(30, 45)
    out = views.multiscale_views(image)
    assert [v.shape for v in out] == [(s, int(np.round(s * 1.5)), 3)
                                      for s in (224, 256, 384, 480, 640)]
    assert all(v.dtype == tf.float32 for v in out)
    flipped = views.multiscale_views(image, scales=(32, 64), flip=True)
    assert [v.shape[0] for v in flipped] == [32, 32, 64, 64]
    np.testing.assert_array_equal(flipped[1], flipped[0].numpy()[:, ::-1])
    np.testing.assert_array_equal(flipped[2], augment.resize_shorter_side(image, 64))


def test_views_in_a_graph_have_static_shapes():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def run(image):
        return views.center_crop_view(image), views.ten_crop_views(image)
    centre, ten = run.get_concrete_function().structured_outputs
    assert centre.shape.as_list() == [224, 224, 3]
    assert ten.shape.as_list() == [10, 224, 224, 3]
    with pytest.raises(ValueError, match="crop 300"):
        views.center_crop_view(random_image(8, 8), resize=256, crop=300)


# --- the whole chains --------------------------------------------------------------


def imagenet_train(image, element_seed):
    scale, crop, flip, color = augment.split_seed(element_seed, 4)
    image = augment.random_resized_scale(image, scale)
    image = augment.random_crop(image, crop, 224)
    image = augment.random_flip(image, flip)
    return augment.pca_color(image, color)


def test_cifar_chain_in_tf_data():
    images = np.stack([random_image(32, 32, rng=i) for i in range(4)])
    seeds = tf.data.Dataset.random(seed=5).batch(2)
    dataset = tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(images), seeds).map(
        lambda x, s: augment.random_flip(augment.pad_and_crop(x, s), s[::-1]))
    assert dataset.element_spec.shape.as_list() == [32, 32, 3]
    assert [x.shape for x in dataset.as_numpy_iterator()] == [(32, 32, 3)] * 4


def test_imagenet_chain_on_real_photos():
    root = shared_data("hymenoptera/hymenoptera_data")
    paths = sorted(str(p) for p in (root / "val" / "bees").glob("*.jpg"))[:4]
    dataset = tf.data.Dataset.from_tensor_slices(paths).enumerate()

    def train_view(i, path):
        image, _ = decode_image(tf.io.read_file(path), path)
        return imagenet_train(image, tf.stack([i, tf.constant(7, tf.int64)]))
    dataset = dataset.map(train_view)
    assert dataset.element_spec.shape.as_list() == [224, 224, 3]
    first = list(dataset.as_numpy_iterator())
    second = list(dataset.as_numpy_iterator())
    assert len(first) == 4
    for a, b in zip(first, second):
        assert a.shape == (224, 224, 3) and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)  # stateless: same seeds, same crops
        assert np.isfinite(a).all() and -40 < a.min() and a.max() < 295  # small colour shift
        assert a.std() > 10  # a photo, not a blank crop


def test_random_scale_crop_equals_resize_then_slice_up_to_half_a_pixel():
    from resnet_tf.data import augment as A

    # A smooth image, so that half a pixel of shift changes values little.
    for h, w in ((375, 500), (500, 333), (256, 256), (180, 640), (2000, 1500)):
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = 127 + 60 * np.sin(yy / 23.0) + 60 * np.cos(xx / 31.0)
        image = tf.constant(np.stack([smooth, smooth[::-1], smooth[:, ::-1]], -1),
                            tf.float32)
        for i in range(6):
            scale_seed = tf.constant([i, 11], tf.int64)
            crop_seed = tf.constant([i, 12], tf.int64)
            out = A.random_scale_crop(image, scale_seed, crop_seed, 224)
            assert out.shape == (224, 224, 3)
            # The reference: the whole image resized to the same s, cropped
            # at the same offsets.
            resized = A.random_resized_scale(image, scale_seed)
            oy_seed, ox_seed = A.split_seed(crop_seed, 2)
            H, W = resized.shape[0], resized.shape[1]
            oy = int(tf.random.stateless_uniform([], oy_seed, 0, H - 223, tf.int32))
            ox = int(tf.random.stateless_uniform([], ox_seed, 0, W - 223, tf.int32))
            assert 256 <= min(H, W) <= 480
            ref = resized[oy:oy + 224, ox:ox + 224].numpy()
            # Sampling positions differ by at most one resized pixel (half a
            # pixel of offset rounding plus the window's scale rounding) along
            # each axis; the image changes by at most (60/23 + 60/31) / f per
            # resized pixel of shift in both.
            f = min(H, W) / min(h, w)
            slope = (60 / 23 + 60 / 31) / f
            diff = np.abs(out.numpy() - ref)
            assert diff.max() < 1.05 * slope, (h, w, i, diff.max())
            assert diff.mean() < 0.5 * slope
