"""FISTA (Beck-Teboulle) with backtracking ("FISTA-b", the paper's baseline) and the
O'Donoghue-Candes adaptive restart."""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jsgp import struct, validation
from jsgp.operators import sum_squares, vdot_real
from jsgp.solvers.linesearch import backtrack

RESTARTS = (None, "gradient", "function")


class FISTAState(NamedTuple):
  """FISTA's state. The last step is carried as differences (``x_k - x_{k-1}`` and the matching
  residual difference, each formed from two fresh values) rather than as ``x_{k-1}``: a loop
  carry that only rotates buffers (``prev <- x``) costs XLA a full copy of each per iteration.
  Two copies remain (``x_k`` and its residual, which the differences read after the new values
  are written); carrying ``x_k + (p - x_k)`` instead of ``p`` removes them but measured no faster
  (BUILD_NOTES.md, issue 26), so the state keeps the exact prox point and fresh residual."""

  x: jax.Array               # x_k
  residual: jax.Array        # A x_k - y, computed from x_k (never accumulated)
  residual_step: jax.Array   # (A x_k - y) - (A x_{k-1} - y), a difference of fresh residuals
  x_step: jax.Array          # x_k - x_{k-1}
  momentum: jax.Array        # s_k
  lipschitz: jax.Array       # current backtracked L_k (stepsize = 1/L_k)
  objective: jax.Array       # F(x_k), from the fresh residual: the true objective
  stepsize: jax.Array        # 1/L_k
  backtracks: jax.Array      # trials rejected in the last step
  restarts: jax.Array        # momentum restarts so far (int32)
  held: jax.Array            # bool: monotone and the last proposal was rejected (x unchanged)
  proposal: Optional[jax.Array] = None           # monotone: u_k, the last prox point
  proposal_residual: Optional[jax.Array] = None  # monotone: A u_k - y


@struct.dataclass
class FISTA:
  """FISTA-b. ``L`` starts at ``lipschitz0_factor * problem.lipschitz`` and grows by ``eta``
  until the quadratic upper bound holds (at most ``max_backtracks`` times per iteration, the
  shared loop ``jsgp.solvers.linesearch.backtrack``); it never decreases and never exceeds
  ``problem.lipschitz`` (an upper estimate of ``||A||^2``, where the bound holds by definition),
  so that rounding in the test cannot inflate it in float32. ``eta`` keeps Beck and Teboulle's
  name: it multiplies ``L``, so the step ``1/L`` shrinks by ``1/eta`` per rejected trial (the
  ``shrink`` of the other methods is a factor < 1 on the step itself).

  Per iteration: one ``A^T`` (the gradient at the extrapolated point ``z``, whose residual is the
  same linear combination of the two last residuals) and one ``A`` per trial point ``p`` (its
  fresh residual ``A p - y``, from which the test ``||A (p - z)||^2 <= L ||p - z||^2``, the new
  residual and the true ``F(p)`` follow). Residuals are never updated incrementally, so nothing
  drifts in float32 however long the run. ``max_backtracks = 0`` is FISTA with the constant step
  ``1/L`` (no test; differentiable).

  ``restart``: ``"gradient"`` resets the momentum when ``<z - p, p - x_k> > 0`` (O'Donoghue and
  Candes 2015), ``"function"`` when ``F(p) > F(x_k)``; either costs one reduction.
  ``monotone``: MFISTA (Beck and Teboulle 2009): ``x_{k+1}`` is the better of ``p`` and ``x_k``
  (``F(p)`` is known, so no extra operator), with the extrapolation
  ``z = x_k + (s_k / s_{k+1}) (p_k - x_k) + ((s_k - 1) / s_{k+1}) (x_k - x_{k-1})``; the objective
  never increases and the O(1/k^2) rate is kept. Carries the last proposal and its residual; a
  rejected proposal sets ``held`` (the driver's stopping rule ignores such a step).
  """

  eta: float = struct.field(pytree_node=False, default=2.0)
  lipschitz0_factor: float = struct.field(pytree_node=False, default=1.0)
  max_backtracks: int = struct.field(pytree_node=False, default=40)
  restart: Optional[str] = struct.field(pytree_node=False, default=None)
  monotone: bool = struct.field(pytree_node=False, default=False)

  def __post_init__(self):
    if self.restart not in RESTARTS:
      raise ValueError(f"FISTA restart must be one of {RESTARTS}, got {self.restart!r}.")
    validation.check_setting("FISTA", "eta", self.eta, low=1)
    validation.check_setting("FISTA", "lipschitz0_factor", self.lipschitz0_factor, low=0)
    validation.check_setting("FISTA", "max_backtracks", self.max_backtracks, low=0,
                             low_open=False, integer=True)
    if not self.max_backtracks and self.lipschitz0_factor < 1:
      raise ValueError("FISTA lipschitz0_factor < 1 needs backtracking (max_backtracks > 0): "
                       "a constant step above 1/L may diverge.")

  def init(self, problem, x0) -> FISTAState:
    residual = problem.residual(x0)
    objective = problem.f_from_residual(residual) + problem.g(x0)
    return self.warm_start(problem, x0, residual, None, objective)

  def warm_start(self, problem, x0, residual, grad, objective) -> FISTAState:
    """The initial state at ``x0`` from its residual and objective (no operator application)."""
    del grad
    dtype = jnp.real(objective).dtype
    lipschitz = jnp.asarray(self.lipschitz0_factor * problem.lipschitz, dtype)
    proposal = (x0, residual) if self.monotone else (None, None)
    return FISTAState(x0, residual, jnp.zeros_like(residual), jnp.zeros_like(x0),
                      jnp.ones((), dtype), lipschitz, objective,
                      1.0 / lipschitz, jnp.int32(0), jnp.int32(0), jnp.bool_(False), *proposal)

  def extrapolate(self, state: FISTAState):
    """``(z, A z - y, s_{k+1})``: the extrapolated point, its residual (the same combination of
    fresh residuals, no operator) and the next momentum parameter."""
    s = state.momentum
    s_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * s * s))
    c = (s - 1.0) / s_next
    z = state.x + c * state.x_step
    rz = state.residual + c * state.residual_step
    if self.monotone:  # MFISTA's extra term; zero when the last proposal was accepted
      z = z + (s / s_next) * (state.proposal - state.x)
      rz = rz + (s / s_next) * (state.proposal_residual - state.residual)
    return z, rz, s_next

  def advance(self, state: FISTAState, z, s_next, p, rp, objective, lipschitz,
              backtracks) -> FISTAState:
    """The state after the proposal ``p`` (residual ``rp``, ``F(p) = objective``) made from
    ``z``: the restart test, and MFISTA's choice of the better of ``p`` and ``x_k``."""
    if self.restart == "gradient":
      reset = vdot_real(z - p, p - state.x) > 0
    elif self.restart == "function":
      reset = objective > state.objective
    else:
      reset = jnp.bool_(False)
    s_next = jnp.where(reset, jnp.ones_like(s_next), s_next)
    restarts = state.restarts + reset.astype(jnp.int32)
    if not self.monotone:
      return FISTAState(p, rp, rp - state.residual, p - state.x, s_next, lipschitz, objective,
                        1.0 / lipschitz, backtracks, restarts, jnp.bool_(False))
    better = objective <= state.objective
    keep = lambda new, old: jnp.where(better, new, old)
    step = lambda new, old: jnp.where(better, new - old, jnp.zeros_like(old))
    return FISTAState(keep(p, state.x), keep(rp, state.residual), step(rp, state.residual),
                      step(p, state.x), s_next, lipschitz, keep(objective, state.objective),
                      1.0 / lipschitz, backtracks, restarts, ~better, p, rp)

  def step(self, problem, state: FISTAState) -> FISTAState:
    z, rz, s_next = self.extrapolate(state)
    gz = problem.grad_from_residual(rz)
    lipschitz_max = jnp.asarray(problem.lipschitz, state.lipschitz.dtype)

    def trial(lipschitz):
      p = problem.forward_backward(z, gz, 1.0 / lipschitz)
      rp = problem.residual(p)
      # For quadratic f the upper bound f(p) <= f(z) + <p - z, grad> + L/2 ||p - z||^2 is
      # exactly ||A (p - z)||^2 <= L ||p - z||^2; it holds by definition at L = lipschitz_max.
      d = p - z
      ok = (sum_squares(rp - rz) <= lipschitz * sum_squares(d)) | (lipschitz >= lipschitz_max)
      return p, rp, ok

    def grow(lipschitz):
      return jnp.minimum(self.eta * lipschitz, jnp.maximum(lipschitz_max, lipschitz))

    if self.max_backtracks:
      lipschitz, (p, rp, _), i = backtrack(trial, lambda lipschitz, outputs: outputs[2],
                                           state.lipschitz, grow, self.max_backtracks)
    else:  # the constant step: one trial, no loop (reverse-differentiable); XLA drops its test
      lipschitz, i = state.lipschitz, jnp.int32(0)
      p, rp, _ = trial(lipschitz)
    objective = problem.f_from_residual(rp) + problem.g(p)
    return self.advance(state, z, s_next, p, rp, objective, lipschitz, i)
