"""DRS: a learned stepsize / diagonal policy, safeguarded, then a hand-off to a classical method.

Two ways to use the policy's step ``d = policy(problem, x, grad)`` (a positive stepsize, or a
positive per-coefficient diagonal, in stepsize units; see ``jsgp.policies``):

``mode="safeguarded"`` (default; in the spirit of Safe-L2O, Heaton et al. 2022):
  x_c = prox_{d}(x - d grad f(x))                        (the learned candidate; a ``d`` with a
                                                          non-finite or non-positive entry fails)
  z2  = prox_{1/L}(x - grad f(x) / L) - x                (the conservative step)
  keep x_c  iff  F(x_c) <= F(x) - L/2 ||z2||^2,  else take x + z2.
  ``F(x + z2) <= F(x) - L/2 ||z2||^2`` is the descent lemma of the 1/L proximal-gradient step
  (``L >= ||A||^2``), so EVERY iteration decreases F at least as much as PGM's guaranteed
  decrease, for any policy output (NaN, Inf, negative, huge: all rejected or clipped). Cost of a
  policy iteration: one policy call, one ``A`` (the candidate's residual), one ``A^T``; a
  rejection adds one ``A``.
``mode="relaxation"``: the paper's Algorithms 3-4 (direction relaxation of
  ``z1 = prox_{1/L}(x~ - grad f(x~)/L) - x``, ``x~ = prox_d(x - d grad)``, with ``z2``; Armijo
  on the mixed direction with ``gamma1`` shrinking; the 1/L direction when the test or the search
  fails). Costs a second gradient (at ``x~``) per policy iteration.

Hand-off: the policy is used while it is accepted (safeguarded: the candidate passed; relaxation:
the relaxation test and the search passed) and for at most ``max_policy_steps`` iterations; then,
for good, the iterations are those of ``handoff`` (default: monotone FISTA (MFISTA) with the
constant step 1/L) started at the current iterate. Convergence: the policy phase is finite
(it ends at the first rejection or after ``max_policy_steps``; without a budget, every accepted
step decreases F at least as much as a PGM step, which is itself a convergent method) and
monotone; the tail is a convergent method started from the current point, so the whole sequence
converges to a minimiser at the tail's rate. With the default tail the objective never increases
(``handoff=PGM()`` is the paper's behaviour, also monotone).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import struct

from jsgp import policies
from jsgp.operators import sum_squares
from jsgp.solvers.fista import FISTA
from jsgp.solvers.linesearch import armijo, combine, composite_decrease

MODES = ("safeguarded", "relaxation")


class DRSState(NamedTuple):
  x: jax.Array
  residual: jax.Array     # A x - y (fresh, or a convex combination of fresh residuals)
  grad: jax.Array
  objective: jax.Array
  stepsize: jax.Array     # mean policy step of the last iteration (1/L when not the policy's)
  backtracks: jax.Array   # line-search reductions / tail backtracks of the last iteration
  gamma1: jax.Array       # relaxation mode: weight of the policy direction
  use_policy: jax.Array   # bool; False for good once the policy phase has ended
  # How much the last policy proposal missed its test, relative to |F(x)| (>= 0: rejected, and
  # the policy phase ended): safeguarded: (F(x_c) - F(x) + L/2 ||z2||^2) / |F(x)|; relaxation:
  # Delta / |F(x)| of the mixed direction. 0 at the start and in the tail.
  decrease_ratio: jax.Array
  policy_steps: jax.Array  # policy iterations taken (int32)
  held: jax.Array          # bool: the tail's last step held x by design (see the driver)
  policy_state: Any        # the policy's state (``()`` for stateless policies)
  tail: Any                # the hand-off method's state (meaningful once use_policy is False)


def warm_start(method, problem, x, residual, grad, objective):
  """``method``'s initial state at ``x``, from quantities already computed when the method
  offers ``warm_start`` (no operator application), else ``method.init(problem, x)``."""
  start = getattr(method, "warm_start", None)
  if start is None:
    return method.init(problem, x)
  return start(problem, x, residual, grad, objective)


@struct.dataclass
class DRS:
  """Learned-step method with a guaranteed safeguard and a classical tail (module docstring).

  ``policy``: a rule pytree (``init``/``update``, ``jsgp.policies``: e.g. ``LearnedPolicy``
  holding network parameters as leaves, so jit/vmap trace through it) or a plain callable
  ``(problem, x, grad) -> d``. ``handoff``: the tail
  method (any ``init``/``step`` method of ``jsgp.solvers``). ``max_policy_steps``: the budget of
  policy iterations (``None``: no budget). The default, 10, is the horizon the greedy networks
  are trained for; without a budget a policy that is always accepted but no better than the 1/L
  step would run at PGM's speed (measured on the Fourier demo: a step network accepted for 400
  iterations never reached a 1e-3 gap, where its 10-step budget plus the tail matches FISTA).

  Relaxation-mode constants (the paper gives none): ``alpha = 0.5``; ``eta1 = 0.9`` shrinks the
  trust in the policy slowly; ``eta2 = 0.5`` and ``beta = 1e-4`` are the usual Armijo choices;
  ``max_backtracks = 12`` bounds the wasted work on a bad direction.
  """

  policy: Any
  mode: str = struct.field(pytree_node=False, default="safeguarded")
  handoff: Any = FISTA(max_backtracks=0, monotone=True)
  max_policy_steps: Optional[int] = struct.field(pytree_node=False, default=10)
  alpha: float = struct.field(pytree_node=False, default=0.5)
  eta1: float = struct.field(pytree_node=False, default=0.9)
  eta2: float = struct.field(pytree_node=False, default=0.5)
  beta: float = struct.field(pytree_node=False, default=1e-4)
  max_backtracks: int = struct.field(pytree_node=False, default=12)
  # lax.cond skips the work of the branch not taken; under vmap a cond becomes a select that
  # batches every operand (network weights included) and does both branches. The branchless form
  # computes both sides and picks with jnp.where: identical results, and what batched drivers
  # use (``vmap_variant``).
  branchless: bool = struct.field(pytree_node=False, default=False)

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"DRS mode must be one of {MODES}, got {self.mode!r}.")
    if self.max_policy_steps is not None and self.max_policy_steps < 0:
      raise ValueError(f"max_policy_steps must be >= 0 or None, got {self.max_policy_steps}.")

  @property
  def rule(self):
    """The policy as a rule (``init``/``update``; plain callables are wrapped)."""
    return policies.as_rule(self.policy)

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
    on = self.max_policy_steps is None or self.max_policy_steps > 0
    return DRSState(x0, residual, grad, objective, 1.0 / problem.lipschitz, jnp.int32(0),
                    jnp.ones((), dtype), jnp.bool_(on), jnp.zeros((), dtype), jnp.int32(0),
                    jnp.bool_(False), self.rule.init(problem, x0, grad),
                    warm_start(self.handoff, problem, x0, residual, grad, objective))

  def step(self, problem, state: DRSState) -> DRSState:
    policy_step = (self._safeguarded_step if self.mode == "safeguarded"
                   else self._relaxation_step)
    return self._cond(state.use_policy, policy_step, self._tail_step, problem, state)

  # -- the tail ----------------------------------------------------------------------------------

  def _tail_step(self, problem, state: DRSState) -> DRSState:
    tail = self.handoff.step(problem, state.tail)
    return state._replace(x=tail.x, objective=tail.objective,
                          stepsize=jnp.asarray(tail.stepsize, state.stepsize.dtype),
                          backtracks=jnp.asarray(tail.backtracks, jnp.int32),
                          decrease_ratio=jnp.zeros_like(state.decrease_ratio),
                          held=jnp.asarray(getattr(tail, "held", False)), tail=tail)

  def _finish(self, problem, state, x, residual, objective, keep_policy, **fields) -> DRSState:
    """The policy iteration's new state; starts the tail where the policy phase ends."""
    grad = problem.grad_from_residual(residual)
    steps = state.policy_steps + 1
    if self.max_policy_steps is not None:
      keep_policy = keep_policy & (steps < self.max_policy_steps)
    tail = self._cond(keep_policy, lambda *_: state.tail,
                      lambda *a: warm_start(self.handoff, *a), problem, x, residual, grad,
                      objective)
    return state._replace(x=x, residual=residual, grad=grad, objective=objective,
                          use_policy=keep_policy, policy_steps=steps, tail=tail, **fields)

  def _policy(self, problem, state: DRSState):
    """``(d, policy_state)`` with the shape checked (a scalar or the canvas shape)."""
    d, policy_state = self.rule.update(problem, state.policy_state, state.x, state.grad)
    if jnp.ndim(d) and jnp.shape(d) != jnp.shape(state.x):
      raise ValueError(f"policy {type(self.policy).__name__} returned shape {jnp.shape(d)}; a "
                       f"policy returns a scalar stepsize or a diagonal of the canvas shape "
                       f"{jnp.shape(state.x)}")
    return d, policy_state

  # -- safeguarded mode --------------------------------------------------------------------------

  def _safeguarded_step(self, problem, state: DRSState) -> DRSState:
    dtype = state.objective.dtype
    t_lipschitz = (1.0 / problem.lipschitz).astype(dtype)
    d, policy_state = self._policy(problem, state)
    usable = jnp.isfinite(d) & (d > 0)
    d_safe = jnp.where(usable, d, t_lipschitz).astype(state.x.dtype)
    candidate = problem.forward_backward(state.x, state.grad, d_safe)
    r_candidate = problem.residual(candidate)
    f_candidate = problem.f_from_residual(r_candidate) + problem.g(candidate)
    z2 = problem.forward_backward(state.x, state.grad, t_lipschitz) - state.x
    bound = state.objective - 0.5 * problem.lipschitz * sum_squares(z2)
    # A policy output with a non-finite or non-positive entry is a failed proposal: rejected
    # (its candidate, computed with those entries at 1/L, only keeps the arithmetic finite).
    accept = (jnp.isfinite(f_candidate) & (f_candidate <= bound) & jnp.all(usable)
              & jnp.all(jnp.isfinite(candidate)))

    def conservative(_):
      x = state.x + z2
      r = problem.residual(x)
      return x, r, problem.f_from_residual(r) + problem.g(x)

    x, residual, objective = self._cond(
        accept, lambda _: (candidate, r_candidate, f_candidate), conservative, None)
    miss = (f_candidate - bound) / jnp.abs(state.objective)
    step_used = jnp.where(accept, jnp.nan_to_num(jnp.mean(d_safe).astype(dtype)), t_lipschitz)
    return self._finish(problem, state, x, residual, objective, accept,
                        stepsize=step_used, backtracks=jnp.int32(0),
                        decrease_ratio=jnp.nan_to_num(miss, nan=1.0, posinf=1.0).astype(dtype),
                        policy_state=policy_state)

  # -- relaxation mode (the paper's Algorithms 3-4) ----------------------------------------------

  def _relaxation_step(self, problem, state: DRSState) -> DRSState:
    dtype = state.objective.dtype
    t_lipschitz = (1.0 / problem.lipschitz).astype(dtype)
    z2 = problem.forward_backward(state.x, state.grad, t_lipschitz) - state.x
    d, policy_state = self._policy(problem, state)
    x_tilde = problem.forward_backward(state.x, state.grad, d)
    grad_tilde = problem.grad(x_tilde)
    z1 = problem.forward_backward(x_tilde, grad_tilde, t_lipschitz) - state.x
    g1 = state.gamma1
    norm1, norm2 = jnp.sqrt(sum_squares(z1)), jnp.sqrt(sum_squares(z2))
    mix = (g1 * norm1 > self.alpha * (1.0 - g1) * norm2) & jnp.isfinite(norm1)
    z = jnp.where(mix, g1 * z1 + (1.0 - g1) * z2, z2)
    z = jnp.where(jnp.isfinite(z), z, 0.0)  # z is discarded below if mix, and z2 is finite
    search_kw = dict(beta=self.beta, shrink=self.eta2, max_reductions=self.max_backtracks)

    def search(z):
      residual_full = problem.residual(state.x + z)
      delta = composite_decrease(problem, state.x, state.grad, z)
      return armijo(problem, state.x, state.residual, state.objective, z, residual_full, delta,
                    **search_kw), residual_full, delta

    first, r_full, delta = search(z)
    ok = first.accepted  # along z2 when not mixing: then the fallback would only repeat it
    second, r_full = self._cond(ok, lambda _: (first, r_full), lambda _: search(z2)[:2], None)
    direction = jnp.where(ok, z, z2)
    x = state.x + second.gamma * direction
    residual = combine(state.residual, r_full, second.gamma)
    keep = ok & mix
    gamma1 = jnp.where(keep, g1 * self.eta1 ** first.reductions.astype(dtype), g1)
    step_used = jnp.where(keep, jnp.nan_to_num(jnp.mean(d).astype(dtype)), t_lipschitz)
    ratio = jnp.nan_to_num(delta / jnp.abs(state.objective), nan=1.0, posinf=1.0)
    return self._finish(problem, state, x, residual, second.objective, keep,
                        stepsize=step_used,
                        backtracks=first.reductions + jnp.where(ok, 0, second.reductions),
                        gamma1=gamma1, decrease_ratio=ratio.astype(dtype),
                        policy_state=policy_state)
