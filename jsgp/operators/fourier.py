"""Partial Fourier sampling: compressive sensing with an orthonormal 2-D DFT."""
from __future__ import annotations

import math
from typing import ClassVar, Tuple

import jax
import jax.numpy as jnp

from jsgp import struct, validation
from jsgp.operators.base import SameShapeOperator


@struct.dataclass
class PartialFourier(SameShapeOperator):
  """``y = P F x``: orthonormal 2-D FFT of a real image, then a 0/1 k-space pattern ``P``.

  Measurements are complex, of the image's shape (unsampled frequencies are zeros). With the real
  inner product ``Re <u, v>`` the adjoint is ``Re F^{-1}(P y)``. ``||A|| <= 1``.
  """

  pattern: jax.Array  # (H, W) 0/1, unshifted (DC at [0, 0])
  shape_field: ClassVar[str] = "pattern"

  def apply(self, x):
    return self.pattern * jnp.fft.fft2(x, norm="ortho")

  def adjoint(self, y):
    return jnp.real(jnp.fft.ifft2(self.pattern * y, norm="ortho")).astype(self.pattern.dtype)

  def measured_entries(self):
    return self.pattern

  def normal_solve(self, x, t):
    """``(I + t M^T M)^{-1} x`` for a real image ``x`` ``(H, W)`` and a scalar ``t > 0``. On real
    images ``M^T M = F^{-1} D F`` with ``D(k) = (P(k) + P(-k)) / 2`` (the real part of the
    adjoint pairs each frequency with its mirror), so the solve is one FFT pair."""
    mirrored = jnp.roll(jnp.flip(self.pattern, (-2, -1)), 1, (-2, -1))  # P(-k mod N)
    inverse = 1.0 / (1.0 + 0.5 * t * (self.pattern + mirrored))
    return jnp.real(jnp.fft.ifft2(inverse * jnp.fft.fft2(x))).astype(self.pattern.dtype)


def variable_density_pattern(key: jax.Array, shape: Tuple[int, int], rate: float,
                             dtype=jnp.float32, decay: float = 2.0,
                             center_fraction: float = 0.04) -> PartialFourier:
  """Random variable-density k-space pattern with about ``rate * H * W`` samples.

  The paper does not state its pattern; we use the common compressive-sensing MRI choice: every
  frequency within radius ``sqrt(center_fraction * H * W / pi)`` of DC is sampled, and the others
  independently with probability ``min(1, c * (1 - r / r_max) ** decay)``, with ``c`` found by
  bisection so that the expected number of samples is ``rate * H * W``. ``rate = 1`` samples all.
  """
  validation.check_rate("rate", rate)
  h, w = shape
  fy = jnp.fft.fftfreq(h) * h
  fx = jnp.fft.fftfreq(w) * w
  r = jnp.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
  r_max = jnp.max(r)
  base = (1.0 - r / r_max) ** decay
  center = r <= jnp.sqrt(center_fraction * h * w / jnp.pi)
  target = rate * h * w

  def expected(c):
    return jnp.sum(jnp.where(center, 1.0, jnp.minimum(1.0, c * base)))

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    return jnp.where(expected(mid) < target, mid, lo), jnp.where(expected(mid) < target, hi, mid)

  lo, hi = jax.lax.fori_loop(0, 60, bisect, (jnp.float32(0.0), jnp.float32(1e6)))
  prob = jnp.where(center, 1.0, jnp.minimum(1.0, hi * base))
  prob = jnp.where(rate >= 1.0, 1.0, prob)
  pattern = jax.random.uniform(key, shape) < prob
  return PartialFourier(pattern=pattern.astype(dtype))


# ------------------------------------------------------------------------------------------------
# Further k-space sampling patterns. Same conventions as ``variable_density_pattern``:
# unshifted (DC at [0, 0]), 0/1 in ``dtype``, about ``rate * H * W`` samples, DC always sampled,
# drawn from ``key`` (vmappable over keys), ``rate = 1`` samples everything. ``rate`` may be a
# traced value; it is validated by the caller (``jsgp.problems.Task``).

PATTERNS = ("variable_density", "uniform", "lines", "radial")


def _frequencies(n: int) -> jax.Array:
  """Integer frequencies of an unshifted length-``n`` DFT axis: ``0, 1, ..., -1``."""
  return jnp.fft.fftfreq(n) * n


def _center_disc(shape: Tuple[int, int], center_fraction: float) -> jax.Array:
  """The frequencies within radius ``sqrt(center_fraction * H * W / pi)`` of DC (DC included)."""
  h, w = shape
  fy, fx = _frequencies(h), _frequencies(w)
  r = jnp.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
  return r <= jnp.sqrt(center_fraction * h * w / jnp.pi)


def uniform_pattern(key: jax.Array, shape: Tuple[int, int], rate: float, dtype=jnp.float32,
                    center_fraction: float = 0.0125) -> PartialFourier:
  """Uniform random k-space sampling around a small fully sampled centre.

  Every frequency within radius ``sqrt(center_fraction * H * W / pi)`` of DC is sampled (about
  ``center_fraction * H * W`` of them; ``center_fraction = 0`` keeps DC alone), and every other
  one independently with the same probability ``p = (rate * N - n_center) / (N - n_center)``, so
  that the expected total is exactly ``rate * N`` (``N = H * W``). If the centre alone holds more
  than ``rate * N`` samples, only the centre is sampled.

  The default ``0.0125`` (radius 16.1: 821 frequencies at 256 x 256) is the centre that makes
  FISTA-b@100 as hard as in the paper (arXiv 1902.02449, Table 2) on the BSDS500 test images;
  the comparison is in BUILD_NOTES.md.
  """
  h, w = shape
  center = _center_disc(shape, center_fraction)
  n_center = jnp.sum(center)
  n = h * w
  p = jnp.clip((rate * n - n_center) / jnp.maximum(n - n_center, 1), 0.0, 1.0)
  pattern = center | (jax.random.uniform(key, shape) < p)
  pattern = pattern | (rate >= 1.0)
  return PartialFourier(pattern=pattern.astype(dtype))


def cartesian_lines_pattern(key: jax.Array, shape: Tuple[int, int], rate: float,
                            dtype=jnp.float32, center_fraction: float = 0.04,
                            decay: float = 0.0) -> PartialFourier:
  """Random Cartesian sampling: whole rows of k-space (MRI phase-encode lines, readout along x).

  Exactly ``round(rate * H)`` rows are sampled (so ``rate * H * W`` samples up to rounding; a
  Bernoulli draw per row would spread the rate by ~3 % of N at H = 256). The rows with
  ``|k_y| <= center_fraction * H / 2`` come first (the DC row always: 11 of 256 rows, 3 of 64 for
  ``0.04``); the rest are drawn without replacement with weights ``(1 - |k_y| / (H / 2 + 1)) **
  decay`` (Gumbel top-k). ``decay = 0`` (default): uniform over the outer rows; ``decay > 0``:
  variable density. If the centre holds more than ``round(rate * H)`` rows, only that many of
  them (DC included) are sampled. A pattern is constant along x, so aliasing is coherent along y:
  harder than 2-D random sampling at the same rate.
  """
  h, _ = shape
  fy = _frequencies(h)
  center = jnp.abs(fy) <= center_fraction * h / 2
  log_weight = decay * jnp.log1p(-jnp.abs(fy) / (h / 2 + 1))
  score = jnp.where(center, jnp.inf, log_weight + jax.random.gumbel(key, (h,)))
  rank = jnp.argsort(jnp.argsort(-score))  # 0 = the row with the highest score
  n_rows = jnp.maximum(jnp.round(rate * h), 1)
  rows = (rank < n_rows) | (fy == 0)
  pattern = jnp.broadcast_to(rows[:, None], shape)
  return PartialFourier(pattern=pattern.astype(dtype))


# Golden angle for radial spokes (pi / golden ratio): any prefix of the sequence is near-uniform.
GOLDEN_ANGLE = math.pi * (math.sqrt(5.0) - 1.0) / 2.0


def radial_pattern(key: jax.Array, shape: Tuple[int, int], rate: float, dtype=jnp.float32,
                   max_spokes: int = 0) -> PartialFourier:
  """Golden-angle radial sampling: straight lines ("spokes") through DC.

  Spoke ``i`` has angle ``theta_0 + i * GOLDEN_ANGLE`` with a random ``theta_0`` from ``key``; it
  is rasterised to the nearest integer frequencies (half-pixel steps) across the whole grid,
  corners included. The number of spokes is the one whose pattern size is closest to
  ``rate * H * W`` (deterministic given ``theta_0``, so the count is near-exact, within one
  spoke's new samples: up to ~0.15 % of N at 256 x 256). ``max_spokes`` (default ``4 * max(H, W)``,
  enough to cover the grid) bounds the search. Every spoke passes through DC. The pattern is
  point-symmetric (``k`` and ``-k`` together), so for real images, whose spectrum is Hermitian,
  about half of the samples carry no new information (random 2-D patterns draw ``k`` and ``-k``
  independently).
  """
  h, w = shape
  n_spokes = max_spokes or 4 * max(h, w)
  radius = 0.5 * math.hypot(h, w)
  n_points = 2 * math.ceil(2 * radius) + 1  # odd: t = 0 (DC) is on every spoke
  t = 0.5 * (jnp.arange(n_points) - (n_points - 1) // 2)
  theta = jax.random.uniform(key, (), minval=0.0, maxval=jnp.pi) + GOLDEN_ANGLE * jnp.arange(
      n_spokes)
  ky = jnp.round(t[None, :] * jnp.sin(theta)[:, None]).astype(jnp.int32)
  kx = jnp.round(t[None, :] * jnp.cos(theta)[:, None]).astype(jnp.int32)
  inside = (jnp.abs(ky) <= h // 2) & (jnp.abs(kx) <= w // 2)
  flat = jnp.where(inside, (ky % h) * w + (kx % w), h * w)  # h * w: a dropped overflow slot
  spoke = jnp.broadcast_to(jnp.arange(n_spokes, dtype=jnp.int32)[:, None], flat.shape)
  first = jnp.full((h * w + 1,), n_spokes, jnp.int32).at[flat.ravel()].min(spoke.ravel())[:-1]
  # count(n) = #{first < n} grows with n; take the n whose count is closest to rate * N.
  target = rate * h * w
  ordered = jnp.sort(first)
  kth = jnp.clip(jnp.ceil(target).astype(jnp.int32) - 1, 0, h * w - 1)
  n_hi = ordered[kth] + 1
  count = lambda n: jnp.searchsorted(ordered, n, side="left")
  n_lo = jnp.maximum(n_hi - 1, 1)
  use_lo = jnp.abs(count(n_lo) - target) < jnp.abs(count(n_hi) - target)
  n_used = jnp.where(use_lo, n_lo, n_hi)
  pattern = ((first < n_used) | (rate >= 1.0)).reshape(shape)
  return PartialFourier(pattern=pattern.astype(dtype))


_PATTERN_FUNCTIONS = {
    "variable_density": variable_density_pattern,
    "uniform": uniform_pattern,
    "lines": cartesian_lines_pattern,
    "radial": radial_pattern,
}


def fourier_pattern(kind: str, key: jax.Array, shape: Tuple[int, int], rate: float,
                    dtype=jnp.float32, **params) -> PartialFourier:
  """The k-space pattern ``kind`` (one of ``PATTERNS``); ``params`` go to its function
  (e.g. ``center_fraction``, ``decay``). Raises ``ValueError`` for an unknown ``kind``."""
  if kind not in _PATTERN_FUNCTIONS:
    raise ValueError(f"unknown Fourier sampling pattern {kind!r}; expected one of {PATTERNS}.")
  return _PATTERN_FUNCTIONS[kind](key, shape, rate, dtype, **params)
