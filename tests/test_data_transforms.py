"""Transforms reproduce torchvision's official recipes (geometry, rounding, normalisation)."""

import numpy as np
import pytest
from PIL import Image

from addernet_jax.data import get_transforms
from addernet_jax.data import transforms as T


def _record(image):
    return {"image": image, "label": 3}


def _apply(transforms, record, rng=None):
    for t in transforms:
        record = t.random_map(record, rng) if hasattr(t, "random_map") else t.map(record)
    return record


def _image(shape, seed=0):
    return np.random.default_rng(seed).integers(1, 256, shape, dtype=np.uint8)


def test_random_crop_is_pad_then_slice():
    image = _image((32, 32, 3))
    out = T.RandomCrop(32, padding=4).random_map(_record(image), np.random.default_rng(7))
    draws = np.random.default_rng(7)
    top, left = draws.integers(0, 40 - 32 + 1), draws.integers(0, 40 - 32 + 1)
    padded = np.zeros((40, 40, 3), np.uint8)
    padded[4:36, 4:36] = image
    np.testing.assert_array_equal(out["image"], padded[top : top + 32, left : left + 32])
    assert out["label"] == 3


def test_random_crop_reaches_every_offset_with_zero_padding():
    image = _image((32, 32, 3))  # no zero pixels: zero rows/columns of a crop are padding
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    crop = T.RandomCrop(32, padding=4)
    offsets = set()
    for seed in range(1000):
        out = crop.random_map(_record(image), np.random.default_rng(seed))["image"]
        rows = np.flatnonzero(out.any(axis=(1, 2)))
        cols = np.flatnonzero(out.any(axis=(0, 2)))
        # Padding shows above (top < 4) or below (top > 4) the image, never both.
        top, left = 4 - rows[0] + (31 - rows[-1]), 4 - cols[0] + (31 - cols[-1])
        np.testing.assert_array_equal(out, padded[top : top + 32, left : left + 32])
        offsets.add((top, left))
    assert offsets == {(i, j) for i in range(9) for j in range(9)}


def test_random_horizontal_flip():
    image = _image((4, 5, 3))
    flip = T.RandomHorizontalFlip()
    flipped = 0
    for seed in range(400):
        out = flip.random_map(_record(image), np.random.default_rng(seed))["image"]
        if np.array_equal(out, image[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, image)
    assert 160 < flipped < 240  # p = 0.5
    always = T.RandomHorizontalFlip(p=1.0).random_map(_record(image), np.random.default_rng(0))
    np.testing.assert_array_equal(always["image"], image[:, ::-1])


def test_cifar_normalisation_numbers():
    image = np.zeros((32, 32, 3), np.uint8)
    image[0, 0] = 255
    image[0, 1] = (128, 64, 32)
    out = _apply(get_transforms("cifar10", train=False), _record(image))["image"]
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2023, 0.1994, 0.2010])
    assert out.dtype == np.float32 and out.shape == (32, 32, 3)
    tol = {"rtol": 1e-6, "atol": 1e-6}  # float32 arithmetic, float64 reference
    np.testing.assert_allclose(out[0, 0], (1 - mean) / std, **tol)
    np.testing.assert_allclose(out[0, 1], (np.array([128, 64, 32]) / 255 - mean) / std, **tol)
    np.testing.assert_allclose(out[5, 5], -mean / std, **tol)


def test_mnist_transform():
    image = np.zeros((28, 28, 1), np.uint8)
    image[13, 14] = 255
    out = _apply(get_transforms("mnist", train=False), _record(image))["image"]
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[13, 14, 0], (1 - 0.1307) / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, 0], -0.1307 / 0.3081, rtol=1e-6)
    shifts = set()
    for seed in range(40):  # training shifts the digit by up to 2 pixels each way
        out = _apply(get_transforms("mnist", train=True), _record(image),
                     np.random.default_rng(seed))["image"]
        assert out.shape == (28, 28, 1)
        (row,), (col,) = np.nonzero(out[..., 0] > 0)[:2]
        shifts.add((row - 13, col - 14))
    assert {dy for dy, _ in shifts} == {dx for _, dx in shifts} == {-2, -1, 0, 1, 2}


def test_cifar_train_transform_is_deterministic_given_rng():
    image = _image((32, 32, 3))
    transforms = get_transforms("cifar100", train=True)
    a = _apply(transforms, _record(image), np.random.default_rng(5))["image"]
    b = _apply(transforms, _record(image), np.random.default_rng(5))["image"]
    c = _apply(transforms, _record(image), np.random.default_rng(6))["image"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (32, 32, 3) and not np.array_equal(a, c)


def test_imagenet_eval_is_resize_shorter_then_center_crop():
    image = _image((300, 400, 3))
    out = _apply(get_transforms("imagenet2012", train=False), _record(image))["image"]
    # torchvision: Resize(256) -> (256, int(256 * 400 / 300)) = (256, 341); CenterCrop(224)
    # offsets round((256 - 224) / 2) = 16 and round((341 - 224) / 2) = round(58.5) = 58.
    resized = np.asarray(Image.fromarray(image).resize((341, 256), Image.Resampling.BILINEAR))
    crop = resized[16:240, 58:282]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, (crop / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    again = _apply(get_transforms("imagenet2012", train=False), _record(image))["image"]
    np.testing.assert_array_equal(out, again)


def test_resize_portrait_and_noop():
    tall = T.Resize(256).map(_record(_image((500, 300, 3))))["image"]
    assert tall.shape == (int(256 * 500 / 300), 256, 3)
    image = _image((256, 300, 3))
    assert T.Resize(256).map(_record(image))["image"] is image


def test_random_resized_crop_box_follows_torchvision():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = T.resized_crop_box(120, 160, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top <= 120 - h and 0 <= left <= 160 - w
        assert 0.08 * 120 * 160 * 0.9 <= h * w <= 120 * 160
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # No valid box in 10 tries (area above the image): centered fallback, clipped to max ratio.
    assert T.resized_crop_box(100, 300, (2.0, 2.0), (3 / 4, 4 / 3), rng) == (0, 83, 100, 133)


def test_random_resized_crop_output():
    image = _image((120, 160, 3))
    out = T.RandomResizedCrop(224).random_map(_record(image), np.random.default_rng(1))["image"]
    draws = np.random.default_rng(1)
    top, left, h, w = T.resized_crop_box(120, 160, (0.08, 1.0), (3 / 4, 4 / 3), draws)
    crop = Image.fromarray(image[top : top + h, left : left + w])
    expected = crop.resize((224, 224), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(out, np.asarray(expected))


def test_get_transforms_unknown_dataset():
    with pytest.raises(ValueError, match="'svhn'.*cifar10"):
        get_transforms("svhn", train=True)


def test_random_affine_identity_shift_and_clockwise_rotation():
    image = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    out = T.RandomAffine(0.0).random_map({"image": image}, np.random.default_rng(1))["image"]
    np.testing.assert_array_equal(out, image)

    def apply(img, angle, shift):
        coefficients = T.inverse_affine_matrix((14.0, 14.0), angle, shift, 1.0)
        return np.asarray(Image.fromarray(img).transform(
            (28, 28), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR))

    np.testing.assert_array_equal(apply(image[..., 0], 0.0, (3, -2))[:26, 3:], image[2:, :25, 0])
    dot = np.zeros((28, 28), np.uint8)
    dot[2, 20] = 255  # top right; clockwise by 90 degrees it goes to the bottom right
    assert np.argwhere(apply(dot, 90.0, (0, 0)) > 128).tolist() == [[20, 25]]


def test_mnist_affine_augmentation_and_unknown_names():
    affine = get_transforms("mnist", train=True, augmentation="affine", degrees=5.0)
    assert isinstance(affine[0], T.RandomAffine) and affine[0].degrees == 5.0
    assert len(get_transforms("mnist", train=False, augmentation="affine")) == 1  # eval: same
    assert len(get_transforms("mnist", train=True, augmentation="none")) == 1
    with pytest.raises(ValueError, match="unknown augmentation 'affine' for cifar10"):
        get_transforms("cifar10", train=True, augmentation="affine")
