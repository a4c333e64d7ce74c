"""SGP with a learned stepsize / diagonal through the direction relaxation scheme (Algorithms 3-4).

Per iteration, with ``d = policy(problem, x, grad)`` (a positive stepsize, or a positive
per-coefficient diagonal, already in stepsize units):

  x~ = prox_{d}(x - d grad f(x));   z1 = prox_{1/L}(x~ - grad f(x~)/L) - x
  z2 = prox_{1/L}(x - grad f(x)/L) - x
  z  = gamma1 z1 + (1 - gamma1) z2   if use_policy and gamma1 ||z1|| > alpha (1 - gamma1) ||z2||
  z  = z2, use_policy = False for good, otherwise
  Armijo on gamma2 (from 1, times eta2), each reduction also multiplies gamma1 by eta1.

Guarantee whatever the policy outputs (huge, tiny, zero, negative, NaN): the Armijo search on the
mixed direction is bounded (``max_backtracks``); if it fails, or ``Delta >= 0``, or anything is
non-finite, the policy is switched off and the step is redone along ``z2``, the ``1/L`` proximal
gradient direction, whose full step always satisfies the test (``beta <= 1/2``). So
``F(x_{k+1}) <= F(x_k)`` always, and once the policy is off the method is PGM with Armijo.
Cost of a policy iteration: two gradients (at ``x`` and ``x~``), one ``A z``, one policy call;
the fallback adds one ``A z2`` (a ``lax.cond``: skipped unless needed when not vmapped).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jsgp.operators import sum_squares
from jsgp.solvers.linesearch import armijo, composite_decrease


class DRSState(NamedTuple):
  x: jax.Array
  residual: jax.Array
  grad: jax.Array
  objective: jax.Array
  stepsize: jax.Array     # mean policy step of the last iteration (1/L once the policy is off)
  backtracks: jax.Array   # Armijo reductions of the last iteration (both searches)
  gamma1: jax.Array       # weight of the policy direction
  use_policy: jax.Array   # bool; False for good once the relaxation test or a search fails
  # Delta / |F(x)| of the direction first tried in the last iteration (>= 0: the policy's mixed
  # direction was no descent direction, so the policy was switched off); 0 at the start.
  decrease_ratio: jax.Array


@struct.dataclass
class DRS:
  """Algorithm 4 with the DRS of Algorithm 3. ``policy`` is a pytree callable
  ``(problem, x, grad) -> d`` (e.g. ``jsgp.policies.LearnedPolicy`` holding network parameters
  as leaves), so jit/vmap over the solver trace through it.

  Defaults (the paper gives none): ``alpha = 0.5``; ``eta1 = 0.9`` shrinks the trust in the policy
  slowly; ``eta2 = 0.5`` and ``beta = 1e-4`` are the usual Armijo choices; ``max_backtracks = 12``
  (gamma2 >= 2.4e-4) bounds the wasted work on a bad direction before the fallback.
  """

  policy: Any
  alpha: float = struct.field(pytree_node=False, default=0.5)
  eta1: float = struct.field(pytree_node=False, default=0.9)
  eta2: float = struct.field(pytree_node=False, default=0.5)
  beta: float = struct.field(pytree_node=False, default=1e-4)
  max_backtracks: int = struct.field(pytree_node=False, default=12)
  # lax.cond skips the policy once it is off and the fallback search unless needed; under vmap
  # a cond becomes a select that batches every operand (network weights included), which turns
  # the convolutions into slow grouped ones. The branchless form computes both sides and picks
  # with jnp.where: identical results, and what batched drivers use (``vmap_variant``).
  branchless: bool = struct.field(pytree_node=False, default=False)

  def vmap_variant(self) -> "DRS":
    """The equivalent method for vmapped solves (see ``branchless``)."""
    return self.replace(branchless=True)

  def _cond(self, pred, true_fn, false_fn, *operands):
    if not self.branchless:
      return jax.lax.cond(pred, true_fn, false_fn, *operands)
    on, off = true_fn(*operands), false_fn(*operands)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on, off)

  def init(self, problem, x0) -> DRSState:
    residual, grad, objective = problem.first_order(x0)
    dtype = jnp.real(objective).dtype
    return DRSState(x0, residual, grad, objective, 1.0 / problem.lipschitz, jnp.int32(0),
                    jnp.ones((), dtype), jnp.bool_(True), jnp.zeros((), dtype))

  def policy_direction(self, problem, state: DRSState):
    """``(z1, mean d)``: one policy call and one gradient at ``x~``."""
    d = self.policy(problem, state.x, state.grad)
    if jnp.ndim(d) and jnp.shape(d) != jnp.shape(state.x):
      raise ValueError(f"policy {type(self.policy).__name__} returned shape {jnp.shape(d)}; a "
                       f"policy returns a scalar stepsize or a diagonal of the canvas shape "
                       f"{jnp.shape(state.x)}")
    x_tilde = problem.forward_backward(state.x, state.grad, d)
    grad_tilde = problem.grad(x_tilde)
    z1 = problem.forward_backward(x_tilde, grad_tilde, 1.0 / problem.lipschitz) - state.x
    return z1, jnp.mean(d).astype(state.objective.dtype)

  def step(self, problem, state: DRSState) -> DRSState:
    t_lipschitz = 1.0 / problem.lipschitz
    z2 = problem.forward_backward(state.x, state.grad, t_lipschitz) - state.x
    # Once the policy is off for good its direction is not computed (unless vmapped, where
    # lax.cond becomes a select).
    z1, d_mean = self._cond(state.use_policy, self.policy_direction,
                            lambda *_: (z2, t_lipschitz.astype(z2.dtype)), problem, state)
    g1 = state.gamma1
    norm1, norm2 = jnp.sqrt(sum_squares(z1)), jnp.sqrt(sum_squares(z2))
    mix = state.use_policy & (g1 * norm1 > self.alpha * (1.0 - g1) * norm2) & jnp.isfinite(norm1)
    z = jnp.where(mix, g1 * z1 + (1.0 - g1) * z2, z2)
    z = jnp.where(jnp.isfinite(z), z, 0.0)  # z is discarded below if mix, and z2 is finite
    search_kw = dict(beta=self.beta, shrink=self.eta2, max_reductions=self.max_backtracks)

    def search(z):
      Az = problem.op.apply(z)
      delta = composite_decrease(problem, state.x, state.grad, z)
      return armijo(problem, state.x, state.residual, state.objective, z, Az, delta,
                    **search_kw), Az, delta

    first, Az, delta = search(z)
    ok = first.accepted  # along z2 when not mixing: then the fallback would only repeat it

    def fallback(_):
      return search(z2)[:2]

    second, Az2 = self._cond(ok, lambda _: (first, Az), fallback, None)
    x = state.x + second.gamma * jnp.where(ok, z, z2)
    residual = state.residual + second.gamma * Az2
    grad = problem.grad_from_residual(residual)
    reductions = first.reductions + jnp.where(ok, 0, second.reductions)
    use_policy = ok & mix
    gamma1 = jnp.where(use_policy, g1 * self.eta1 ** first.reductions.astype(g1.dtype), g1)
    step_used = jnp.where(use_policy, jnp.nan_to_num(d_mean), t_lipschitz)
    decrease_ratio = jnp.nan_to_num(delta / jnp.abs(state.objective), nan=1.0, posinf=1.0)
    return DRSState(x, residual, grad, second.objective, step_used.astype(g1.dtype), reductions,
                    gamma1, use_policy, decrease_ratio.astype(g1.dtype))
