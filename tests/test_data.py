"""Tests of jsgp.data: BSDS500 split and loading, CT slices, the embedded set, error messages."""
import os
import re
import socket

import numpy as np
import pytest
from PIL import Image

from jsgp import data


@pytest.fixture(scope="module")
def bsds_dir(shared_data_dir):
  return os.path.join(shared_data_dir, "bsds500")


@pytest.fixture(scope="module")
def ct_dir(shared_data_dir):
  return os.path.join(shared_data_dir, "ct", "covid19_ny_sbu", "png16")


def write_image(path, shape=(80, 70, 3), seed=0):
  """A small random RGB (or gray, for 2-D ``shape``) image file at ``path``."""
  pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
  Image.fromarray(pixels).save(path)
  return path


def fake_bsds(root, n_train=2, n_val=1, n_test=data.BSDS_N_TEST + 1, shape=(80, 70, 3)):
  """A tiny BSDS500-like layout under ``root``; returns ``root`` as a string."""
  for folder, count in (("train", n_train), ("val", n_val), ("test", n_test)):
    os.makedirs(root / folder, exist_ok=True)
    for i in range(count):
      write_image(root / folder / f"{i:03d}.jpg", shape, seed=i)
  return str(root)


# ----------------------------------------------------------------------------- BSDS500

def test_bsds_split_sizes_and_disjoint(bsds_dir):
  train = data.bsds500_files(bsds_dir, "train")
  test = data.bsds500_files(bsds_dir, "test")
  assert (len(train), len(test)) == (450, 50)
  assert not set(train) & set(test)
  assert len(set(train)) == 450
  # The documented split: all of train/ and val/, the first 150 of test/ (sorted) for training.
  test_folder = sorted(os.listdir(os.path.join(bsds_dir, "test")))
  test_folder = [f for f in test_folder if f.endswith(".jpg")]
  assert [os.path.basename(p) for p in test] == test_folder[-50:]
  assert [os.path.basename(p) for p in train[-150:]] == test_folder[:150]
  assert sum(os.sep + "val" + os.sep in p for p in train) == 100


def test_bsds_load_shape_range_deterministic(bsds_dir):
  a = data.load_bsds500(bsds_dir, "test", size=64, n=3)
  b = data.load_bsds500(bsds_dir, "test", size=64, n=3)
  assert a.shape == (3, 64, 64) and a.dtype == np.float32
  assert np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 255.0
  assert a.std() > 10.0  # real content, not a constant
  np.testing.assert_array_equal(a, b)
  d = data.load_bsds500(bsds_dir, "train", size=32, n=2, dtype=np.float64)
  assert d.shape == (2, 32, 32) and d.dtype == np.float64


def test_bsds_crop_resize_matches_luma(bsds_dir):
  """At size 321 (no resize) the image is the centre square of the float BT.601 luma."""
  path = data.bsds500_files(bsds_dir, "test")[0]
  rgb = np.asarray(Image.open(path), dtype=np.float64)
  luma = rgb @ np.array([0.299, 0.587, 0.114])
  got = data.load_bsds500(bsds_dir, "test", size=321, n=1, dtype=np.float64)[0]
  np.testing.assert_allclose(got, data.center_crop_square(luma))
  # PIL's "L" uses the same weights, rounded to integers.
  pil = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
  assert np.abs(data.center_crop_square(pil) - got).max() <= 1.0


def test_load_images_bsds_matches_load_bsds500(bsds_dir):
  np.testing.assert_array_equal(data.load_images(bsds_dir, "test", 32, n=2),
                                data.load_bsds500(bsds_dir, "test", 32, n=2))


# ----------------------------------------------------------------------------- CT

@pytest.mark.parametrize("size", [512, 128])
def test_ct_slices(ct_dir, size):
  ct = data.load_ct_slices(ct_dir, size=size, n=2)
  assert ct.shape == (2, size, size) and ct.dtype == np.float32
  assert np.all(np.isfinite(ct)) and ct.min() >= 0.0
  assert np.all(ct[:, ~data.fov_mask(size)] == 0.0)
  # Body tissue is near water: the median of the non-air pixels is within 30 % of mu_water.
  body = ct[ct > 0.5 * data.CT_MU_WATER]
  assert abs(np.median(body) / data.CT_MU_WATER - 1.0) < 0.3


def test_ct_attenuation_formula_and_dirs(shared_data_dir, ct_dir):
  path = data.ct_files(ct_dir)[0]
  hu = np.asarray(Image.open(path), dtype=np.float64) - 1024
  expected = np.where(data.fov_mask(512), np.maximum(50.0 * (1 + hu / 1000), 0), 0)
  got = data.load_ct_slices(ct_dir, n=1, mu_water=50.0, dtype=np.float64)[0]
  np.testing.assert_allclose(got, expected)
  # The png16 folder, its parent, ct/ and the data root all find the same sorted files.
  for root in (os.path.dirname(ct_dir), os.path.join(shared_data_dir, "ct"), shared_data_dir):
    assert data.ct_files(root) == data.ct_files(ct_dir)
  assert len(data.ct_files(ct_dir)) == 20


def test_fov_mask_inside_inscribed_circle():
  for size in (64, 65, 512):
    mask = data.fov_mask(size)
    y, x = np.nonzero(mask)
    c = size // 2  # skimage.transform.radon's centre convention
    assert np.all((y - c) ** 2 + (x - c) ** 2 <= c ** 2)
    assert mask[size // 2, size // 2] and not mask[0, 0]
    np.testing.assert_array_equal(mask, mask[::-1, ::-1])


# ----------------------------------------------------------------------------- embedded set

@pytest.fixture
def no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("network access attempted")
  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


def test_embedded_offline_count_shape_deterministic(no_network):
  a = data.sample_images(size=64)
  b = data.sample_images(size=64)
  assert a.shape == (len(data.SAMPLE_NAMES), 64, 64) == (16, 64, 64) and a.dtype == np.float32
  assert np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 255.0
  np.testing.assert_array_equal(a, b)
  # All distinct images.
  flat = a.reshape(len(a), -1)
  assert len({row.tobytes() for row in flat}) == len(a)


def test_embedded_split(no_network):
  train_names, test_names = data.sample_split_names()
  assert not set(train_names) & set(test_names)
  assert set(train_names) | set(test_names) == set(data.SAMPLE_NAMES)
  assert len(test_names) == 4
  train, test = data.sample_split(size=32)
  assert train.shape == (12, 32, 32) and test.shape == (4, 32, 32)
  every = data.sample_images(size=32)
  index = {nm: i for i, nm in enumerate(data.SAMPLE_NAMES)}
  np.testing.assert_array_equal(test, every[[index[nm] for nm in test_names]])
  np.testing.assert_array_equal(train, every[[index[nm] for nm in train_names]])
  tr2, te2 = data.sample_split(size=32, n_train=3, n_test=2)
  assert tr2.shape == (3, 32, 32) and te2.shape == (2, 32, 32)
  for embedded in (None, "", "embedded"):
    np.testing.assert_array_equal(data.load_images(embedded, "test", 32, n=2), test[:2])


# ----------------------------------------------------------------------------- errors

def test_missing_dir(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    data.load_bsds500(missing, "train")
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    data.load_ct_slices(missing)
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    data.load_images(missing, "test", 64)


def test_missing_subfolder(tmp_path):
  (tmp_path / "train").mkdir()
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "val"))):
    data.bsds500_files(str(tmp_path), "train")


def test_empty_dir(tmp_path):
  for folder in data.BSDS_FOLDERS:
    (tmp_path / folder).mkdir()
  with pytest.raises(FileNotFoundError, match="no images.*" + re.escape(str(tmp_path / "train"))):
    data.load_bsds500(str(tmp_path), "train")
  with pytest.raises(FileNotFoundError, match="no .png CT slices.*" + re.escape(str(tmp_path))):
    data.load_ct_slices(str(tmp_path))


def test_corrupt_file(tmp_path):
  root = fake_bsds(tmp_path)
  bad = tmp_path / "train" / "000.jpg"
  bad.write_bytes(b"this is not a jpeg" * 10)
  with pytest.raises(ValueError, match="cannot read image " + re.escape(str(bad))):
    data.load_bsds500(root, "train", size=64, n=1)
  truncated = tmp_path / "train" / "001.jpg"
  truncated.write_bytes(truncated.read_bytes()[:200])
  with pytest.raises(ValueError, match=re.escape(str(truncated))):
    data.read_gray(str(truncated))
  ct = tmp_path / "ct"
  ct.mkdir()
  (ct / "slice.png").write_bytes(b"\x89PNG garbage")
  with pytest.raises(ValueError, match=re.escape(str(ct / "slice.png"))):
    data.load_ct_slices(str(ct))


def test_fake_layout_loads_and_splits(tmp_path):
  root = fake_bsds(tmp_path)
  assert len(data.bsds500_files(root, "train")) == 2 + 1 + 1
  assert len(data.bsds500_files(root, "test")) == data.BSDS_N_TEST
  assert data.load_bsds500(root, "train", size=64).shape == (4, 64, 64)


def test_too_few_test_images(tmp_path):
  root = fake_bsds(tmp_path, n_test=3)
  with pytest.raises(ValueError, match=re.escape(str(tmp_path / "test")) + ".*3 images"):
    data.bsds500_files(root, "test")


def test_image_too_small(tmp_path, bsds_dir, ct_dir):
  root = fake_bsds(tmp_path, shape=(40, 50, 3))
  first = str(tmp_path / "train" / "000.jpg")
  with pytest.raises(ValueError, match=re.escape(first) + ".*50x40.*requested size 64x64"):
    data.load_bsds500(root, "train", size=64, n=1)
  with pytest.raises(ValueError, match=r"321x321.*requested size 400x400"):
    data.load_bsds500(bsds_dir, "test", size=400, n=1)
  with pytest.raises(ValueError, match=r"\.png.*512x512.*requested size 600x600"):
    data.load_ct_slices(ct_dir, size=600, n=1)
  with pytest.raises(ValueError, match=r"'astronaut'.*requested size 600x600"):
    data.sample_images(size=600, n=2)


def test_tiny_png(tmp_path):
  ct = tmp_path / "png16"
  ct.mkdir()
  Image.fromarray(np.full((8, 8), 1024, np.uint16)).save(ct / "tiny.png")
  with pytest.raises(ValueError, match=re.escape(str(ct / "tiny.png")) + ".*8x8"):
    data.load_ct_slices(str(tmp_path), size=64)
  assert data.load_ct_slices(str(tmp_path), size=8).shape == (1, 8, 8)
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(ct / "tiny.png")
  with pytest.raises(ValueError, match="16-bit"):
    data.load_ct_slices(str(tmp_path), size=8)


def test_bad_split_and_arguments(bsds_dir):
  with pytest.raises(ValueError, match="split must be one of.*'val'"):
    data.load_bsds500(bsds_dir, "val")
  with pytest.raises(ValueError, match="split must be one of"):
    data.load_images(None, "validation", 32)
  with pytest.raises(ValueError, match="dtype must be a floating"):
    data.load_bsds500(bsds_dir, "test", 32, n=1, dtype=np.uint8)
  with pytest.raises(ValueError, match="n must be a positive"):
    data.load_bsds500(bsds_dir, "test", 32, n=0)


def test_fewer_images_than_n(bsds_dir, ct_dir):
  with pytest.raises(ValueError, match=re.escape(bsds_dir) + ".*only 50.*n=51"):
    data.load_bsds500(bsds_dir, "test", 32, n=51)
  with pytest.raises(ValueError, match=re.escape(ct_dir) + ".*only 20.*n=21"):
    data.load_ct_slices(ct_dir, 32, n=21)
  with pytest.raises(ValueError, match="only 4.*n=5"):
    data.load_images("embedded", "test", 32, n=5)


def test_non_finite_detected():
  with pytest.raises(ValueError, match="somewhere.*1 non-finite"):
    data.check_finite_images(np.array([0.0, np.nan]), "somewhere")


# ----------------------------------------------------------------------------- bit depths

def test_16bit_png_is_rescaled_to_0_255(tmp_path):
  """A 16-bit gray PNG among the natural images: 65535 is white (255), not saturated."""
  root = fake_bsds(tmp_path)
  values = np.random.default_rng(3).integers(0, 65536, (80, 70), dtype=np.uint16)
  os.remove(tmp_path / "train" / "000.jpg")
  Image.fromarray(values).save(tmp_path / "train" / "000.png")
  assert Image.open(tmp_path / "train" / "000.png").mode == "I;16"
  np.testing.assert_allclose(data.read_gray(str(tmp_path / "train" / "000.png")),
                             values * (255.0 / 65535.0), rtol=1e-12)
  loaded = data.load_bsds500(root, "train", size=64, n=1)[0]
  assert abs(loaded.mean() - values.mean() * 255.0 / 65535.0) < 2.0  # ~127, not 255
  assert 0.0 <= loaded.min() and loaded.max() <= 255.0


def test_float_image_in_0_1_is_rescaled(tmp_path):
  values = np.random.default_rng(4).random((40, 40)).astype(np.float32)
  Image.fromarray(values).save(tmp_path / "float.tif")
  np.testing.assert_allclose(data.read_gray(str(tmp_path / "float.tif")), values * 255.0,
                             rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused_naming_the_file(tmp_path, bad):
  """NaN/Inf in a float image: refused before any conversion could hide them (they used to
  become 0 or 255), by the reader and by the loader the experiments' --data_dir uses."""
  values = np.random.default_rng(5).random((40, 40)).astype(np.float32)
  values[7, 9] = bad
  path = str(tmp_path / "float.tif")
  Image.fromarray(values).save(path)
  with pytest.raises(ValueError, match=re.escape(path) + r".*1 non-finite value\(s\) \(NaN/Inf\)"):
    data.read_gray(path)
  with pytest.raises(ValueError, match=re.escape(path) + r".*1 non-finite value\(s\) \(NaN/Inf\)"):
    data.load_gray_files([path], 32, np.float32)


def test_images_outside_the_known_ranges_are_refused_naming_the_file(tmp_path):
  wide = np.linspace(0.0, 300.0, 1600, dtype=np.float32).reshape(40, 40)
  Image.fromarray(wide).save(tmp_path / "wide.tif")
  with pytest.raises(ValueError, match=re.escape(str(tmp_path / "wide.tif"))
                     + r".*values in \[0, 300\].*\[0, 1\]"):
    data.read_gray(str(tmp_path / "wide.tif"))
  big = np.full((40, 40), 70000, np.int32)
  Image.fromarray(big).save(tmp_path / "big.tif")
  with pytest.raises(ValueError, match=re.escape(str(tmp_path / "big.tif")) + ".*16 bits"):
    data.read_gray(str(tmp_path / "big.tif"))
