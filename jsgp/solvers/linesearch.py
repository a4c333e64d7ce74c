"""Backtracking: one loop for every method's step-size search, and Armijo along a direction.

``backtrack`` is the loop FISTA-b, SGP, SpaRSA and DRS share: try a step, and while the trial
fails its test and the budget ``max_backtracks`` is not spent, move to the next step and try
again. Each method supplies its trial (what one step costs: a prox point and its residual, or
only elementwise work), its acceptance test and its step update (SGP, SpaRSA and DRS multiply
the step by ``shrink``; FISTA-b multiplies its Lipschitz estimate by ``eta``, i.e. shrinks the
step ``1/L`` by ``1/eta``).

``armijo`` is the search along a fixed direction that SGP and DRS use. Because ``A`` is linear,
``A(x + gamma z) - y = (1 - gamma) r + gamma r_full`` with ``r`` the residual at ``x`` and
``r_full`` the residual at the full step ``x + z`` (computed fresh, one ``A``): every trial costs
only elementwise work, and the accepted residual is a convex combination of two residuals rather
than an accumulated update, so rounding never builds up over iterations (with ``gamma = 1``, the
usual case, it is exactly the fresh ``r_full``).

The knobs have one name in every method: ``max_backtracks`` (the most rejected trials per
iteration), ``shrink`` (the factor a rejected step is multiplied by) and
``sufficient_decrease`` (the fraction of the predicted decrease a trial must achieve).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jsgp.operators import sum_squares


class Backtrack(NamedTuple):
  step: jax.Array        # the last step tried: the accepted one, or the last when none was
  outputs: Any           # ``trial(step)``
  reductions: jax.Array  # how many times the step was changed (int32, <= max_backtracks)


def backtrack(trial: Callable[[jax.Array], Any], accept: Callable[[jax.Array, Any], jax.Array],
              step0: jax.Array, next_step: Callable[[jax.Array], jax.Array],
              max_backtracks: int, *, first: Any = None) -> Backtrack:
  """The backtracking loop: ``outputs = trial(step0)``; while ``accept(step, outputs)`` is False
  and fewer than ``max_backtracks`` reductions were made, ``step = next_step(step)`` and
  ``outputs = trial(step)``. ``first``, when given, stands for ``trial(step0)`` (a caller that
  already holds the first trial's values).

  One ``lax.while_loop`` whose carry is ``(step, outputs, reductions)``: jit- and vmap-safe (under
  vmap each instance stops at its own trial; the loop runs until all have), not
  reverse-differentiable (a caller that needs gradients cuts its inputs, as ``armijo`` does, or
  skips the search). The returned ``step`` and ``outputs`` are those of the last trial; whether
  it passed is ``accept(result.step, result.outputs)``.
  """
  outputs = trial(step0) if first is None else first

  def cond(carry):
    step, outputs, i = carry
    return ~accept(step, outputs) & (i < max_backtracks)

  def body(carry):
    step, _, i = carry
    step = next_step(step)
    return step, trial(step), i + 1

  return Backtrack(*jax.lax.while_loop(cond, body, (step0, outputs, jnp.int32(0))))


class LineSearchResult(NamedTuple):
  gamma: jax.Array       # accepted step along z (0 if none was accepted)
  objective: jax.Array   # F(x + gamma z)
  reductions: jax.Array  # number of times gamma was shrunk (int32)
  accepted: jax.Array    # bool


def composite_decrease(problem, x, grad, z) -> jax.Array:
  """``Delta = <grad f(x), z> + g(x + z) - g(x)``: negative for a descent direction.

  Summed in one pass over the canvas, entry by entry
  ``Re(conj(grad_i) z_i) + lam (|x_i + z_i| - |x_i|)`` (``problem.g_change``), so that the
  rounding of two l1 norms, each of the size of ``F``, never cancels into ``Delta``, which
  shrinks to ~``||z||^2 L`` near the minimiser (float32 SGP on partial Fourier at 128 px, k =
  1000: relative error 7e-4 against 7.5e-2 for ``<grad, z> + g(x + z) - g(x)``;
  ``experiments/results/classical_floor/sgp_ablation/delta_accuracy.txt``).
  """
  return jnp.sum(jnp.real(jnp.conj(grad) * z) + problem.g_change(x, z))


def combine(residual, residual_full, gamma):
  """``A(x + gamma z) - y`` from the residuals at ``x`` and at ``x + z`` (exactly
  ``residual_full`` for ``gamma = 1``)."""
  return (1 - gamma) * residual + gamma * residual_full


def armijo(problem, x, residual, objective, z, residual_full, delta, *, sufficient_decrease,
           shrink, max_backtracks) -> LineSearchResult:
  """Largest ``gamma = shrink**i``, ``i <= max_backtracks``, with
  ``F(x + gamma z) <= F(x) + sufficient_decrease gamma Delta`` and a finite objective.

  Accepts only when ``Delta <= 0`` so that the objective can never increase; otherwise (or when
  every trial fails) returns ``gamma = 0`` and ``accepted = False``.

  Differentiation: the accepted ``gamma`` is a power of ``shrink``, a piecewise-constant function
  of the inputs, so its derivative is zero almost everywhere. The inputs are therefore cut from the
  autodiff graph (``stop_gradient``; no value changes), which makes a solver step that uses this
  search reverse-differentiable (the while loop is not): ``x + gamma z`` differentiates through
  ``z`` with ``gamma`` held at its accepted value, the exact derivative wherever the number of
  reductions is locally constant. The returned ``objective`` carries no derivative.
  """
  x, residual, objective, z, residual_full, delta = jax.lax.stop_gradient(
      (x, residual, objective, z, residual_full, delta))

  def trial(gamma):
    return (0.5 * sum_squares(combine(residual, residual_full, gamma))
            + problem.g(x + gamma * z))

  def passes(gamma, value):
    return jnp.isfinite(value) & (value <= objective + sufficient_decrease * gamma * delta)

  one = jnp.ones((), jnp.real(objective).dtype)
  # The full step's value from r_full itself (not a combination with weight 0).
  full = 0.5 * sum_squares(residual_full) + problem.g(x + z)
  gamma, value, i = backtrack(trial, passes, one, lambda gamma: shrink * gamma, max_backtracks,
                              first=full)
  accepted = passes(gamma, value) & (delta <= 0) & jnp.isfinite(delta)
  return LineSearchResult(gamma=jnp.where(accepted, gamma, 0.0),
                          objective=jnp.where(accepted, value, objective),
                          reductions=i, accepted=accepted)
