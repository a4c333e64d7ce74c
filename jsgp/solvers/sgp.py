"""Scaled gradient projection (Algorithm 1) with Armijo backtracking and BB stepsizes.

Bonettini, Zanella, Zanni (2009) for the stepsize alternation (ABB_min); the composite
sufficient-decrease test of Bonettini, Loris, Porta, Prato (2016) for the l1 term.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import struct

from jsgp.operators import vdot_real
from jsgp.solvers.linesearch import armijo, composite_decrease


class SGPState(NamedTuple):
  x: jax.Array
  residual: jax.Array      # A x - y
  grad: jax.Array          # A^T (A x - y)
  objective: jax.Array
  stepsize: jax.Array      # t_k used for the step that produced x (t_0 = 1/L before any step)
  backtracks: jax.Array    # Armijo reductions of that step
  next_stepsize: jax.Array  # t_{k+1}, chosen by the stepsize rule
  bb2_memory: jax.Array    # (memory,) last BB2 values (ABB_min), initialised to t_max
  tau: jax.Array           # ABB switching threshold
  iteration: jax.Array     # k (int32)


@struct.dataclass
class SGP:
  """SGP: ``z = prox_{t D}(x - t D grad) - x``, Armijo on ``gamma``, ``x+ = x + gamma z``.

  Attributes:
    stepsize_rule: ``"constant"`` (``t = 1/L``) or ``"abb"`` (ABB_min alternation of BB1/BB2,
      bounded in ``[t_min_factor / L, t_max_factor / L]``).
    scaling: optional ``(problem, state) -> d`` (canvas-shaped, positive); clipped each iteration
      to ``[1/delta_k, delta_k]`` with ``delta_k^2 = 1 + scaling_c / (k + 1)^2`` so that
      ``D_k -> I`` as the convergence theory requires. ``None`` is the identity.
    beta, theta: Armijo parameter and backtracking factor.
  Cost: one ``A`` (``A z``) and one ``A^T`` (new gradient) per iteration; line-search trials are
  elementwise.
  """

  stepsize_rule: str = struct.field(pytree_node=False, default="abb")
  scaling: Optional[Callable] = struct.field(pytree_node=False, default=None)
  scaling_c: float = struct.field(pytree_node=False, default=1e10)
  beta: float = struct.field(pytree_node=False, default=1e-4)
  theta: float = struct.field(pytree_node=False, default=0.4)
  t_min_factor: float = struct.field(pytree_node=False, default=1e-5)
  t_max_factor: float = struct.field(pytree_node=False, default=1e5)
  tau0: float = struct.field(pytree_node=False, default=0.5)
  memory: int = struct.field(pytree_node=False, default=3)
  max_backtracks: int = struct.field(pytree_node=False, default=40)

  def __post_init__(self):
    if self.stepsize_rule not in ("constant", "abb"):
      raise ValueError(f"stepsize_rule must be 'constant' or 'abb', got {self.stepsize_rule!r}.")

  def init(self, problem, x0) -> SGPState:
    residual, grad, objective = problem.first_order(x0)
    t0 = 1.0 / problem.lipschitz
    t_max = self.t_max_factor * t0
    return SGPState(x0, residual, grad, objective, t0, jnp.int32(0), t0,
                    jnp.full((self.memory,), t_max, t0.dtype), jnp.asarray(self.tau0, t0.dtype),
                    jnp.int32(0))

  def _scaling(self, problem, state):
    if self.scaling is None:
      return jnp.ones((), state.objective.dtype)
    k = state.iteration.astype(state.objective.dtype)
    delta = jnp.sqrt(1.0 + self.scaling_c / (k + 1.0) ** 2)
    return jnp.clip(self.scaling(problem, state), 1.0 / delta, delta)

  def step(self, problem, state: SGPState) -> SGPState:
    t = state.next_stepsize
    d = self._scaling(problem, state)
    z = problem.forward_backward(state.x, state.grad, t * d) - state.x
    Az = problem.op.apply(z)
    delta = composite_decrease(problem, state.x, state.grad, z)
    search = armijo(problem, state.x, state.residual, state.objective, z, Az, delta,
                    beta=self.beta, shrink=self.theta, max_reductions=self.max_backtracks)
    x = state.x + search.gamma * z
    residual = state.residual + search.gamma * Az
    grad = problem.grad_from_residual(residual)
    next_t, memory, tau = self._next_stepsize(problem, state, x - state.x, grad - state.grad, d)
    return SGPState(x, residual, grad, search.objective, t, search.reductions, next_t, memory,
                    tau, state.iteration + 1)

  def _next_stepsize(self, problem, state, s, w, d):
    t0 = 1.0 / problem.lipschitz
    if self.stepsize_rule == "constant":
      return t0, state.bb2_memory, state.tau
    t_min, t_max = self.t_min_factor * t0, self.t_max_factor * t0
    s_over_d = s / d
    den1 = vdot_real(s_over_d, w)
    bb1 = jnp.where(den1 > 0, vdot_real(s_over_d, s_over_d) / jnp.where(den1 > 0, den1, 1), t_max)
    ds, dw = d * s, d * w
    num2 = vdot_real(ds, w)
    bb2 = jnp.where(num2 > 0, num2 / jnp.maximum(vdot_real(dw, dw), jnp.finfo(t0.dtype).tiny),
                    t_max)
    bb1 = jnp.clip(jnp.nan_to_num(bb1, nan=t_max), t_min, t_max)
    bb2 = jnp.clip(jnp.nan_to_num(bb2, nan=t_max), t_min, t_max)
    memory = jnp.roll(state.bb2_memory, 1).at[0].set(bb2)
    use_bb2 = bb2 / bb1 < state.tau
    next_t = jnp.where(use_bb2, jnp.min(memory), bb1)
    tau = jnp.where(use_bb2, 0.9 * state.tau, 1.1 * state.tau)
    # No movement (a stationary point or a rejected step): keep the current stepsize.
    moved = vdot_real(s, s) > 0
    return (jnp.where(moved, next_t, state.next_stepsize), jnp.where(moved, memory, state.bb2_memory),
            jnp.where(moved, tau, state.tau))
