"""Stepsize / scaling policies for ``DRS``: pure pytree callables ``(problem, x, grad) -> d``.

``d`` is in stepsize units (scalar per instance, or a canvas-shaped diagonal); the solver applies
its own safeguards, so a policy may return anything, even NaN, without breaking convergence.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ConstantPolicy:
  """``d = multiplier / L``: a fixed multiple of the conventional step (a non-learned DRS)."""

  multiplier: jax.Array = 1.0

  def __call__(self, problem, x, grad):
    return jnp.asarray(self.multiplier, x.dtype) / problem.lipschitz
