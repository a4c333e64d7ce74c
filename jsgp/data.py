"""Image data for the experiments: BSDS500 (natural images), real CT slices, an offline fallback set.

Everything here is plain numpy on concrete files, deterministic, and returns ``(N, size, size)``
float arrays (``float32`` unless ``dtype`` says otherwise). Every failure is a ``ValueError`` or
``FileNotFoundError`` whose message names the offending path (or embedded image).

Natural images (:func:`load_bsds500`), following the paper (arXiv 1902.02449): all 500 BSDS500
images split 450 train / 50 test, grayscale, 256 x 256, on the 0-255 intensity scale.

* **Split.** BSDS500 defines no 450/50 split, so we fix one: with the file names of each folder
  sorted, ``train`` = all of ``train/`` (200) + all of ``val/`` (100) + the first 150 of ``test/``,
  ``test`` = the last 50 of ``test/``. Generally: the last ``BSDS_N_TEST`` (= 50) files of
  ``test/`` are the test split and every other image is training data. The two never overlap.
  See :func:`bsds500_files`. ``n`` takes the first ``n`` files of the split in that order.
* **Grayscale.** ITU-R BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (the weights of Pillow's
  ``"L"`` conversion), computed in floating point, i.e. without Pillow's rounding to uint8.
  Gray inputs are used as they are.
* **Size.** Centre crop of the largest square (321 x 321 for the 481 x 321 / 321 x 481 BSDS
  images), then an antialiased resize to ``size x size`` (Gaussian prefilter with
  ``sigma = (scale - 1) / 2``, then bilinear interpolation: ``skimage.transform.resize`` with
  ``anti_aliasing=True, order=1``). The crop keeps the aspect ratio (no anisotropic stretching of
  the content); the resize, rather than a 256-pixel crop, keeps most of the scene (all of the
  central square) in view. Bilinear interpolation of a positive prefilter is a convex combination
  of input pixels, so values stay within [0, 255]. No upsampling: a crop smaller than ``size`` is an
  error (e.g. ``size=400`` for BSDS), and ``size`` equal to the crop side skips the resize.

CT (:func:`load_ct_slices`): the 20 real 512 x 512 slices of TCIA COVID-19-NY-SBU, stored as
16-bit PNGs with ``HU = png - 1024`` (see ``shared/data/README.md``).

* **Attenuation.** ``mu = mu_water * (1 + HU / 1000)``, clipped at 0, so air (-1000 HU) and the
  -1024 padding are 0 and water is ``mu_water``. Units: dimensionless, scaled so that water =
  ``CT_MU_WATER`` = 100 by default. This puts the anatomy on roughly the same 0-255 scale as the
  natural images (on these slices 99.9 % of the body pixels lie below about 200, i.e. bone; only
  contrast agent and metal go higher, up to about 660), so the same regularisation and noise
  levels are meaningful. For physical units multiply by ``mu_w * pixel_spacing / 100``
  (``mu_w`` about 0.019 / mm at 70 keV; spacing 0.62-0.95 mm, in ``slices.csv``): a linear rescale.
* **Resize.** If ``size != 512``, the attenuation image (a linear quantity, so area averaging is
  physically meaningful) is resized like the natural images; upsampling is an error.
* **Field of view.** Then everything outside the inscribed circle is set to 0: pixels whose centre
  lies farther than ``size / 2 - 1`` from the image centre ``((size - 1) / 2, (size - 1) / 2)``
  (:func:`fov_mask`). Parallel-beam projection over all angles sees only that disc, so the object
  must lie inside it; the one-pixel margin keeps the support inside the inscribed circle under
  either centre convention (``(size - 1) / 2`` or skimage's ``size // 2``). On these slices about
  1 % of the pixels outside the disc hold tissue, table or arms; they are removed.
* Slices are sorted by file name.

Embedded fallback (:func:`sample_images`, :func:`sample_split`): scikit-image's bundled images that
load offline (no ``pooch``, no download), in the fixed order of ``SAMPLE_NAMES``: the 16 natural
or photographic ones whose short side is at least 300 pixels, so that every size up to 300 (the
paper's 256 included) works. Left out: ``page`` (191 px) and ``text`` (172 px) and
``microaneurysms`` (102 px) for being too small, ``cat`` (the same picture as ``chelsea``), and
the synthetic ones. ``stereo_motorcycle`` contributes its left view. Same grayscale and
crop + resize as BSDS. Test split = ``SAMPLE_TEST`` (``camera``, ``coffee``, ``gravel``,
``stereo_motorcycle``: a classic gray photo, a colour close-up, a texture, an outdoor scene, all
detailed natural images); the other 12, in ``SAMPLE_NAMES`` order, are the training split.

:func:`load_images` is the one entry point of the experiments: ``data_dir`` None / "" /
"embedded" selects the embedded split, anything else the BSDS500 layout at ``data_dir``.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError
from skimage.transform import resize

SPLITS = ("train", "test")
BSDS_FOLDERS = ("train", "val", "test")
BSDS_N_TEST = 50
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
LUMA_601 = np.array([0.299, 0.587, 0.114])

CT_HU_OFFSET = 1024
CT_MU_WATER = 100.0
CT_PNG_MODES = ("I;16", "I;16L", "I;16B", "I")
# Where, below the ``data_dir`` given to ``load_ct_slices``, the 16-bit PNGs may be.
CT_SUBDIRS = ("", "png16", os.path.join("covid19_ny_sbu", "png16"),
              os.path.join("ct", "covid19_ny_sbu", "png16"))

SAMPLE_NAMES = ("astronaut", "camera", "cell", "chelsea", "clock", "coffee", "coins", "brick",
                "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "retina",
                "rocket", "stereo_motorcycle")
SAMPLE_TEST = ("camera", "coffee", "gravel", "stereo_motorcycle")


# ----------------------------------------------------------------------------- pure array helpers

def check_dtype(dtype) -> np.dtype:
  """``dtype`` as a floating ``np.dtype``, or ``ValueError``."""
  dt = np.dtype(dtype)
  if dt.kind != "f":
    raise ValueError(f"dtype must be a floating type, got {dt}.")
  return dt


def check_size(size) -> int:
  if int(size) != size or size < 1:
    raise ValueError(f"size must be a positive integer, got {size!r}.")
  return int(size)


def to_gray(image: np.ndarray) -> np.ndarray:
  """BT.601 luma: ``(H, W)`` or ``(H, W, 3|4)`` -> ``(H, W)`` float64, same intensity scale.

  An alpha channel is dropped; a gray image is returned as float64 unchanged.
  """
  arr = np.asarray(image, dtype=np.float64)
  if arr.ndim == 2:
    return arr
  if arr.ndim == 3 and arr.shape[-1] in (3, 4):
    return arr[..., :3] @ LUMA_601
  raise ValueError(f"expected a (H, W) or (H, W, 3) image, got shape {arr.shape}.")


def center_crop_square(image: np.ndarray) -> np.ndarray:
  """The largest centred square: ``(H, W) -> (m, m)``, ``m = min(H, W)``; odd excess goes after."""
  h, w = image.shape[:2]
  m = min(h, w)
  top, left = (h - m) // 2, (w - m) // 2
  return image[top:top + m, left:left + m]


def square_resize(image: np.ndarray, size: int, name: str) -> np.ndarray:
  """Centre crop to a square, then antialiased bilinear resize: ``(H, W) -> (size, size)`` float64.

  ``name`` (a path or image name) goes into the error raised when the crop is smaller than ``size``.
  """
  crop = center_crop_square(image)
  side = crop.shape[0]
  if side < size:
    h, w = image.shape[:2]
    raise ValueError(f"{name}: image is {w}x{h} (largest centred square {side}x{side}), smaller "
                     f"than the requested size {size}x{size}; upsampling is not done.")
  if side == size:
    return np.array(crop, dtype=np.float64)
  return resize(crop, (size, size), order=1, mode="reflect", anti_aliasing=True,
                preserve_range=True)


def fov_mask(size: int) -> np.ndarray:
  """``(size, size)`` bool: True where the pixel centre is within ``size/2 - 1`` of the centre."""
  c = (size - 1) / 2.0
  y, x = np.ogrid[:size, :size]
  return (y - c) ** 2 + (x - c) ** 2 <= (size / 2.0 - 1.0) ** 2


def hu_to_attenuation(hu: np.ndarray, mu_water: float = CT_MU_WATER) -> np.ndarray:
  """``mu = mu_water (1 + HU/1000)``, clipped at 0 (air and below -> 0). Any shape, float64."""
  return np.maximum(mu_water * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0)


def check_finite_images(images: np.ndarray, name: str) -> None:
  bad = ~np.isfinite(images)
  if bad.any():
    raise ValueError(f"{name}: {int(bad.sum())} non-finite value(s) (NaN/Inf) in the image.")


def take_first(items: Sequence, n: Optional[int], what: str):
  """The first ``n`` of ``items`` (all where ``n`` is None); ``ValueError`` if there are fewer."""
  if n is None:
    return items
  if int(n) != n or n < 1:
    raise ValueError(f"n must be a positive integer or None, got {n!r}.")
  if n > len(items):
    raise ValueError(f"{what} holds only {len(items)} image(s), fewer than the requested n={n}.")
  return items[:int(n)]


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")


# ----------------------------------------------------------------------------- files

def require_dir(path: str, what: str) -> str:
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{what} directory not found: {path}")
  return path


def list_images(folder: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
  """Sorted paths of the files in ``folder`` whose (lower-cased) name ends in ``extensions``."""
  names = sorted(f for f in os.listdir(folder)
                 if f.lower().endswith(tuple(extensions))
                 and os.path.isfile(os.path.join(folder, f)))
  return [os.path.join(folder, f) for f in names]


def read_image(path: str) -> Image.Image:
  """Open and fully decode ``path``; ``ValueError`` naming it if it is unreadable or corrupt."""
  try:
    with Image.open(path) as img:
      img.load()
      return img.copy()
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
    raise ValueError(f"cannot read image {path}: {err}") from err


def read_gray(path: str) -> np.ndarray:
  """An image file as ``(H, W)`` float64 BT.601 luma on the 0-255 scale.

  8-bit images (gray, RGB, palette, CMYK, ...) keep their values. 16-bit gray images (and 32-bit
  integer ones whose values fit in 16 bits) are rescaled by ``255 / 65535``; float images
  (e.g. TIFF) must be finite and within [0, 1] and are rescaled by 255. Anything else is a
  ``ValueError`` naming ``path``: NaN/Inf pixels, a float image outside [0, 1], integers beyond
  16 bits. The checks run on the decoded values, before any conversion could hide them.
  """
  img = read_image(path)
  mode = img.mode
  if mode in ("L", "RGB", "RGBA"):
    return to_gray(np.asarray(img))
  if mode == "F":
    values = np.asarray(img, dtype=np.float64)
    check_finite_images(values, path)
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
      raise ValueError(f"{path}: float image with values in [{low:.6g}, {high:.6g}]; float "
                       "images must hold intensities in [0, 1] (or save it as an 8- or 16-bit "
                       "image).")
    return values * 255.0
  if mode.startswith("I"):  # "I;16", "I;16B", ... and "I" (32-bit signed)
    values = np.asarray(img, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 65535.0:
      raise ValueError(f"{path}: integer image with values in [{low:.0f}, {high:.0f}], beyond "
                       "16 bits; save it as an 8- or 16-bit image.")
    return values * (255.0 / 65535.0)
  return to_gray(np.asarray(img.convert("RGB")))


def bsds500_files(data_dir: str, split: str) -> List[str]:
  """Paths of the ``split`` images, in order (module docstring: 450 train / 50 test).

  ``data_dir`` holds ``train/ val/ test/``. Errors name the missing or empty folder.
  """
  check_split(split)
  root = require_dir(os.fspath(data_dir), "BSDS500 data")
  folders = [require_dir(os.path.join(root, folder), "BSDS500") for folder in BSDS_FOLDERS]
  files = {}
  for folder, path in zip(BSDS_FOLDERS, folders):
    files[folder] = list_images(path)
    if not files[folder]:
      raise FileNotFoundError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) in {path}")
  test = files["test"]
  if len(test) <= BSDS_N_TEST:
    raise ValueError(f"{os.path.join(root, 'test')} holds {len(test)} images; the split takes its "
                     f"last {BSDS_N_TEST} for testing and needs more than that.")
  if split == "test":
    return test[-BSDS_N_TEST:]
  return files["train"] + files["val"] + test[:-BSDS_N_TEST]


def load_gray_files(paths: Sequence[str], size: int, dtype) -> np.ndarray:
  """Files -> ``(N, size, size)`` grayscale 0-255 (``read_gray``: 16-bit and float images
  rescaled or refused), cropped and resized; finite-checked per file."""
  out = np.empty((len(paths), size, size), dtype=dtype)
  for i, path in enumerate(paths):
    out[i] = square_resize(read_gray(path), size, path)
    check_finite_images(out[i], path)
  return out


def load_bsds500(data_dir, split: str, size: int = 256, n: Optional[int] = None,
                 dtype=np.float32) -> np.ndarray:
  """BSDS500 ``split`` as ``(N, size, size)`` grayscale on the 0-255 scale (N = 450 / 50, or n)."""
  dtype, size = check_dtype(dtype), check_size(size)
  paths = take_first(bsds500_files(data_dir, split), n, f"BSDS500 split {split!r} at {data_dir}")
  return load_gray_files(paths, size, dtype)


def is_bsds500_layout(data_dir) -> bool:
  """Whether ``data_dir`` has BSDS500's ``train/ val/ test/`` folders."""
  return all(os.path.isdir(os.path.join(os.fspath(data_dir), f)) for f in BSDS_FOLDERS)


def load_image_folder(folder, size: int, n: Optional[int] = None,
                      dtype=np.float32) -> np.ndarray:
  """The images directly in ``folder`` (sorted by name; at most the first ``n``) as
  ``(N, size, size)`` grayscale on the 0-255 scale; errors name a missing or empty folder."""
  dtype, size = check_dtype(dtype), check_size(size)
  paths = list_images(require_dir(os.fspath(folder), "image"))
  if not paths:
    raise FileNotFoundError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) in {folder}")
  if n is not None:
    paths = take_first(paths, min(n, len(paths)), f"image folder {folder}")
  return load_gray_files(paths, size, dtype)


# ----------------------------------------------------------------------------- CT

def ct_files(data_dir) -> List[str]:
  """Sorted ``.png`` paths under ``data_dir``: the png16 folder, ``covid19_ny_sbu``, ``ct/``, or the
  data root; the first of ``CT_SUBDIRS`` that holds PNGs wins."""
  root = require_dir(os.fspath(data_dir), "CT data")
  for sub in CT_SUBDIRS:
    folder = os.path.join(root, sub)
    if os.path.isdir(folder):
      files = list_images(folder, (".png",))
      if files:
        return files
  tried = ", ".join(os.path.join(root, s) for s in CT_SUBDIRS)
  raise FileNotFoundError(f"no .png CT slices found in {root} (looked in: {tried})")


def read_hu(path: str) -> np.ndarray:
  """A 16-bit PNG slice as ``(H, W)`` float64 Hounsfield units (``png - 1024``)."""
  img = read_image(path)
  if img.mode not in CT_PNG_MODES:
    raise ValueError(f"{path}: expected a 16-bit grayscale PNG, got mode {img.mode!r}.")
  return np.asarray(img, dtype=np.float64) - CT_HU_OFFSET


def ct_slice(hu: np.ndarray, size: int, mu_water: float, name: str) -> np.ndarray:
  """HU ``(H, W)`` -> attenuation ``(size, size)``: convert, crop + resize, clip, FOV mask."""
  mu = square_resize(hu_to_attenuation(hu, mu_water), size, name)
  return np.where(fov_mask(size), np.maximum(mu, 0.0), 0.0)


def load_ct_slices(data_dir, size: int = 512, n: Optional[int] = None, dtype=np.float32,
                   mu_water: float = CT_MU_WATER) -> np.ndarray:
  """CT slices as ``(N, size, size)`` attenuation (water = ``mu_water``), zero outside the FOV."""
  dtype, size = check_dtype(dtype), check_size(size)
  if not (np.isfinite(mu_water) and mu_water > 0):
    raise ValueError(f"mu_water must be finite and > 0, got {mu_water}.")
  paths = take_first(ct_files(data_dir), n, f"CT folder {data_dir}")
  out = np.empty((len(paths), size, size), dtype=dtype)
  for i, path in enumerate(paths):
    out[i] = ct_slice(read_hu(path), size, mu_water, path)
    check_finite_images(out[i], path)
  return out


# ----------------------------------------------------------------------------- embedded set

def sample_raw(name: str) -> np.ndarray:
  """One bundled scikit-image picture by name, as stored (first view of a stereo pair)."""
  from skimage import data as skdata  # pylint: disable=import-outside-toplevel
  try:
    image = getattr(skdata, name)()
  except Exception as err:  # pylint: disable=broad-except
    raise FileNotFoundError(f"scikit-image sample image {name!r} could not be loaded offline "
                            f"from {os.path.dirname(skdata.__file__)}: {err}") from err
  return image[0] if isinstance(image, tuple) else image


def sample_images(size: int = 128, n: Optional[int] = None, dtype=np.float32,
                  names: Sequence[str] = SAMPLE_NAMES) -> np.ndarray:
  """The embedded set as ``(N, size, size)`` grayscale 0-255, in ``names`` order (first ``n``)."""
  dtype, size = check_dtype(dtype), check_size(size)
  names = take_first(tuple(names), n, "the embedded scikit-image set")
  out = np.empty((len(names), size, size), dtype=dtype)
  for i, name in enumerate(names):
    label = f"scikit-image sample {name!r}"
    out[i] = square_resize(to_gray(sample_raw(name)), size, label)
    check_finite_images(out[i], label)
  return out


def sample_split_names() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
  """``(train_names, test_names)`` of the embedded set; disjoint, covering ``SAMPLE_NAMES``."""
  return tuple(nm for nm in SAMPLE_NAMES if nm not in SAMPLE_TEST), SAMPLE_TEST


def sample_split(size: int = 128, n_train: Optional[int] = None, n_test: Optional[int] = None,
                 dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
  """Embedded ``(train (12|n_train, size, size), test (4|n_test, size, size))``."""
  train_names, test_names = sample_split_names()
  train = sample_images(size, n_train, dtype, train_names)
  test = sample_images(size, n_test, dtype, test_names)
  return train, test


def is_embedded(data_dir) -> bool:
  return data_dir is None or (isinstance(data_dir, str) and data_dir in ("", "embedded"))


def load_images(data_dir: Optional[str], split: str, size: int, n: Optional[int] = None,
                dtype=np.float32) -> np.ndarray:
  """``(N, size, size)`` 0-255 grayscale of ``split``: embedded set or BSDS500 at ``data_dir``."""
  check_split(split)
  if not is_embedded(data_dir):
    return load_bsds500(data_dir, split, size, n, dtype)
  names = sample_split_names()[SPLITS.index(split)]
  return sample_images(size, n, dtype, names)
