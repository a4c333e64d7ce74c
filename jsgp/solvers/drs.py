"""DRS: a learned stepsize / diagonal policy for a few iterations, then a classical method.

The policy's step ``d = policy(problem, x, grad)`` is a positive stepsize or a positive
per-coefficient diagonal, in stepsize units (``jsgp.policies``). Two ways to use it:

``mode="safeguarded"`` (default):
  x_c = prox_d(x - d grad f(x))                         the learned candidate
  z2  = prox_{1/L}(x - grad f(x) / L) - x               the conservative (PGM) step
  x_c is shortened to ``x + c (x_c - x)``, ``c = min(1, trust_radius ||z2|| / ||x_c - x||)``
  keep x_c  iff  ``d`` is finite and positive everywhere and F(x_c) <= F(x),  else take x + z2.
  A trained network's steps move the iterate toward the minimiser with a transient rise of the
  l1 term that PGM's own decrease bound would reject; this test accepts any step that does not
  increase F. Cost of a policy iteration: the policy, one ``A^T`` (the gradient at ``x``) and one
  ``A`` (the candidate's residual); a rejection adds one ``A``.
``mode="relaxation"``: the paper's Algorithms 3-4 (direction relaxation of
  ``z1 = prox_{1/L}(x~ - grad f(x~)/L) - x``, ``x~ = prox_d(x - d grad)``, with ``z2``; Armijo on
  the mixed direction with ``gamma1`` shrinking; the 1/L direction when the test or the search
  fails, or when ``d`` has a non-finite or non-positive entry), with ``z1`` shortened to at most
  ``trust_radius ||z2||``. Costs a second gradient (at ``x~``) per policy iteration.
``mode="accelerated"``: the policy's step inside the hand-off FISTA's iteration, keeping its
  momentum (the hand-off must be a constant-step ``FISTA``, monotone or not):
  z   = FISTA's extrapolated point of the live hand-off state
  x_c = prox_d(z - d grad f(z)), shortened to at most ``trust_radius`` times the FISTA step
        ``prox_{1/L}(z - grad f(z)/L) - z``
  x_c is FISTA's proposal iff ``d`` is finite and positive everywhere and ``F(x_c) <= F(x_k)``;
  otherwise FISTA's own proposal is (one more ``A``) and the policy phase ends. FISTA's update
  (MFISTA's choice of the better point, the momentum) follows either way, so the tail continues
  the same sequence instead of restarting it. Same cost as the safeguarded mode.

Hand-off: the policy is used while it is accepted and for at most ``max_policy_steps``
iterations; then, for good, the iterations are those of ``handoff`` (default: monotone FISTA with
the constant step 1/L) started at the current iterate, without an operator application (its
``restart`` hook, ``jsgp.solvers.protocol``: ``DouglasRachford`` keeps the solves its state made at
``init`` and forms one synthesis). ``handoff=DouglasRachford()`` (safeguarded or relaxation mode;
what ``jsgp.pretrained.solver`` runs on inpainting): a few policy steps give Douglas-Rachford a
start from which it needs 1.15-1.5x fewer iterations to a 1e-3 gap on held-out inpainting images
(none fewer on partial Fourier, where the shipped solver is Douglas-Rachford alone;
BUILD_NOTES.md, "Handing off to Douglas-Rachford"). ``max_policy_steps=0``: DRS is its hand-off
method.

Convergence, for ANY policy output: the policy phase is finite and monotone (every accepted point
has ``F <= F(x_k)``; the fallback is a PGM step, which decreases F, or in the accelerated mode
MFISTA's step, which never increases it), and the tail is a convergent method started from the
current point (accelerated mode: FISTA continued from a finite state, whose O(1/k^2) bound holds
with that state's energy as the constant; Douglas-Rachford from any start, its objective not
monotone but ``||z_{k+1} - z_k||`` nonincreasing), so the whole sequence converges to a
minimiser at the tail's rate. The damage a policy can do is bounded: PGM's map ``T`` is
nonexpansive with fixed point ``x*``, so ``||z2|| <= 2 ||x - x*||`` and every policy step keeps
``||x_{k+1} - x*|| <= (1 + 2 trust_radius) ||x_k - x*||``; with the objective never rising, the
tail starts from a point whose distance to ``x*`` is at most ``(1 + 2 trust_radius)^H`` times
the start's (``H = max_policy_steps``) — in practice a rejected policy costs one iteration.
"""
from __future__ import annotations

import numbers
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jsgp import policies, struct, validation
from jsgp.operators import sum_squares
from jsgp.solvers.fista import FISTA
from jsgp.solvers.linesearch import armijo, combine, composite_decrease
from jsgp.solvers.protocol import held, restart, warm_start

MODES = ("safeguarded", "relaxation", "accelerated")


class DRSState(NamedTuple):
  x: jax.Array
  residual: jax.Array     # A x - y (fresh, or a convex combination of fresh residuals)
  objective: jax.Array
  stepsize: jax.Array     # mean policy step of the last iteration (1/L when not the policy's)
  backtracks: jax.Array   # line-search reductions / tail backtracks of the last iteration
  gamma1: jax.Array       # relaxation mode: weight of the policy direction
  use_policy: jax.Array   # bool; False for good once the policy phase has ended
  # How much the last policy proposal missed its test, relative to |F(x)| (> 0: rejected, and the
  # policy phase ended): safeguarded: (F(x_c) - F(x)) / |F(x)|; relaxation: Delta / |F(x)| of the
  # mixed direction. 0 in the tail.
  decrease_ratio: jax.Array
  policy_steps: jax.Array  # policy iterations taken (int32)
  accepted: jax.Array      # policy proposals kept so far (int32)
  held: jax.Array          # bool: the tail's last step held x by design (see the driver)
  policy_state: Any        # the policy's state (``()`` for stateless policies)
  tail: Any                # the hand-off method's state (meaningful once use_policy is False)


def _check_budget(value) -> None:
  if value is None:
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
    raise ValueError(f"DRS max_policy_steps must be a non-negative integer or None, got "
                     f"{value!r}.")


@struct.dataclass
class DRS:
  """Learned-step method with a guaranteed safeguard and a classical tail (module docstring).

  Attributes:
    policy: a stepsize policy pytree (``init``/``update``, ``jsgp.policies``: e.g. a learned
      network holding its parameters as leaves, so jit/vmap trace through it) or a plain
      callable ``(problem, x, grad) -> d``.
    mode: ``"safeguarded"`` (default), ``"relaxation"`` (the paper's Algorithms 3-4) or
      ``"accelerated"`` (the policy's step at FISTA's extrapolated point).
    handoff: the tail method (any ``init``/``step`` method of ``jsgp.solvers``).
    max_policy_steps: the budget of policy iterations (a non-negative integer; ``None``: no
      budget). The trained policies reach their best point in a few steps; pass the budget
      they were trained for (``jsgp.pretrained`` policies say theirs). ``0``: DRS is its
      hand-off method, started by its own ``init`` and stepped without a branch.
    trust_radius: a policy step is at most this many times as long as the PGM step at the same
      point (it is shortened, not rejected).
    alpha, eta1: relaxation mode (the paper's names; it gives no values): ``alpha = 0.5``;
      ``eta1 = 0.9`` shrinks the trust ``gamma1`` in the policy slowly.
    shrink, sufficient_decrease, max_backtracks: relaxation mode's Armijo search
      (``jsgp.solvers.linesearch.armijo``, the same knobs as ``SGP``'s; the paper's ``eta2``
      and ``beta``): ``shrink = 0.5`` and ``sufficient_decrease = 1e-4`` are the usual Armijo
      choices; ``max_backtracks = 12`` bounds the work on a bad direction.
    branchless: compute both sides of each decision and pick with ``jnp.where`` instead of
      ``lax.cond`` (identical results). Under ``vmap`` a cond becomes a select that batches every
      operand (network weights included) and does both branches anyway; batched drivers use
      this form (``vmap_variant``).
  """

  policy: Any
  mode: str = struct.field(pytree_node=False, default="safeguarded")
  handoff: Any = FISTA(max_backtracks=0, monotone=True)
  max_policy_steps: Optional[int] = struct.field(pytree_node=False, default=5)
  trust_radius: float = struct.field(pytree_node=False, default=10.0)
  alpha: float = struct.field(pytree_node=False, default=0.5)
  eta1: float = struct.field(pytree_node=False, default=0.9)
  shrink: float = struct.field(pytree_node=False, default=0.5)
  sufficient_decrease: float = struct.field(pytree_node=False, default=1e-4)
  max_backtracks: int = struct.field(pytree_node=False, default=12)
  branchless: bool = struct.field(pytree_node=False, default=False)

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"DRS mode must be one of {MODES}, got {self.mode!r}.")
    _check_budget(self.max_policy_steps)
    if self.mode == "accelerated" and not (isinstance(self.handoff, FISTA)
                                           and self.handoff.max_backtracks == 0):
      raise ValueError("DRS mode='accelerated' proposes the policy's step inside the hand-off's "
                       "iteration: handoff must be a constant-step FISTA (FISTA(max_backtracks=0, "
                       f"...)), got {self.handoff!r}.")
    validation.check_setting("DRS", "trust_radius", self.trust_radius, low=0)
    for name in ("alpha", "eta1", "shrink", "sufficient_decrease"):
      validation.check_setting("DRS", name, getattr(self, name), low=0, high=1)
    validation.check_setting("DRS", "max_backtracks", self.max_backtracks, low=0,
                             low_open=False, integer=True)
    policies.as_policy(self.policy)  # a clear error for something that is no policy

  @property
  def _protocol_policy(self):
    """The policy with ``init``/``update`` (plain callables are wrapped)."""
    return policies.as_policy(self.policy)

  def vmap_variant(self) -> "DRS":
    """The equivalent method for vmapped solves (see ``branchless``)."""
    return self.replace(branchless=True)

  def _cond(self, pred, true_fn, false_fn, *operands):
    if not self.branchless:
      return jax.lax.cond(pred, true_fn, false_fn, *operands)
    on, off = true_fn(*operands), false_fn(*operands)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on, off)

  def init(self, problem, x0) -> DRSState:
    if self.max_policy_steps == 0:  # no policy step can come: DRS is its hand-off method
      tail = self.handoff.init(problem, x0)
      residual, objective = tail.residual, tail.objective
    else:
      residual = problem.residual(x0)
      objective = problem.f_from_residual(residual) + problem.g(x0)
    dtype = jnp.real(objective).dtype
    on = self.max_policy_steps is None or self.max_policy_steps > 0
    zero = jnp.int32(0)
    # A stateful policy (e.g. Barzilai-Borwein) starts from the gradient at x0; a stateless one
    # needs none, and the A^T is saved (the first policy step forms it).
    policy = self._protocol_policy
    grad = (problem.grad_from_residual(residual) if getattr(policy, "init_uses_grad", True)
            else None)
    return DRSState(x0, residual, objective, (1.0 / problem.lipschitz).astype(dtype), zero,
                    jnp.ones((), dtype), jnp.bool_(on), jnp.zeros((), dtype), zero, zero,
                    jnp.bool_(False), policy.init(problem, x0, grad),
                    tail if self.max_policy_steps == 0 else warm_start(
                        self.handoff, problem, x0, residual, grad, objective))

  def step(self, problem, state: DRSState) -> DRSState:
    if self.max_policy_steps == 0:  # the hand-off's own iteration, without a branch
      return self._tail_step(problem, state)
    policy_step = {"safeguarded": self._safeguarded_step, "relaxation": self._relaxation_step,
                   "accelerated": self._accelerated_step}[self.mode]
    return self._cond(state.use_policy, policy_step, self._tail_step, problem, state)

  # -- the tail ----------------------------------------------------------------------------------

  def _tail_step(self, problem, state: DRSState) -> DRSState:
    tail = self.handoff.step(problem, state.tail)
    return state._replace(x=tail.x, residual=tail.residual, objective=tail.objective,
                          stepsize=jnp.asarray(tail.stepsize, state.stepsize.dtype),
                          backtracks=jnp.asarray(tail.backtracks, jnp.int32),
                          decrease_ratio=jnp.zeros_like(state.decrease_ratio),
                          held=held(tail), tail=tail)

  def _finish(self, problem, state, x, residual, objective, keep_policy, tail=None,
              **fields) -> DRSState:
    """The policy iteration's new state; starts the tail where the policy phase ends (unless
    ``tail`` is given: the accelerated mode's live hand-off state)."""
    steps = state.policy_steps + 1
    if self.max_policy_steps is not None:
      keep_policy = keep_policy & (steps < self.max_policy_steps)
    if tail is None:
      tail = self._cond(keep_policy, lambda *_: state.tail,
                        lambda *a: restart(self.handoff, *a), problem, state.tail, x, residual,
                        None, objective)
      fields["held"] = jnp.bool_(False)
    return state._replace(x=x, residual=residual, objective=objective, use_policy=keep_policy,
                          policy_steps=steps, tail=tail, **fields)

  def _policy(self, problem, state: DRSState, x, grad):
    """``(d, usable, policy_state)``: the policy's step at ``x`` with entries that are not finite
    and positive replaced by ``1/L`` (so the arithmetic stays finite), and whether all of them
    were."""
    d, policy_state = self._protocol_policy.update(problem, state.policy_state, x, grad)
    name = type(self.policy).__name__
    if d is None or not hasattr(d, "shape") and not isinstance(d, numbers.Number):
      raise TypeError(f"policy {name} returned {type(d).__name__}; a policy returns a scalar "
                      f"stepsize or a diagonal of the canvas shape {jnp.shape(state.x)}")
    if jnp.ndim(d) and jnp.shape(d) != jnp.shape(state.x):
      raise ValueError(f"policy {name} returned shape {jnp.shape(d)}; a policy returns a scalar "
                       f"stepsize or a diagonal of the canvas shape {jnp.shape(state.x)}")
    d = jnp.asarray(d)
    if not jnp.issubdtype(d.dtype, jnp.floating):
      raise TypeError(f"policy {name} returned dtype {d.dtype}; expected a real floating array")
    valid = jnp.isfinite(d) & (d > 0)
    t_lipschitz = (1.0 / problem.lipschitz).astype(state.x.dtype)
    return jnp.where(valid, d, t_lipschitz).astype(state.x.dtype), jnp.all(valid), policy_state

  def _shorten(self, step, z2):
    """The factor ``c <= 1`` that makes ``||c step|| <= trust_radius ||z2||``."""
    length, limit = jnp.sqrt(sum_squares(step)), self.trust_radius * jnp.sqrt(sum_squares(z2))
    return jnp.where(length > limit, limit / jnp.maximum(length, jnp.finfo(length.dtype).tiny),
                     1.0).astype(step.dtype)

  # -- the policy's step under the safeguard (safeguarded and accelerated modes) ------------------

  def _guarded_proposal(self, problem, state: DRSState, u, residual, grad):
    """The policy's step from ``u`` (its residual and gradient), shortened to at most
    ``trust_radius`` times the 1/L step ``prox_{1/L}(u - grad/L) - u`` and kept iff it is finite
    and ``F <= F(x_k)``; otherwise the 1/L point (one more ``A``). Returns ``(point, residual,
    objective, kept, fields)``, ``fields`` the policy-iteration entries of the state."""
    dtype = state.objective.dtype
    t_lipschitz = (1.0 / problem.lipschitz).astype(dtype)
    d, usable, policy_state = self._policy(problem, state, u, grad)
    classical = problem.forward_backward(u, grad, t_lipschitz)
    proposal = problem.forward_backward(u, grad, d)
    c = self._shorten(proposal - u, classical - u)
    candidate = u + c * (proposal - u)
    # A(u + c (p - u)) - y = (1 - c) r_u + c r_p: the fresh residual of the proposal, combined.
    r_candidate = combine(residual, problem.residual(proposal), c)
    f_candidate = problem.f_from_residual(r_candidate) + problem.g(candidate)
    accept = (usable & jnp.isfinite(f_candidate) & (f_candidate <= state.objective)
              & jnp.all(jnp.isfinite(candidate)))

    def classical_step(_):
      r = problem.residual(classical)
      return classical, r, problem.f_from_residual(r) + problem.g(classical)

    point, r_point, f_point = self._cond(
        accept, lambda _: (candidate, r_candidate, f_candidate), classical_step, None)
    miss = (f_candidate - state.objective) / jnp.abs(state.objective)
    fields = dict(stepsize=jnp.where(accept, c * jnp.mean(d).astype(dtype), t_lipschitz),
                  backtracks=jnp.int32(0),
                  decrease_ratio=jnp.where(usable, jnp.nan_to_num(
                      miss, nan=1.0, posinf=1.0), 1.0).astype(dtype),
                  accepted=state.accepted + accept.astype(jnp.int32),
                  policy_state=policy_state)
    return point, r_point, f_point, accept, fields

  # -- safeguarded mode --------------------------------------------------------------------------

  def _safeguarded_step(self, problem, state: DRSState) -> DRSState:
    grad = problem.grad_from_residual(state.residual)
    x, residual, objective, accept, fields = self._guarded_proposal(
        problem, state, state.x, state.residual, grad)
    return self._finish(problem, state, x, residual, objective, accept, **fields)

  # -- relaxation mode (the paper's Algorithms 3-4) ----------------------------------------------

  def _relaxation_step(self, problem, state: DRSState) -> DRSState:
    dtype = state.objective.dtype
    t_lipschitz = (1.0 / problem.lipschitz).astype(dtype)
    grad = problem.grad_from_residual(state.residual)
    z2 = problem.forward_backward(state.x, grad, t_lipschitz) - state.x
    d, usable, policy_state = self._policy(problem, state, state.x, grad)
    x_tilde = problem.forward_backward(state.x, grad, d)
    grad_tilde = problem.grad(x_tilde)
    z1 = problem.forward_backward(x_tilde, grad_tilde, t_lipschitz) - state.x
    z1 = self._shorten(z1, z2) * z1
    g1 = state.gamma1
    norm1, norm2 = jnp.sqrt(sum_squares(z1)), jnp.sqrt(sum_squares(z2))
    mix = (g1 * norm1 > self.alpha * (1.0 - g1) * norm2) & jnp.isfinite(norm1) & usable
    z = jnp.where(mix, g1 * z1 + (1.0 - g1) * z2, z2)
    z = jnp.where(jnp.isfinite(z), z, 0.0)  # z is discarded below if mix, and z2 is finite
    search_kw = dict(sufficient_decrease=self.sufficient_decrease, shrink=self.shrink,
                     max_backtracks=self.max_backtracks)

    def search(z):
      residual_full = problem.residual(state.x + z)
      delta = composite_decrease(problem, state.x, grad, z)
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
    step_used = jnp.where(keep, jnp.mean(d).astype(dtype), t_lipschitz)
    ratio = jnp.nan_to_num(delta / jnp.abs(state.objective), nan=1.0, posinf=1.0)
    return self._finish(problem, state, x, residual, second.objective, keep,
                        stepsize=step_used,
                        backtracks=first.reductions + jnp.where(ok, 0, second.reductions),
                        gamma1=gamma1, decrease_ratio=jnp.where(usable, ratio, 1.0).astype(dtype),
                        accepted=state.accepted + keep.astype(jnp.int32),
                        policy_state=policy_state)

  # -- accelerated mode: the policy's step inside the hand-off FISTA -----------------------------

  def _accelerated_step(self, problem, state: DRSState) -> DRSState:
    fista, tail = self.handoff, state.tail
    z, rz, s_next = fista.extrapolate(tail)
    p, rp, objective, accept, fields = self._guarded_proposal(
        problem, state, z, rz, problem.grad_from_residual(rz))
    tail = fista.advance(tail, z, s_next, p, rp, objective, tail.lipschitz, jnp.int32(0))
    return self._finish(problem, state, tail.x, tail.residual, tail.objective, accept,
                        tail=tail, held=held(tail), **fields)
