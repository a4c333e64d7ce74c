"""Input checks, run on concrete values before anything is traced. One place for all of them."""
from __future__ import annotations

import numpy as np


def check_finite(name: str, value) -> None:
  arr = np.asarray(value)
  if not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise ValueError(f"{name} contains {bad} NaN/Inf value(s); measurements must be finite.")


def check_positive(name: str, value) -> None:
  arr = np.asarray(value)
  if not np.all(arr > 0):
    raise ValueError(f"{name} must be > 0, got {arr if arr.size < 8 else arr.min()}.")


def check_rate(name: str, rate) -> None:
  if not 0.0 < float(rate) <= 1.0:
    raise ValueError(f"{name} must be in (0, 1], got {rate}.")


def check_shape(name: str, shape, expected) -> None:
  if tuple(shape) != tuple(expected):
    raise ValueError(f"{name} has shape {tuple(shape)}, expected {tuple(expected)}.")


def check_nonnegative(name: str, value) -> None:
  if not float(value) >= 0.0:
    raise ValueError(f"{name} must be >= 0, got {value}.")
