"""Armijo backtracking along a fixed direction, free of operator applications.

Because ``A`` is linear, ``A(x + gamma z) - y = (1 - gamma) r + gamma r_full`` with ``r`` the
residual at ``x`` and ``r_full`` the residual at the full step ``x + z`` (computed fresh, one
``A``): every trial costs only elementwise work, and the accepted residual is a convex
combination of two residuals rather than an accumulated update, so rounding never builds up over
iterations (with ``gamma = 1``, the usual case, it is exactly the fresh ``r_full``).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jsgp.operators import sum_squares, vdot_real


class LineSearchResult(NamedTuple):
  gamma: jax.Array       # accepted step along z (0 if none was accepted)
  objective: jax.Array   # F(x + gamma z)
  reductions: jax.Array  # number of times gamma was shrunk (int32)
  accepted: jax.Array    # bool


def composite_decrease(problem, x, grad, z) -> jax.Array:
  """``Delta = <grad f(x), z> + g(x + z) - g(x)``: negative for a descent direction."""
  return vdot_real(grad, z) + problem.g(x + z) - problem.g(x)


def combine(residual, residual_full, gamma):
  """``A(x + gamma z) - y`` from the residuals at ``x`` and at ``x + z`` (exactly
  ``residual_full`` for ``gamma = 1``)."""
  return (1 - gamma) * residual + gamma * residual_full


def armijo(problem, x, residual, objective, z, residual_full, delta, *, beta, shrink,
           max_reductions) -> LineSearchResult:
  """Largest ``gamma = shrink**i``, ``i < max_reductions``, with
  ``F(x + gamma z) <= F(x) + beta gamma Delta`` and a finite objective.

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

  def fails(gamma, value):
    return ~(jnp.isfinite(value) & (value <= objective + beta * gamma * delta))

  def cond(carry):
    gamma, value, i = carry
    return fails(gamma, value) & (i < max_reductions)

  def body(carry):
    gamma, _, i = carry
    gamma = shrink * gamma
    return gamma, trial(gamma), i + 1

  one = jnp.ones((), jnp.real(objective).dtype)
  # The full step's value from r_full itself (not a combination with weight 0) and the same
  # g(x + z) as composite_decrease forms, which XLA then computes once.
  full = 0.5 * sum_squares(residual_full) + problem.g(x + z)
  gamma, value, i = jax.lax.while_loop(cond, body, (one, full, jnp.int32(0)))
  accepted = ~fails(gamma, value) & (delta <= 0) & jnp.isfinite(delta)
  return LineSearchResult(gamma=jnp.where(accepted, gamma, 0.0),
                          objective=jnp.where(accepted, value, objective),
                          reductions=i, accepted=accepted)
