"""The one driver of every method, in two modes, and the one batched runner.

A method is a pytree with two pure functions (the optax/optimistix shape):
  ``init(problem, x0) -> state`` and ``step(problem, state) -> state``.
Every method's state is a NamedTuple with at least the fields
  ``x`` (the iterate), ``objective`` (F(x)), ``stepsize`` (the step used to reach ``x``) and
  ``backtracks`` (line-search reductions spent on that step),
which the driver records in a fixed-size history so that whole runs stay jit-able.

Modes of :func:`run`:
  * solving (default): ``jax.lax.while_loop`` until ``max_iter`` or the stopping rule, relative
    objective change ``|F_k - F_{k+1}| <= tol * |F_k|`` (``tol = 0`` runs ``max_iter`` steps
    unless the objective stops changing altogether, e.g. ``y = 0``; ``tol < 0`` never stops);
  * differentiating (``unroll=True``): ``jax.lax.scan`` of exactly ``max_iter`` steps, each a
    ``jax.checkpoint`` (``remat``) so reverse mode stores one state per step; ``record(problem,
    state)`` after each step is stacked in ``Result.trace``.

:func:`run_batch` is ``run`` vmapped over a leading batch axis (each instance its own operator,
stepsize and stopping point; frozen once its own test fires), optionally split over the devices
of a mesh (``jsgp.distributed``; nothing changes without one). :func:`solve` validates concrete
inputs and runs either as ONE jit call.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jsgp import distributed, validation
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
  x: jax.Array          # final iterate (canvas)
  state: Any            # the method's final state
  history: History
  num_iter: jax.Array   # steps taken (int32)
  converged: jax.Array  # bool: stopped by the tolerance rather than max_iter
  trace: Any = None     # unroll mode: ``record(problem, state)`` after steps 1..max_iter, stacked


def _entry(state, problem, reference, dtype) -> History:
  """One history entry (scalars) for ``state``."""
  nmse = jnp.nan if reference is None else nmse_db(problem.image(state.x), reference)
  return History(objective=state.objective.astype(dtype),
                 stepsize=jnp.asarray(state.stepsize, dtype),
                 backtracks=jnp.asarray(state.backtracks, dtype),
                 nmse=jnp.asarray(nmse, dtype))


def _record(history: History, k, entry: History) -> History:
  return jax.tree_util.tree_map(lambda h, e: h.at[k].set(e), history, entry)


def run(method, problem, x0: jax.Array, max_iter: int, tol=0.0,
        reference: Optional[jax.Array] = None, *, unroll: bool = False, remat: bool = True,
        record: Optional[Callable[[Any, Any], Any]] = None) -> Result:
  """Run ``method`` on one problem from ``x0`` (canvas ``op.in_shape``). Pure; jit/vmap freely.

  ``max_iter`` must be static under jit (it sizes the history). ``reference`` ``(H, W)``: an image
  against which NMSE is recorded each iteration (costs one wavelet synthesis per iteration).
  ``unroll``: the differentiable mode (module docstring); ``tol`` is then ignored.
  """
  state = method.init(problem, x0)
  dtype = jnp.real(state.objective).dtype
  first = _entry(state, problem, reference, dtype)
  if unroll:
    return _unrolled(method, problem, state, first, max_iter, reference, remat, record, dtype)
  if record is not None:
    raise ValueError("record is only available with unroll=True")
  nan = jnp.full((max_iter + 1,), jnp.nan, dtype)
  history = _record(History(nan, nan, nan, nan), 0, first)

  def cond(carry):
    k, _, _, converged = carry
    return (k < max_iter) & ~converged

  def body(carry):
    k, state, history, _ = carry
    new = method.step(problem, state)
    change = jnp.abs(state.objective - new.objective)
    converged = change <= tol * jnp.abs(state.objective)
    return k + 1, new, _record(history, k + 1, _entry(new, problem, reference, dtype)), converged

  k, state, history, converged = jax.lax.while_loop(
      cond, body, (jnp.int32(0), state, history, jnp.bool_(False)))
  return Result(x=state.x, state=state, history=history, num_iter=k, converged=converged)


def _unrolled(method, problem, state, first: History, num_steps: int, reference, remat: bool,
              record, dtype) -> Result:
  """``num_steps`` steps in ``lax.scan`` (differentiable), recording the history as it goes."""

  def body(state, _):
    new = method.step(problem, state)
    traced = None if record is None else record(problem, new)
    return new, (_entry(new, problem, reference, dtype), traced)

  if remat:
    body = jax.checkpoint(body)
  state, (entries, trace) = jax.lax.scan(body, state, None, length=num_steps)
  history = jax.tree_util.tree_map(lambda h0, h: jnp.concatenate([h0[None], h]), first, entries)
  return Result(x=state.x, state=state, history=history, num_iter=jnp.int32(num_steps),
                converged=jnp.bool_(False), trace=trace)


def for_vmap(method):
  """The form of ``method`` to use under ``vmap``: ``method.vmap_variant()`` if it defines one
  (e.g. ``DRS`` without ``lax.cond``), else ``method`` itself."""
  variant = getattr(method, "vmap_variant", None)
  return method if variant is None else variant()


def run_batch(method, problems, x0: jax.Array, max_iter: int, tol=0.0,
              reference: Optional[jax.Array] = None, *, mesh=None, **mode) -> Result:
  """``run`` vmapped over the leading batch axis of ``problems``, ``x0`` and ``reference`` (the
  method is shared), with the method's vmap variant. ``mesh``: the batch is split over its
  ``"data"`` axis (``jsgp.distributed``); ``None`` (one device) changes nothing. ``mode``: the
  keyword arguments of ``run`` (``unroll``, ``remat``, ``record``). Pure: jit it (``solve`` does).
  """
  problems, x0, reference = distributed.constrain_batch((problems, x0, reference), mesh)
  ref_axis = None if reference is None else 0
  one = functools.partial(run, **mode)
  result = jax.vmap(one, in_axes=(None, 0, 0, None, None, ref_axis))(
      for_vmap(method), problems, x0, max_iter, tol, reference)
  return distributed.constrain_batch(result, mesh)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _run_jit(method, problem, x0, max_iter, tol, reference):
  return run(method, problem, x0, max_iter, tol, reference)


@functools.partial(jax.jit, static_argnames=("max_iter", "mesh"))
def _run_batch_jit(method, problems, x0, max_iter, tol, reference, mesh):
  return run_batch(method, problems, x0, max_iter, tol, reference, mesh=mesh)


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
          reference: Optional[jax.Array] = None, mesh=None) -> Result:
  """Validated entry point: checks inputs, then runs the whole solve as ONE jit call.

  A batched problem (leading batch axis on ``y``, operator leaves, ``lam``) with a batched
  ``x0`` (or ``x0=None``: ``problem.zeros()``) is vmapped (``run_batch``): each instance has its
  own operator, stepsize, backtracking and stopping point. ``mesh`` (``jsgp.distributed.
  make_mesh``): a batch split over the mesh's devices (its size must divide evenly); the method
  (e.g. a network policy) is replicated, only the loop predicate is shared. Raises
  ``ValueError`` for bad inputs before tracing.
  """
  if x0 is None:
    x0 = problem.zeros()
  batch_dims = check_inputs(problem, x0)
  tol = jnp.asarray(tol)
  if not batch_dims:
    if mesh is not None:
      raise ValueError("a mesh splits a batch of problems; this problem is not batched")
    return _run_jit(method, problem, x0, max_iter, tol, reference)
  if mesh is not None:
    distributed.check_batch_divisible(int(np.shape(x0)[0]), mesh)
    problem, x0, reference = distributed.shard_batch((problem, x0, reference), mesh)
    method, tol = distributed.replicate((method, tol), mesh)
  return _run_batch_jit(method, problem, x0, max_iter, tol, reference, mesh)
