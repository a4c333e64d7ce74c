"""Partial Fourier sampling: compressive sensing with an orthonormal 2-D DFT."""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
from flax import struct

from jsgp import validation
from jsgp.operators.base import LinearOperator


@struct.dataclass
class PartialFourier(LinearOperator):
  """``y = P F x``: orthonormal 2-D FFT of a real image, then a 0/1 k-space pattern ``P``.

  Measurements are complex, of the image's shape (unsampled frequencies are zeros). With the real
  inner product ``Re <u, v>`` the adjoint is ``Re F^{-1}(P y)``. ``||A|| <= 1``.
  """

  pattern: jax.Array  # (H, W) 0/1, unshifted (DC at [0, 0])

  @property
  def in_shape(self) -> Tuple[int, ...]:
    return self.pattern.shape[-2:]

  @property
  def out_shape(self) -> Tuple[int, ...]:
    return self.pattern.shape[-2:]

  def apply(self, x):
    return self.pattern * jnp.fft.fft2(x, norm="ortho")

  def adjoint(self, y):
    return jnp.real(jnp.fft.ifft2(self.pattern * y, norm="ortho")).astype(self.pattern.dtype)

  def measured_entries(self):
    return self.pattern


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
