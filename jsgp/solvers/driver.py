"""One driver for every method: ``jax.lax.while_loop`` until ``max_iter`` or a tolerance.

A method is a pytree with two pure functions (the optax/optimistix shape):
  ``init(problem, x0) -> state`` and ``step(problem, state) -> state``.
Every method's state is a NamedTuple with at least the fields
  ``x`` (the iterate), ``objective`` (F(x)), ``stepsize`` (the step used to reach ``x``) and
  ``backtracks`` (line-search reductions spent on that step),
which the driver records in a fixed-size history so that whole runs stay jit-able.

Stopping rule: relative objective change ``|F_k - F_{k+1}| <= tol * |F_k|`` (``tol = 0`` runs
exactly ``max_iter`` steps unless the objective stops changing altogether, e.g. ``y = 0``).
Under ``vmap`` each instance stops on its own: its state is frozen once its test fires.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jsgp import validation
from jsgp.metrics import nmse_db


class History(NamedTuple):
  """Per-iteration records, index k = after k steps (index 0 = the initial point).

  Entries after ``num_iter`` are NaN. Shapes ``(max_iter + 1,)`` (batch axes first if vmapped).
  """

  objective: jax.Array
  stepsize: jax.Array
  backtracks: jax.Array
  nmse: jax.Array  # dB against the reference image; NaN when no reference was given


class Result(NamedTuple):
  x: jax.Array         # final iterate (canvas)
  state: Any           # the method's final state
  history: History
  num_iter: jax.Array  # steps taken (int32)
  converged: jax.Array  # bool: stopped by the tolerance rather than max_iter


def _record(history: History, k, state, problem, reference) -> History:
  nmse = jnp.nan if reference is None else nmse_db(problem.image(state.x), reference)
  dtype = history.objective.dtype
  return History(
      objective=history.objective.at[k].set(state.objective.astype(dtype)),
      stepsize=history.stepsize.at[k].set(jnp.asarray(state.stepsize, dtype)),
      backtracks=history.backtracks.at[k].set(jnp.asarray(state.backtracks, dtype)),
      nmse=history.nmse.at[k].set(jnp.asarray(nmse, dtype)),
  )


def run(method, problem, x0: jax.Array, max_iter: int, tol=0.0,
        reference: Optional[jax.Array] = None) -> Result:
  """Run ``method`` on one problem from ``x0`` (canvas ``op.in_shape``). Pure; jit/vmap freely.

  ``max_iter`` must be static under jit (it sizes the history). ``reference`` ``(H, W)``: an image
  against which NMSE is recorded each iteration (costs one wavelet synthesis per iteration).
  """
  state = method.init(problem, x0)
  dtype = jnp.real(state.objective).dtype
  nan = jnp.full((max_iter + 1,), jnp.nan, dtype)
  history = _record(History(nan, nan, nan, nan), 0, state, problem, reference)

  def cond(carry):
    k, _, _, converged = carry
    return (k < max_iter) & ~converged

  def body(carry):
    k, state, history, _ = carry
    new = method.step(problem, state)
    change = jnp.abs(state.objective - new.objective)
    converged = change <= tol * jnp.abs(state.objective)
    return k + 1, new, _record(history, k + 1, new, problem, reference), converged

  k, state, history, converged = jax.lax.while_loop(
      cond, body, (jnp.int32(0), state, history, jnp.bool_(False)))
  return Result(x=state.x, state=state, history=history, num_iter=k, converged=converged)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _run_jit(method, problem, x0, max_iter, tol, reference):
  return run(method, problem, x0, max_iter, tol, reference)


def for_vmap(method):
  """The form of ``method`` to use under ``vmap``: ``method.vmap_variant()`` if it defines one
  (e.g. ``DRS`` without ``lax.cond``), else ``method`` itself."""
  return method.vmap_variant() if hasattr(method, "vmap_variant") else method


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _run_batch_jit(method, problem, x0, max_iter, tol, reference):
  method = for_vmap(method)
  ref_axis = None if reference is None else 0
  return jax.vmap(run, in_axes=(None, 0, 0, None, None, ref_axis))(
      method, problem, x0, max_iter, tol, reference)


def check_inputs(problem, x0) -> int:
  """Validate concrete inputs before tracing; returns the number of batch axes (0 or 1)."""
  in_shape = tuple(problem.op.in_shape)
  batch_dims = np.ndim(x0) - len(in_shape)
  if batch_dims not in (0, 1) or tuple(np.shape(x0)[batch_dims:]) != in_shape:
    raise ValueError(f"x0 has shape {tuple(np.shape(x0))}; the problem's operator expects "
                     f"{in_shape} (or (batch,) + {in_shape}).")
  y_shape = tuple(np.shape(problem.y))
  expected_y = tuple(np.shape(x0)[:batch_dims]) + tuple(problem.op.out_shape)
  validation.check_shape("problem.y", y_shape, expected_y)
  validation.check_positive("lam", problem.lam)
  validation.check_positive("lipschitz", problem.lipschitz)
  validation.check_finite("y", problem.y)
  validation.check_finite("x0", x0)
  return batch_dims


def solve(method, problem, x0: Optional[jax.Array] = None, *, max_iter: int = 100, tol=0.0,
          reference: Optional[jax.Array] = None) -> Result:
  """Validated entry point: checks inputs, then runs the whole solve as ONE jit call.

  A batched problem (leading batch axis on ``y``, operator leaves, ``lam``) with a batched
  ``x0`` (or ``x0=None``, meaning zeros) is vmapped: each instance has its own operator, stepsize,
  backtracking and stopping point. Raises ``ValueError`` for bad inputs before tracing.
  """
  if x0 is None:
    batch = np.shape(problem.lam)
    dtype = jnp.real(jnp.asarray(problem.y)).dtype
    x0 = jnp.zeros(tuple(batch) + tuple(problem.op.in_shape), dtype)
  batch_dims = check_inputs(problem, x0)
  runner = _run_batch_jit if batch_dims else _run_jit
  return runner(method, problem, x0, max_iter, jnp.asarray(tol), reference)
