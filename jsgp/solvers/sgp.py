"""Scaled gradient projection (Algorithm 1) with Armijo backtracking and a stepsize policy.

Bonettini, Zanella, Zanni (2009) for the method and the ABB_min steps; the composite
sufficient-decrease test of Bonettini, Loris, Porta, Prato (2016) for the l1 term.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jsgp import policies, struct, validation
from jsgp.solvers.linesearch import armijo, combine, composite_decrease


class SGPState(NamedTuple):
  x: jax.Array
  residual: jax.Array      # A x - y (a convex combination of fresh residuals: no drift)
  grad: jax.Array          # A^T (A x - y)
  objective: jax.Array
  stepsize: jax.Array      # mean of the step d used to reach x (1/L before any step)
  backtracks: jax.Array    # Armijo reductions of that step
  policy_state: Any        # the stepsize policy's state
  # For a policy with ``update_from_step`` (Barzilai-Borwein): x_k - x_{k-1} and
  # grad_k - grad_{k-1}, formed fresh each step (zeros at the start); None otherwise.
  step_change: Any = None
  grad_change: Any = None


@struct.dataclass
class SGP:
  """SGP: ``z = prox_{d}(x - d grad) - x`` with ``d`` from ``policy`` (a scalar step or a
  positive diagonal, ``jsgp.policies``), Armijo on ``gamma``, ``x+ = x + gamma z``. Monotone for
  any policy.

  Attributes:
    policy: a stepsize policy (``init``/``update``, ``jsgp.policies``): ``ConstantPolicy()``
      (``1/L``), ``BarzilaiBorwein("bb1" | "bb2" | "abb_min")`` (default ABB_min, the paper's),
      or ``Scaled(step, scaling)`` for a diagonal metric. A non-finite step is replaced by ``1/L``.
    sufficient_decrease, shrink, max_backtracks: the Armijo search on ``gamma``
      (``jsgp.solvers.linesearch.armijo``): the fraction of the predicted decrease a trial must
      achieve, the factor ``gamma`` shrinks by per rejected trial, and the most rejections per
      iteration (after which the step is not taken: ``gamma = 0``).
  Cost: one ``A`` (the residual at ``x + z``) and one ``A^T`` (new gradient) per iteration;
  line-search trials are elementwise.
  """

  policy: Any = policies.BarzilaiBorwein()
  sufficient_decrease: float = struct.field(pytree_node=False, default=1e-4)
  shrink: float = struct.field(pytree_node=False, default=0.4)
  max_backtracks: int = struct.field(pytree_node=False, default=40)

  def __post_init__(self):
    validation.check_setting("SGP", "sufficient_decrease", self.sufficient_decrease, low=0,
                             high=1)
    validation.check_setting("SGP", "shrink", self.shrink, low=0, high=1)
    validation.check_setting("SGP", "max_backtracks", self.max_backtracks, low=0, low_open=False,
                             integer=True)

  def init(self, problem, x0) -> SGPState:
    residual, grad, objective = problem.first_order(x0)
    t0 = (1.0 / problem.lipschitz).astype(jnp.real(objective).dtype)
    policy = policies.as_policy(self.policy)
    start, changes = ((policy.init_from_step, (jnp.zeros_like(x0), jnp.zeros_like(grad)))
                      if self._from_step else (policy.init, (None, None)))
    return SGPState(x0, residual, grad, objective, t0, jnp.int32(0),
                    start(problem, x0, grad), *changes)

  @property
  def _from_step(self) -> bool:
    """The policy takes step differences (``update_from_step``): no canvases in its state."""
    return hasattr(policies.as_policy(self.policy), "update_from_step")

  def step(self, problem, state: SGPState) -> SGPState:
    policy = policies.as_policy(self.policy)
    if self._from_step:
      d, policy_state = policy.update_from_step(problem, state.policy_state, state.step_change,
                                                state.grad_change)
    else:
      d, policy_state = policy.update(problem, state.policy_state, state.x, state.grad)
    t0 = (1.0 / problem.lipschitz).astype(state.stepsize.dtype)
    d = jnp.where(jnp.isfinite(d) & (d > 0), d, t0).astype(state.x.dtype)
    z = problem.forward_backward(state.x, state.grad, d) - state.x
    residual_full = problem.residual(state.x + z)
    delta = composite_decrease(problem, state.x, state.grad, z)
    search = armijo(problem, state.x, state.residual, state.objective, z, residual_full, delta,
                    sufficient_decrease=self.sufficient_decrease, shrink=self.shrink,
                    max_backtracks=self.max_backtracks)
    x = state.x + search.gamma * z
    residual = combine(state.residual, residual_full, search.gamma)
    grad = problem.grad_from_residual(residual)
    changes = ((search.gamma * z).astype(x.dtype), grad - state.grad) if self._from_step else (
        None, None)
    return SGPState(x, residual, grad, search.objective, jnp.mean(d).astype(t0.dtype),
                    search.reductions, policy_state, *changes)
