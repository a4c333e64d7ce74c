"""Pixel mask: inpainting's sampling operator."""
from __future__ import annotations

from typing import ClassVar, Tuple

import jax
import jax.numpy as jnp

from jsgp import struct, validation
from jsgp.operators.base import SameShapeOperator


@struct.dataclass
class PixelMask(SameShapeOperator):
  """``y = m * x`` with a 0/1 mask ``m`` of the image's shape.

  Missing pixels are kept as zeros rather than dropped, so every instance of a batch has the same
  output shape whatever its sampling rate; the objective is unchanged. Self-adjoint.
  """

  mask: jax.Array  # (H, W) 0/1 in the image dtype
  shape_field: ClassVar[str] = "mask"

  def apply(self, x):
    return self.mask * x

  def adjoint(self, y):
    return self.mask * y

  def normal_solve(self, x, t):
    """``(I + t M^T M)^{-1} x`` for an image ``x`` ``(H, W)`` and a scalar ``t > 0``."""
    return x / (1.0 + t * self.mask)

  def measured_entries(self):
    return self.mask


def random_pixel_mask(key: jax.Array, shape: Tuple[int, int], rate: float,
                      dtype=jnp.float32) -> PixelMask:
  """Keep each pixel independently with probability ``rate`` in (0, 1]."""
  validation.check_rate("rate", rate)
  return PixelMask(mask=jax.random.bernoulli(key, rate, shape).astype(dtype))
