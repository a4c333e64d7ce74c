"""Proximal gradient method (ISTA) with the constant stepsize ``1/L``."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jsgp import struct


class PGMState(NamedTuple):
  x: jax.Array          # (Hc, Wc) iterate
  residual: jax.Array   # A x - y
  grad: jax.Array       # A^T (A x - y)
  objective: jax.Array  # F(x)
  stepsize: jax.Array   # 1/L
  backtracks: jax.Array  # always 0


@struct.dataclass
class PGM:
  """``x+ = prox_{g/L}(x - grad f(x) / L)``: one ``A`` and one ``A^T`` per iteration.

  Monotone, since ``1/L`` (``problem.lipschitz`` is an upper estimate) satisfies the descent lemma.
  """

  def init(self, problem, x0) -> PGMState:
    return self.warm_start(problem, x0, *problem.first_order(x0))

  def warm_start(self, problem, x0, residual, grad, objective) -> PGMState:
    """The initial state at ``x0`` from quantities already computed (``grad``: None forms it)."""
    if grad is None:
      grad = problem.grad_from_residual(residual)
    step = (1.0 / problem.lipschitz).astype(jnp.real(objective).dtype)
    return PGMState(x0, residual, grad, objective, step, jnp.int32(0))

  def step(self, problem, state: PGMState) -> PGMState:
    x = problem.forward_backward(state.x, state.grad, state.stepsize)
    residual, grad, objective = problem.first_order(x)
    return state._replace(x=x, residual=residual, grad=grad, objective=objective)
