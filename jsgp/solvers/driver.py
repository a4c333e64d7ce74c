"""The one driver of every method, in two modes, and the one batched runner.

A method is a pytree with two pure functions (the optax/optimistix shape),
``init(problem, x0) -> state`` and ``step(problem, state) -> state``; its state's required fields
and the optional hooks are declared in ``jsgp.solvers.protocol``. The driver records ``x``'s
objective, stepsize and backtracks in a fixed-size history so that whole runs stay jit-able. The
recorded objective is the true one: no method updates the residual ``A x - y`` incrementally
(each forms it fresh from ``x``, or as a convex combination of fresh residuals), so nothing
drifts in float32.

Modes of :func:`run`:
  * solving (default): ``jax.lax.while_loop`` until ``max_iter``, the stopping rule (relative
    objective change ``|F_k - F_{k+1}| <= tol * |F_k|``; ``tol = 0`` runs ``max_iter`` steps
    unless the objective stops changing altogether, e.g. ``y = 0``; ``tol < 0`` never stops, even
    where the objective no longer changes), or a non-finite objective; ``Result.status`` says
    which (``protocol.CONVERGED`` / ``MAX_ITER`` / ``NON_FINITE``);
  * differentiating (``unroll=True``): ``jax.lax.scan`` of exactly ``max_iter`` steps, each a
    ``jax.checkpoint`` (``remat``) so reverse mode stores one state per step; ``record(problem,
    state)`` after each step is stacked in ``Result.trace``.

:func:`run_batch` runs a batch (leading axis; each instance its own operator, stepsize and
stopping point, frozen once its own test fires) as ONE ``while_loop`` over the vmapped step, so
the iteration counter is a single scalar (under ``vmap(run)`` the loop predicate itself is
batched). The batch may be split over the devices of a mesh
(``jsgp.distributed``; nothing changes without one). :func:`solve` validates concrete inputs and
runs either as ONE jit call.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jsgp import distributed, validation
from jsgp.metrics import nmse_db
from jsgp.solvers import protocol
from jsgp.solvers.protocol import CONVERGED, MAX_ITER, NON_FINITE


class History(NamedTuple):
  """Per-iteration records, index k = after k steps (index 0 = the initial point).

  Entries after ``num_iter`` are NaN. Shapes ``(max_iter + 1,)`` (batch axes first if vmapped).
  """

  objective: jax.Array
  stepsize: jax.Array
  backtracks: jax.Array
  nmse: jax.Array  # dB against the ground-truth image; NaN when none was given


class Result(NamedTuple):
  x: jax.Array          # final iterate (canvas)
  state: Any            # the method's final state
  history: History
  num_iter: jax.Array   # steps taken (int32)
  converged: jax.Array  # bool: stopped by the tolerance (status == CONVERGED)
  status: jax.Array     # int32: protocol.CONVERGED, MAX_ITER or NON_FINITE (the run stopped
                        # at the step whose objective was NaN / inf); unroll mode: MAX_ITER
  trace: Any = None     # unroll mode: ``record(problem, state)`` after steps 1..max_iter, stacked


def status_name(status) -> str:
  """``"converged"``, ``"max_iter"`` or ``"non_finite"`` for a (concrete, scalar) status.

  Args:
    status: a ``Result.status`` value (``protocol.CONVERGED``, ``MAX_ITER`` or ``NON_FINITE``):
      a Python int or a concrete scalar array (for a batch, one element of ``status``), not a
      tracer.

  Returns:
    The status's name, ``protocol.STATUS_NAMES[int(status)]``.
  """
  return protocol.STATUS_NAMES[int(status)]


def _status(converged, broken) -> jax.Array:
  return jnp.where(broken, NON_FINITE, jnp.where(converged, CONVERGED, MAX_ITER)).astype(jnp.int32)


def _entry(state, problem, ground_truth, dtype) -> History:
  """One history entry (scalars) for ``state``."""
  nmse = jnp.nan if ground_truth is None else nmse_db(problem.image(state.x), ground_truth)
  return History(objective=state.objective.astype(dtype),
                 stepsize=jnp.asarray(state.stepsize, dtype),
                 backtracks=jnp.asarray(state.backtracks, dtype),
                 nmse=jnp.asarray(nmse, dtype))


def _record(history: History, k, entry: History) -> History:
  return jax.tree_util.tree_map(lambda h, e: h.at[k].set(e), history, entry)


def run(method, problem, x0: jax.Array, max_iter: int, tol=0.0,
        ground_truth: Optional[jax.Array] = None, *, unroll: bool = False, remat: bool = True,
        record: Optional[Callable[[Any, Any], Any]] = None) -> Result:
  """Run ``method`` on one problem from ``x0`` (canvas ``op.in_shape``). Pure; jit/vmap freely.

  Args:
    method: a jsgp method: a pytree with ``init(problem, x0) -> state`` and
      ``step(problem, state) -> state`` (``jsgp.solvers.protocol``), e.g. ``FISTA()`` or
      ``DRS(policy)``; its array leaves (e.g. network weights) may be traced.
    problem: one (unbatched) ``L1Problem``.
    x0: the starting canvas, shape ``problem.op.in_shape`` ``(Hc, Wc)`` (e.g.
      ``problem.zeros()``).
    max_iter: the most steps (exactly this many with ``unroll``); a Python int, static under
      jit: it sizes the history ``(max_iter + 1,)``. ``0`` returns the initial state.
    tol: the relative tolerance of the stopping rule ``|F_k - F_{k+1}| <= tol * |F_k|``, a
      scalar (may be traced). ``0`` (default) stops only where the objective no longer changes;
      ``tol < 0`` never stops before ``max_iter``. Ignored with ``unroll``.
    ground_truth: the true image ``(H, W)`` (``problem.synthesis.out_shape``) for
      ``History.nmse``; ``None`` (default): ``nmse`` is NaN and no synthesis is spent on it.
    unroll: ``False`` (default): the solving mode (``jax.lax.while_loop``, stopped by
      ``max_iter``, the tolerance or a non-finite objective); ``True``: the differentiable mode
      (``jax.lax.scan`` of exactly ``max_iter`` steps, no stopping test). A Python bool.
    remat: unroll mode only: ``True`` (default) wraps each step in ``jax.checkpoint`` so that
      reverse mode stores one state per step; ``False`` stores every step's intermediates.
    record: unroll mode only: ``record(problem, state) -> pytree``, evaluated after each step
      and stacked along a leading ``max_iter`` axis into ``Result.trace``; ``None`` (default):
      no trace.

  Returns:
    A ``Result``: ``x``, the final iterate ``(Hc, Wc)``; ``state``, the method's final state;
    ``history``, a ``History`` of ``(max_iter + 1,)`` arrays (objective, stepsize, backtracks,
    NMSE in dB; index k after k steps, NaN after ``num_iter``) in the objective's real dtype;
    ``num_iter``, the steps taken (int32 scalar); ``converged`` (bool scalar) and ``status``
    (int32 scalar: ``CONVERGED``, ``MAX_ITER`` or ``NON_FINITE``, the last when the run stopped
    at a step whose objective was NaN / inf). Unroll mode: ``num_iter = max_iter``,
    ``converged = False``, ``status = MAX_ITER``, and ``trace`` holds the stacked records
    (``None`` without ``record``, and always in the solving mode).

  Raises:
    TypeError: ``method`` has no callable ``init`` and ``step``.
    ValueError: ``record`` is given without ``unroll=True``.
  """
  protocol.check_method(method)
  state = method.init(problem, x0)
  dtype = jnp.real(state.objective).dtype
  first = _entry(state, problem, ground_truth, dtype)
  if unroll:
    return _unrolled(method, problem, state, first, max_iter, ground_truth, remat, record, dtype)
  if record is not None:
    raise ValueError("record is only available with unroll=True")
  nan = jnp.full((max_iter + 1,), jnp.nan, dtype)
  history = _record(History(nan, nan, nan, nan), 0, first)

  def cond(carry):
    k, _, _, converged, broken = carry
    return (k < max_iter) & ~converged & ~broken

  def body(carry):
    k, state, history, _, _ = carry
    new = method.step(problem, state)
    converged = _stops(state.objective, new, tol)
    broken = ~jnp.isfinite(new.objective)
    return (k + 1, new, _record(history, k + 1, _entry(new, problem, ground_truth, dtype)),
            converged & ~broken, broken)

  broken0 = ~jnp.isfinite(state.objective)
  k, state, history, converged, broken = jax.lax.while_loop(
      cond, body, (jnp.int32(0), state, history, jnp.bool_(False), broken0))
  return Result(x=state.x, state=state, history=history, num_iter=k, converged=converged,
                status=_status(converged, broken))


def _unrolled(method, problem, state, first: History, num_steps: int, ground_truth, remat: bool,
              record, dtype) -> Result:
  """``num_steps`` steps in ``lax.scan`` (differentiable), recording the history as it goes."""

  def body(carry, _):
    k, state = carry
    new = method.step(problem, state)
    traced = None if record is None else record(problem, new)
    return (k + 1, new), (_entry(new, problem, ground_truth, dtype), traced)

  if remat:
    body = jax.checkpoint(body)
  (_, state), (entries, trace) = jax.lax.scan(body, (jnp.int32(0), state), None,
                                              length=num_steps)
  history = jax.tree_util.tree_map(lambda h0, h: jnp.concatenate([h0[None], h]), first, entries)
  return Result(x=state.x, state=state, history=history, num_iter=jnp.int32(num_steps),
                converged=jnp.bool_(False), status=jnp.int32(MAX_ITER), trace=trace)


def _stops(previous: jax.Array, new_state, tol) -> jax.Array:
  """The stopping rule: ``|F_k - F_{k+1}| <= tol |F_k|``, never for ``tol < 0``, nor after a
  step that held ``x`` by design (``new_state.held``, e.g. monotone FISTA rejecting a
  proposal: F is unchanged, yet the method moves on)."""
  change = jnp.abs(previous - new_state.objective)
  return (tol >= 0) & (change <= tol * jnp.abs(previous)) & ~protocol.held(new_state)


def run_batch(method, problems, x0: jax.Array, max_iter: int, tol=0.0,
              ground_truth: Optional[jax.Array] = None, *, mesh=None, unroll: bool = False,
              **mode) -> Result:
  """``run`` over the leading batch axis of ``problems``, ``x0`` and ``ground_truth`` (the method,
  in its vmap variant, is shared): the same per-instance results, with one scalar iteration
  counter (module docstring). ``mesh``: the batch is split over its ``"data"`` axis
  (``jsgp.distributed``); ``None`` (one device) changes nothing. ``unroll`` and ``mode``
  (``remat``, ``record``): the differentiable mode of ``run``, vmapped. Pure: jit it (``solve``
  does).

  Args:
    method: a jsgp method (as for ``run``), shared by every instance (not batched); its
      ``vmap_variant()`` is used where it has one (``protocol.for_vmap``).
    problems: a batched ``L1Problem`` (e.g. from ``simulate_batch``): a leading batch axis
      ``B`` on ``y``, ``lam``, ``lipschitz`` and the operators' array leaves.
    x0: the starting canvases ``(B, Hc, Wc)`` (``Hc, Wc`` = ``op.in_shape``).
    max_iter: the most steps per instance (exactly this many with ``unroll``); a Python int,
      static under jit (it sizes the history).
    tol: the scalar relative tolerance of ``run``'s stopping rule, shared by the batch
      (default ``0``; ``tol < 0`` never stops); ignored with ``unroll``.
    ground_truth: the true images ``(B, H, W)`` for ``History.nmse``; ``None`` (default): NaN.
    mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis (``jsgp.distributed.make_mesh``):
      inputs and result are constrained to a batch axis sharded over it; static under jit.
      ``None`` (default): one device, nothing changes.
    unroll: ``True``: ``run``'s differentiable mode, vmapped (exactly ``max_iter`` steps per
      instance); ``False`` (default): the solving mode, one ``while_loop`` for the batch.
    **mode: ``remat`` and ``record``, passed to ``run``; used only with ``unroll=True``.

  Returns:
    A ``Result`` with a leading batch axis on every field: ``x`` ``(B, Hc, Wc)``, ``state`` the
    batched final states, ``history`` fields ``(B, max_iter + 1)`` (NaN after each instance's
    ``num_iter``), ``num_iter``, ``converged`` and ``status`` ``(B,)`` (each instance's own; an
    instance is frozen once its own test fired). Unroll mode: as ``run``'s, batched; ``trace``
    stacked ``(B, max_iter, ...)`` with ``record`` (``None`` otherwise).

  Raises:
    TypeError: ``method`` has no callable ``init`` and ``step``.
    ValueError: ``record`` is given without ``unroll=True``.
  """
  problems, x0, ground_truth = distributed.constrain_batch((problems, x0, ground_truth), mesh)
  method = protocol.for_vmap(method)
  if unroll:
    truth_axis = None if ground_truth is None else 0
    one = functools.partial(run, unroll=True, **mode)
    result = jax.vmap(one, in_axes=(None, 0, 0, None, None, truth_axis))(
        method, problems, x0, max_iter, tol, ground_truth)
  else:
    if mode.get("record") is not None:
      raise ValueError("record is only available with unroll=True")
    result = _batched_while(method, problems, x0, max_iter, tol, ground_truth)
  return distributed.constrain_batch(result, mesh)


def _batched_while(method, problems, x0, max_iter: int, tol, ground_truth) -> Result:
  """The solving mode for a batch: one ``while_loop`` until ``max_iter`` or until every instance
  has stopped; a stopped instance's state and history are frozen (exactly what ``vmap(run)``
  computes, with an unbatched counter)."""
  truth_axis = None if ground_truth is None else 0
  protocol.check_method(method)
  state = jax.vmap(method.init)(problems, x0)
  dtype = jnp.real(state.objective).dtype
  entry = jax.vmap(functools.partial(_entry, dtype=dtype), in_axes=(0, 0, truth_axis))
  step = jax.vmap(method.step)
  batch = x0.shape[0]
  nan = jnp.full((batch, max_iter + 1), jnp.nan, dtype)
  history = _record_batch(History(nan, nan, nan, nan), 0, entry(state, problems, ground_truth),
                          jnp.ones((batch,), bool))

  def cond(carry):
    k, _, _, active, _, _, _ = carry
    return (k < max_iter) & jnp.any(active)

  def body(carry):
    k, state, history, active, num_iter, converged, broken = carry
    new = step(problems, state)
    bad = ~jnp.isfinite(new.objective)
    stop = _stops(state.objective, new, tol) & ~bad
    state = jax.tree_util.tree_map(lambda a, b: _where(active, a, b), new, state)
    history = _record_batch(history, k + 1, entry(new, problems, ground_truth), active)
    return (k + 1, state, history, active & ~stop & ~bad, num_iter + active.astype(jnp.int32),
            converged | (active & stop), broken | (active & bad))

  zeros = jnp.zeros((batch,), jnp.int32)
  broken0 = ~jnp.isfinite(state.objective)
  _, state, history, _, num_iter, converged, broken = jax.lax.while_loop(
      cond, body, (jnp.int32(0), state, history, ~broken0, zeros,
                   jnp.zeros((batch,), bool), broken0))
  return Result(x=state.x, state=state, history=history, num_iter=num_iter, converged=converged,
                status=_status(converged, broken))


def _where(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """``where`` with a ``(B,)`` mask broadcast over the trailing axes of ``(B, ...)`` leaves."""
  return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)


def _record_batch(history: History, k, entries: History, active: jax.Array) -> History:
  """Column ``k`` of the ``(B, max_iter + 1)`` history from ``(B,)`` entries, active rows only."""
  return jax.tree_util.tree_map(lambda h, e: h.at[:, k].set(jnp.where(active, e, h[:, k])),
                                history, entries)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _run_jit(method, problem, x0, max_iter, tol, ground_truth):
  return run(method, problem, x0, max_iter, tol, ground_truth)


@functools.partial(jax.jit, static_argnames=("max_iter", "mesh"))
def _run_batch_jit(method, problems, x0, max_iter, tol, ground_truth, mesh):
  return run_batch(method, problems, x0, max_iter, tol, ground_truth, mesh=mesh)


def check_inputs(problem, x0, ground_truth=None) -> int:
  """Validate concrete inputs before tracing; returns the number of batch axes (0 or 1)."""
  in_shape = tuple(problem.op.in_shape)
  batch_dims = np.ndim(x0) - len(in_shape)
  if batch_dims not in (0, 1) or tuple(np.shape(x0)[batch_dims:]) != in_shape:
    raise ValueError(f"x0 has shape {tuple(np.shape(x0))}; the problem's operator expects "
                     f"{in_shape} (or (batch,) + {in_shape}).")
  batch = tuple(np.shape(x0)[:batch_dims])
  validation.check_shape("problem.y", np.shape(problem.y), batch + tuple(problem.op.out_shape))
  validation.check_shape("problem.lam", np.shape(problem.lam), batch)
  if np.iscomplexobj(problem.y) and not _measures_complex(problem, batch_dims):
    raise ValueError("problem.y is complex, but the problem's operator makes real "
                     "measurements: pass the real measurements.")
  validation.check_positive("lam", problem.lam)
  validation.check_positive("lipschitz", problem.lipschitz)
  validation.check_finite("y", problem.y)
  validation.check_finite("x0", x0)
  if ground_truth is not None:
    validation.check_shape("ground_truth", np.shape(ground_truth),
                           batch + tuple(problem.synthesis.out_shape))
    validation.check_finite("ground_truth", ground_truth)
  return batch_dims


def _measures_complex(problem, batch_dims: int) -> bool:
  """Whether the operator maps a real canvas to complex measurements (e.g. partial Fourier)."""
  one = jax.tree_util.tree_map(lambda a: a[0], problem) if batch_dims else problem
  x = jax.ShapeDtypeStruct(tuple(one.op.in_shape), jnp.real(jnp.asarray(one.y)).dtype)
  return jnp.iscomplexobj(jax.eval_shape(one.op.apply, x))


def solve(method, problem, x0: Optional[jax.Array] = None, *, max_iter: int = 100, tol=0.0,
          ground_truth: Optional[jax.Array] = None, mesh=None) -> Result:
  """Validated entry point: checks inputs, then runs the whole solve as ONE jit call.

  A batched problem (leading batch axis on ``y``, operator leaves, ``lam``) with a batched
  ``x0`` (or ``x0=None``: ``problem.zeros()``) is vmapped (``run_batch``): each instance has its
  own operator, stepsize, backtracking and stopping point. ``mesh`` (``jsgp.distributed.
  make_mesh``): a batch split over the mesh's devices (its size must divide evenly); the method
  (e.g. a network policy) is replicated, only the loop predicate is shared.

  Args:
    method: a jsgp method (``init`` / ``step``, ``jsgp.solvers.protocol``), e.g. ``FISTA()`` or
      ``pretrained.solver("inpainting")``; passed to jit as a pytree (its static fields key the
      compilation, its array leaves, e.g. network weights, are traced).
    problem: an ``L1Problem`` (``make_problem``, ``simulate``) or a batch of them
      (``simulate_batch``: ``y`` ``(B,) + op.out_shape``, ``lam`` ``(B,)``).
    x0: the starting canvas ``problem.op.in_shape`` ``(Hc, Wc)``, or ``(B, Hc, Wc)`` for a
      batch (its extra leading axis is what makes the solve batched); ``None`` (default):
      ``problem.zeros()``.
    max_iter: the most steps per instance, an integer >= 0 (default 100; ``0`` returns ``x0``);
      static: each value compiles once.
    tol: the relative tolerance of the stopping rule ``|F_k - F_{k+1}| <= tol * |F_k|``: a real
      number, not NaN (``inf`` allowed); default ``0``: stop where the objective no longer
      changes; ``tol < 0``: exactly ``max_iter`` steps. Passed traced.
    ground_truth: the true image ``(H, W)`` (``(B, H, W)`` for a batch), against which
      ``History.nmse`` (dB) is recorded each iteration; ``None`` (default): NaN.
    mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis, for a batched problem only: the batch
      is sharded over it, ``method`` and ``tol`` replicated; ``None`` (default): one device.

  Returns:
    ``run``'s ``Result`` for one problem, ``run_batch``'s (a leading ``(B,)`` axis on every
    field) for a batch: the final iterate ``x``, the method's final ``state``, the ``History``
    (``(max_iter + 1,)`` per instance, NaN after ``num_iter``), ``num_iter``, ``converged`` and
    ``status`` (``status_name`` names it); ``trace`` is ``None``.

  Raises:
    TypeError: ``method`` has no callable ``init`` and ``step``.
    ValueError: before tracing: ``max_iter`` not an integer >= 0 (a bool included); ``tol``
      not a real number, or NaN; ``x0`` not of shape ``op.in_shape`` or
      ``(B,) + op.in_shape``; ``y`` or ``lam`` not of the shape that ``x0``'s batch implies; a
      complex ``y`` for an operator with real measurements; ``lam`` or ``lipschitz`` not finite
      and > 0; NaN/Inf in ``y``, ``x0`` or ``ground_truth``; ``ground_truth`` of the wrong
      shape; a ``mesh`` with an unbatched problem; a batch size that the mesh's ``"data"`` axis
      does not divide.
  """
  protocol.check_method(method)
  max_iter = validation.check_integer("max_iter", max_iter, 0)
  validation.check_number("tol", tol)
  if x0 is None:
    x0 = problem.zeros()
  batch_dims = check_inputs(problem, x0, ground_truth)
  tol = jnp.asarray(tol)
  if not batch_dims:
    if mesh is not None:
      raise ValueError("a mesh splits a batch of problems; this problem is not batched")
    return _run_jit(method, problem, x0, max_iter, tol, ground_truth)
  if mesh is not None:
    distributed.check_batch_divisible(int(np.shape(x0)[0]), mesh)
    problem, x0, ground_truth = distributed.shard_batch((problem, x0, ground_truth), mesh)
    method, tol = distributed.replicate((method, tol), mesh)
  return _run_batch_jit(method, problem, x0, max_iter, tol, ground_truth, mesh)
