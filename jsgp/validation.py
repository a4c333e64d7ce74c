"""Input checks, run on concrete values before anything is traced. One place for all of them.

Every check raises ``ValueError`` naming the argument. Checks of values that may legitimately be
traced (a rate inside a jitted simulation) skip tracers: validation happens where the value is
concrete, at the API edge.
"""
from __future__ import annotations

import numbers

import jax
import numpy as np


def is_concrete(value) -> bool:
  """False for a value being traced by jit/vmap/grad (it has no number to check)."""
  return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def check_finite(name: str, value) -> None:
  arr = np.asarray(value)
  if not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise ValueError(f"{name} contains {bad} NaN/Inf value(s); measurements must be finite.")


def check_positive(name: str, value) -> None:
  """``value`` (any shape) finite and > 0."""
  arr = np.asarray(value)
  if not np.all(np.isfinite(arr) & (arr > 0)):
    shown = arr if arr.size < 8 else arr[~(np.isfinite(arr) & (arr > 0))].ravel()[0]
    raise ValueError(f"{name} must be finite and > 0, got {shown}.")


def check_nonnegative(name: str, value) -> None:
  """``value`` finite and >= 0."""
  if not (np.isfinite(float(value)) and float(value) >= 0.0):
    raise ValueError(f"{name} must be finite and >= 0, got {value}.")


def check_rate(name: str, rate) -> None:
  """A sampling rate in (0, 1] (NaN is not); tracers pass."""
  if not is_concrete(rate):
    return
  arr = np.asarray(rate, np.float64)
  if not np.all((arr > 0.0) & (arr <= 1.0)):
    raise ValueError(f"{name} must be in (0, 1], got {rate}.")


def check_integer(name: str, value, minimum: int = 0) -> int:
  """``value`` a whole number (not a bool, not 5.5) >= ``minimum``; returned as int."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
  if int(value) < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
  return int(value)


def check_number(name: str, value) -> None:
  """A real number that is not NaN (infinite is allowed, e.g. ``tol``)."""
  arr = np.asarray(value)
  if arr.dtype.kind not in "biuf" or np.any(np.isnan(arr)):
    raise ValueError(f"{name} must be a real number (not NaN), got {value!r}.")


def check_setting(owner: str, name: str, value, *, low=None, high=None, low_open=True,
                  high_open=True, integer=False) -> None:
  """A method's constructor setting: ``ValueError`` naming ``owner.name`` unless ``value`` is a
  (non-bool) number within the bounds (open by default; ``None``: unbounded), whole if
  ``integer``."""
  kind = numbers.Integral if integer else numbers.Real
  ok = isinstance(value, kind) and not isinstance(value, (bool, np.bool_)) and np.isfinite(value)
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if not ok:
    bounds = []
    if low is not None:
      bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
      bounds.append(f"{'<' if high_open else '<='} {high:g}")
    what = ("an integer" if integer else "a finite number") + (
        " " + " and ".join(bounds) if bounds else "")
    raise ValueError(f"{owner} {name} must be {what}, got {value!r}.")


def check_shape(name: str, shape, expected) -> None:
  if tuple(shape) != tuple(expected):
    raise ValueError(f"{name} has shape {tuple(shape)}, expected {tuple(expected)}.")
