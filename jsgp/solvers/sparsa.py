"""SpaRSA: proximal gradient with Barzilai-Borwein steps and a non-monotone line search
(Wright, Nowak, Figueiredo 2009; the FASTA family of Goldstein, Studer, Baraniuk)."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jsgp import policies, struct, validation
from jsgp.operators import sum_squares
from jsgp.solvers.linesearch import backtrack


class SpaRSAState(NamedTuple):
  x: jax.Array
  residual: jax.Array     # A x - y, computed fresh from x
  grad: jax.Array         # A^T (A x - y)
  objective: jax.Array    # F(x), the true objective
  stepsize: jax.Array     # the accepted step t_k
  backtracks: jax.Array   # rejected trials of the last step
  policy_state: Any       # the stepsize policy's state
  recent: jax.Array       # (memory,) the last objective values (the non-monotone reference)


@struct.dataclass
class SpaRSA:
  """``x+ = prox_t(x - t grad)`` with ``t`` from ``policy`` (default BB1), accepted when

      ``F(x+) <= max(F over the last memory iterates) - sufficient_decrease / (2 t) ||x+ - x||^2``

  (Wright et al.'s ``sigma``), otherwise ``t`` shrinks by ``shrink`` (never below ``1/L``, where
  the test always holds for ``sufficient_decrease <= 1``, so each step ends after at most
  ``log(t L) / log(1/shrink)`` trials; ``max_backtracks`` caps them, the last trial is then
  taken). ``memory = 1`` is a monotone method. Convergence: Wright et al. (2009), Theorem 1.

  Cost per iteration: one ``A`` per trial (the fresh residual of ``x+``: true objective, no
  drift) and one ``A^T`` (the gradient at the accepted point).
  """

  policy: Any = policies.BarzilaiBorwein("bb1")
  memory: int = struct.field(pytree_node=False, default=5)
  sufficient_decrease: float = struct.field(pytree_node=False, default=1e-2)
  shrink: float = struct.field(pytree_node=False, default=0.5)
  max_backtracks: int = struct.field(pytree_node=False, default=40)

  def __post_init__(self):
    validation.check_setting("SpaRSA", "memory", self.memory, low=1, low_open=False, integer=True)
    validation.check_setting("SpaRSA", "sufficient_decrease", self.sufficient_decrease, low=0,
                             high=1, high_open=False)
    validation.check_setting("SpaRSA", "shrink", self.shrink, low=0, high=1)
    validation.check_setting("SpaRSA", "max_backtracks", self.max_backtracks, low=0,
                             low_open=False, integer=True)

  def init(self, problem, x0) -> SpaRSAState:
    residual, grad, objective = problem.first_order(x0)
    dtype = jnp.real(objective).dtype
    t0 = (1.0 / problem.lipschitz).astype(dtype)
    return SpaRSAState(x0, residual, grad, objective, t0, jnp.int32(0),
                       policies.as_policy(self.policy).init(problem, x0, grad),
                       jnp.full((self.memory,), objective))

  def step(self, problem, state: SpaRSAState) -> SpaRSAState:
    policy = policies.as_policy(self.policy)
    t_policy, policy_state = policy.update(problem, state.policy_state, state.x, state.grad)
    t_min = (1.0 / problem.lipschitz).astype(state.stepsize.dtype)
    t_policy = jnp.where(jnp.isfinite(t_policy) & (t_policy > 0), t_policy, t_min)
    reference = jnp.max(state.recent)

    def trial(t):
      p = problem.forward_backward(state.x, state.grad, t.astype(state.x.dtype))
      rp = problem.residual(p)
      value = problem.f_from_residual(rp) + problem.g(p)
      ok = value <= reference - self.sufficient_decrease / (2.0 * t) * sum_squares(p - state.x)
      return p, rp, value, ok | (t <= t_min)

    t, (x, residual, objective, _), i = backtrack(
        trial, lambda t, outputs: outputs[3], t_policy,
        lambda t: jnp.maximum(self.shrink * t, t_min), self.max_backtracks)
    recent = jnp.roll(state.recent, 1).at[0].set(objective)
    return SpaRSAState(x, residual, problem.grad_from_residual(residual), objective, t, i,
                       policy_state, recent)
