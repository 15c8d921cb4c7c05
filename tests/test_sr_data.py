"""SR data: MATLAB-style bicubic resizing, SR sources (benchmark files, HR folder, tfds DIV2K),
patch sampling and augmentation, and every bad-input error."""

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from addernet_jax.data.imresize import contributions, downscale, imresize, upscale
from addernet_jax.data.sr import HRFolderSource, PairedSRSource, div2k_source
from addernet_jax.data.sr_transforms import (
    RandomFlipRotate,
    RandomPatch,
    ToFloat,
    sr_eval_transforms,
    sr_train_transforms,
)

SETS = {"Set5": 5, "Set14": 14}


@pytest.fixture(scope="module")
def sr_root(shared_dir):
    """EDSR's benchmark folder: <Set>/HR/<name>.png and <Set>/LR_bicubic/X<s>/<name>x<s>.png."""
    return shared_dir / "data" / "sr-benchmark"


def _read(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ------------------------------------------------------------------------------------ imresize
def test_downscale_reproduces_every_shipped_lr_image(sr_root):
    """Set5 and Set14 at x2/x3/x4: above 45 dB each; in fact bit-exact (MATLAB's uint8 passes)."""
    worst, exact, total = float("inf"), 0, 0
    for name in SETS:
        for hr_path in sorted((sr_root / name / "HR").glob("*.png")):
            hr = _read(hr_path)
            for s in (2, 3, 4):
                lr = _read(sr_root / name / "LR_bicubic" / f"X{s}" / f"{hr_path.stem}x{s}.png")
                ours = downscale(hr, s)
                assert ours.shape == lr.shape and ours.dtype == np.uint8
                worst = min(worst, _psnr(ours, lr))
                exact += int(np.array_equal(ours, lr))
                total += 1
    print(f"downscale vs shipped LR: worst PSNR {worst} dB, {exact}/{total} bit-exact")
    assert worst > 45.0
    assert exact == total == 3 * 19


def test_contribution_weights_sum_to_one_and_mirror_at_borders():
    weights, indices = contributions(10, 5, 0.5)  # x2 down, antialiased: kernel 8 wide
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert indices.min() == 0 and indices.max() == 9
    # Output 1 is centred on input 1.5 (1-based): taps reach -2..5, mirrored to 2,1,0,0,1,...
    assert list(indices[0, :4]) == [2, 1, 0, 0]
    np.testing.assert_allclose(weights[0], weights[-1][::-1], atol=1e-15)  # symmetric grid


def test_imresize_keeps_constants_and_upscale_interpolates():
    flat = np.full((12, 9, 3), 77, np.uint8)
    np.testing.assert_array_equal(downscale(flat, 3), np.full((4, 3, 3), 77, np.uint8))
    np.testing.assert_array_equal(upscale(flat, 2), np.full((24, 18, 3), 77, np.uint8))
    ramp = np.tile(np.arange(8, dtype=np.float64) * 10, (8, 1))  # greyscale (H, W) float
    up = imresize(ramp, 2)  # no antialiasing when upscaling: cubic reproduces a linear ramp
    assert up.shape == (16, 16) and up.dtype == np.float64
    np.testing.assert_allclose(up[:, 4:12], np.tile(np.arange(4, 12) * 5 - 2.5, (16, 1)))
    assert imresize(ramp, 0.5, dtype=np.uint8).shape == (4, 4)


def test_imresize_errors():
    image = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="exactly one of scale and output_shape"):
        imresize(image, 2, output_shape=(4, 4))
    with pytest.raises(ValueError, match="scale must be positive"):
        imresize(image, -1)
    with pytest.raises(ValueError, match="integer scale"):
        downscale(image, 2.5)
    with pytest.raises(ValueError, match="smaller than the scale 9"):
        downscale(image, 9)


# ------------------------------------------------------------------------------------ sources
def test_paired_source_on_the_benchmark_sets(sr_root):
    for name, length in SETS.items():
        for s in (2, 4):
            source = PairedSRSource(sr_root / name, s)
            assert len(source) == length
            record = source[0]
            assert set(record) == {"lr", "hr", "name"}
            h, w = record["lr"].shape[:2]
            assert record["lr"].dtype == record["hr"].dtype == np.uint8
            assert record["hr"].shape == (h * s, w * s, 3) and record["lr"].shape == (h, w, 3)
    source = PairedSRSource(sr_root / "Set14", 3)
    bridge = source[source.hr_files.index("bridge.png")]
    assert bridge["name"] == "bridge" and bridge["lr"].shape == (170, 170, 3)
    assert bridge["hr"].shape == (510, 510, 3)  # 512 cropped to 170 * 3
    for key in ("lr", "hr"):  # greyscale repeated to RGB
        np.testing.assert_array_equal(bridge[key][..., 0], bridge[key][..., 2])
    hr = _read(sr_root / "Set14" / "HR" / "bridge.png")
    np.testing.assert_array_equal(bridge["hr"], hr[:510, :510])


def test_hr_folder_source_makes_the_shipped_lr_images(sr_root):
    paired = PairedSRSource(sr_root / "Set5", 3)
    source = HRFolderSource(sr_root / "Set5" / "HR", 3)
    assert len(source) == 5 and "x3" in repr(source)
    for i in (0, 4):
        record, expected = source[i], paired[i]
        assert record["name"] == expected["name"]
        np.testing.assert_array_equal(record["lr"], expected["lr"])
        np.testing.assert_array_equal(record["hr"], expected["hr"])


def test_hr_folder_source_greyscale_and_uncropped_sizes(tmp_path):
    grey = (np.arange(7 * 10).reshape(7, 10) * 3 % 256).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    record = HRFolderSource(tmp_path, 2)[0]
    assert record["hr"].shape == (6, 10, 3) and record["lr"].shape == (3, 5, 3)
    assert record["lr"].dtype == np.uint8 and record["name"] == "grey"
    np.testing.assert_array_equal(record["hr"][..., 1], grey[:6])


def _benchmark_layout(root, hr_size=(12, 8), lr_size=(6, 4), lr=True):
    """A one-image dataset in EDSR's layout at x2 with the given sizes."""
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / "X2").mkdir(parents=True)
    Image.fromarray(np.zeros(hr_size, np.uint8)).save(root / "HR" / "a.png")
    if lr:
        Image.fromarray(np.zeros(lr_size, np.uint8)).save(root / "LR_bicubic" / "X2" / "ax2.png")
    return root


def test_source_errors_name_the_problem(sr_root, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=f"SR dataset folder {missing} is not a directory"):
        PairedSRSource(missing, 2)
    (tmp_path / "nolrdir").mkdir()
    with pytest.raises(ValueError, match=f"no LR folder {tmp_path}/nolrdir/LR_bicubic/X2"):
        PairedSRSource(tmp_path / "nolrdir", 2)
    with pytest.raises(ValueError, match=f"SR image folder {missing} is not a directory"):
        HRFolderSource(missing, 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no images"):
        HRFolderSource(tmp_path / "empty", 2)
    root = _benchmark_layout(tmp_path / "nolr", lr=False)
    with pytest.raises(ValueError, match=f"missing LR image {root}/LR_bicubic/X2/ax2.png"):
        PairedSRSource(root, 2)
    root = _benchmark_layout(tmp_path / "badsize", lr_size=(5, 4))
    with pytest.raises(ValueError, match=r"ax2.png: LR image is 5x4 .* needs .* = 6x4"):
        PairedSRSource(root, 2)
    with pytest.raises(ValueError, match=r"unknown SR scale 5 .*Set5.*present: \['X2', 'X3'"):
        PairedSRSource(sr_root / "Set5", 5)
    with pytest.raises(ValueError, match="unknown SR scale 1 for .*need an integer >= 2"):
        HRFolderSource(sr_root / "Set5" / "HR", 1)
    with pytest.raises(ValueError, match="unknown SR scale 'x2' for .*need an integer >= 2"):
        HRFolderSource(sr_root / "Set5" / "HR", "x2")
    with pytest.raises(ValueError, match=r"unknown SR scale 5 for tfds div2k; choices"):
        div2k_source(5)


# ------------------------------------------------------------------------------------ tfds
def _div2k_records(*args, **kwargs):
    """Three consistent DIV2K-like x2 records (the default mock draws unrelated sizes)."""
    rng = np.random.default_rng(0)
    hr = [rng.integers(0, 256, (2 * h, 2 * w, 3), dtype=np.uint8) for h, w in [(9, 7), (8, 8)]]
    return [{"hr": x, "lr": downscale(x, 2)} for x in hr + hr[:1]]


def test_div2k_source_on_mock_tfds():
    with tfds.testing.mock_data(as_data_source_fn=_div2k_records):
        source = div2k_source(2, "validation", data_dir="/nonexistent", download=False)
        assert len(source) == 3
        record = source[1]
    assert record["lr"].shape == (8, 8, 3) and record["hr"].shape == (16, 16, 3)
    assert record["name"] == "div2k/bicubic_x2:validation[1]"


def test_div2k_source_rejects_mismatched_sizes():
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        source = div2k_source(3, data_dir="/nonexistent", download=False)
        with pytest.raises(ValueError, match=r"div2k/bicubic_x3:train\[0\]: LR image is"):
            source[0]


def test_div2k_source_not_prepared_fails_fast_in_one_line(tmp_path):
    with pytest.raises(ValueError) as info:
        div2k_source(4, data_dir=str(tmp_path), download=False)
    message = str(info.value)
    assert "\n" not in message and f"not prepared under {tmp_path}" in message
    assert "tfds build div2k/bicubic_x4 --file_format=array_record" in message


# ------------------------------------------------------------------------------------ transforms
def _record(sr_root, scale=2):
    return PairedSRSource(sr_root / "Set5", scale)[2]  # butterfly, 256x256 HR


def test_random_patch_is_aligned_with_the_lr_patch(sr_root):
    for scale in (2, 4):
        record = _record(sr_root, scale)
        out = RandomPatch(scale, 24).random_map(record, np.random.default_rng(3))
        assert out["lr"].shape == (24, 24, 3) and out["hr"].shape == (24 * scale, 24 * scale, 3)
        assert out["name"] == "butterfly"
        # Away from the patch borders (the kernel reaches 2 LR pixels), downscaling the HR patch
        # computes exactly what made the shipped LR image.
        inner = slice(3, -3)
        np.testing.assert_array_equal(
            downscale(out["hr"], scale)[inner, inner], out["lr"][inner, inner]
        )


def test_flip_rotate_moves_lr_and_hr_together(sr_root):
    record = RandomPatch(2, 20).random_map(_record(sr_root), np.random.default_rng(0))
    seen = set()
    for seed in range(40):
        out = RandomFlipRotate().random_map(record, np.random.default_rng(seed))
        assert out["lr"].flags.c_contiguous and out["hr"].shape == (40, 40, 3)
        diff = downscale(out["hr"], 2)[3:-3, 3:-3].astype(int) - out["lr"][3:-3, 3:-3]
        assert np.abs(diff).max() <= 1  # transposed: MATLAB's uint8 pass order changes rounding
        seen.add(out["lr"].tobytes())
    assert len(seen) == 8  # every symmetry of the square occurs


def test_sr_transforms_are_deterministic_given_the_grain_seed(sr_root):
    source = PairedSRSource(sr_root / "Set5", 2)

    def patches(seed):
        ds = grain.MapDataset.source(source)
        for k, transform in enumerate(sr_train_transforms(2, patch_size=16)):
            if isinstance(transform, grain.transforms.RandomMap):
                ds = ds.random_map(transform, seed=seed + k)
            else:
                ds = ds.map(transform)
        return [ds[i] for i in (0, 3)]

    a, b, c = patches(0), patches(0), patches(7)
    for x, y, z in zip(a, b, c):
        assert x["lr"].dtype == np.float32 and x["hr"].shape == (32, 32, 3)
        np.testing.assert_array_equal(x["lr"], y["lr"])
        np.testing.assert_array_equal(x["hr"], y["hr"])
        assert not np.array_equal(x["hr"], z["hr"])


def test_to_float_and_eval_transforms(sr_root):
    record = _record(sr_root)
    out = ToFloat().map(record)
    assert out["lr"].dtype == out["hr"].dtype == np.float32
    np.testing.assert_array_equal(out["hr"], record["hr"].astype(np.float32))
    assert [type(t) for t in sr_eval_transforms()] == [ToFloat]


def test_patch_errors(sr_root):
    record = _record(sr_root)
    with pytest.raises(ValueError, match="LR patch 200 larger than the 128x128 LR image"):
        RandomPatch(2, 200).random_map(record, np.random.default_rng(0))
    with pytest.raises(ValueError, match="HR image 256x256 is not the 128x128 LR image times 3"):
        RandomPatch(3).random_map(record, np.random.default_rng(0))
