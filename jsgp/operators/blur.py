"""Gaussian blur as a circular convolution."""
from __future__ import annotations

from typing import ClassVar, Tuple

import jax
import jax.numpy as jnp

from jsgp import struct, validation
from jsgp.operators.base import SameShapeOperator


@struct.dataclass
class GaussianBlur(SameShapeOperator):
  """``y = h * x``, circular (periodic boundary) convolution with a Gaussian kernel.

  Boundary model: periodic. The operator is diagonalised by the DFT, so apply and adjoint are one
  FFT pair each and the adjoint is exact (the kernel is symmetric, so the operator is self-adjoint
  and ``||A|| = max |H| = 1``). Measurements are simulated with the same model.
  The transfer function is the leaf, so instances with different ``sigma`` vmap together.
  """

  transfer: jax.Array  # (H, W) real DFT of the centred, unit-sum kernel
  shape_field: ClassVar[str] = "transfer"

  def apply(self, x):
    return jnp.real(jnp.fft.ifft2(self.transfer * jnp.fft.fft2(x))).astype(self.transfer.dtype)

  def adjoint(self, y):
    return self.apply(y)

  def normal_solve(self, x, t):
    """``(I + t H^T H)^{-1} x`` for an image ``x`` ``(H, W)`` and a scalar ``t > 0``: diagonal in
    the DFT (one FFT pair)."""
    inverse = 1.0 / (1.0 + t * self.transfer ** 2)
    return jnp.real(jnp.fft.ifft2(inverse * jnp.fft.fft2(x))).astype(self.transfer.dtype)


def gaussian_blur(shape: Tuple[int, int], sigma, dtype=jnp.float32) -> GaussianBlur:
  """Gaussian blur with standard deviation ``sigma`` > 0 pixels (the paper uses 2)."""
  if validation.is_concrete(sigma):
    validation.check_positive("sigma", sigma)
  h, w = shape
  dy = jnp.fft.fftfreq(h) * h  # signed distances to pixel (0, 0) on the torus
  dx = jnp.fft.fftfreq(w) * w
  kernel = jnp.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2.0 * jnp.asarray(sigma) ** 2))
  kernel = kernel / jnp.sum(kernel)
  return GaussianBlur(transfer=jnp.real(jnp.fft.fft2(kernel)).astype(dtype))
