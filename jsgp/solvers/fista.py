"""FISTA with Beck-Teboulle backtracking ("FISTA-b", the paper's baseline)."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jsgp.operators import sum_squares


class FISTAState(NamedTuple):
  x: jax.Array               # x_k
  residual: jax.Array        # A x_k - y
  prev_residual: jax.Array   # A x_{k-1} - y
  prev_x: jax.Array          # x_{k-1}
  momentum: jax.Array        # s_k
  lipschitz: jax.Array       # current backtracked L_k (stepsize = 1/L_k)
  objective: jax.Array       # F(x_k)
  stepsize: jax.Array        # 1/L_k
  backtracks: jax.Array      # trials rejected in the last step


@struct.dataclass
class FISTA:
  """FISTA-b. ``L`` starts at ``lipschitz0_factor * problem.lipschitz`` and grows by ``eta``
  until the quadratic upper bound holds (it never decreases).

  Per iteration: one ``A^T`` (gradient at the extrapolated point, whose residual is formed from
  the stored residuals since ``A`` is linear) and one ``A`` per trial point (``A (p - z)``, from
  which both the backtracking test and the new residual follow).
  ``lipschitz0_factor = 1`` starts at the power-iteration estimate (plain FISTA when it holds);
  the paper-style baseline starts lower and backtracks up.
  """

  eta: float = struct.field(pytree_node=False, default=2.0)
  lipschitz0_factor: float = struct.field(pytree_node=False, default=1.0)
  max_backtracks: int = struct.field(pytree_node=False, default=40)

  def init(self, problem, x0) -> FISTAState:
    residual = problem.residual(x0)
    objective = problem.f_from_residual(residual) + problem.g(x0)
    lipschitz = self.lipschitz0_factor * problem.lipschitz
    one = jnp.ones((), jnp.real(objective).dtype)
    return FISTAState(x0, residual, residual, x0, one, lipschitz, objective, 1.0 / lipschitz,
                      jnp.int32(0))

  def step(self, problem, state: FISTAState) -> FISTAState:
    s = state.momentum
    s_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * s * s))
    c = (s - 1.0) / s_next
    # Extrapolated point z and its residual, by linearity: no operator application.
    z = state.x + c * (state.x - state.prev_x)
    rz = state.residual + c * (state.residual - state.prev_residual)
    gz = problem.grad_from_residual(rz)

    def trial(lipschitz):
      # For quadratic f the upper-bound test f(p) <= f(z) + <p - z, grad> + L/2 ||p - z||^2
      # is exactly ||A d||^2 <= L ||d||^2 with d = p - z. Testing that form avoids comparing
      # two large, nearly equal objective values, which fails in float32 near convergence.
      p = problem.forward_backward(z, gz, 1.0 / lipschitz)
      d = p - z
      Ad = problem.op.apply(d)
      return p, rz + Ad, sum_squares(Ad) <= lipschitz * sum_squares(d)

    def cond(carry):
      _, _, _, ok, i = carry
      return ~ok & (i < self.max_backtracks)

    def body(carry):
      lipschitz, _, _, _, i = carry
      lipschitz = self.eta * lipschitz
      return (lipschitz,) + trial(lipschitz) + (i + 1,)

    lipschitz, p, rp, _, i = jax.lax.while_loop(
        cond, body, (state.lipschitz,) + trial(state.lipschitz) + (jnp.int32(0),))
    objective = problem.f_from_residual(rp) + problem.g(p)
    return FISTAState(p, rp, state.residual, state.x, s_next, lipschitz, objective,
                      1.0 / lipschitz, i)
