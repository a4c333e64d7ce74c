"""The contract every method honours: what the driver, ``DRS`` and the batched runner rely on.

A method is an immutable pytree (``jsgp.struct.dataclass``) with two pure functions::

    init(problem, x0) -> state          state for the starting point x0 (canvas op.in_shape)
    step(problem, state) -> state       one iteration

``state`` is a NamedTuple (a pytree) carrying at least the fields of ``MethodState``. Optional
hooks, each with a default the driver falls back to when a method lacks it:

``state.held`` (bool array)
  True when the step kept ``x`` by design (monotone FISTA rejecting its proposal): the stopping
  rule ignores such a step, since the objective did not change although the method moved on.
  Default: False.
``vmap_variant() -> method``
  The form to use under ``vmap`` (e.g. ``DRS`` without ``lax.cond``, whose branches vmap would
  both run anyway). Default: the method itself.
``warm_start(problem, x, residual, grad, objective) -> state``
  ``init`` from quantities the caller already holds (``grad`` may be None), so that ``DRS`` can
  hand off to the method without another operator application. Default: ``init(problem, x)``.
``restart(problem, state, x, residual, grad, objective) -> state``
  ``warm_start`` at a new point from an earlier state of the same method on the same problem,
  keeping what does not depend on the iterate (Douglas-Rachford's ``(I + t A^T A)^{-1} t A^T y``,
  two solves): what ``DRS`` uses when its policy phase ends. Default: ``warm_start``.

Termination is the driver's (``jsgp.solvers.driver``): the relative objective change reaches
``tol`` (``Result.status == CONVERGED``), ``max_iter`` steps ran (``MAX_ITER``), or the objective
became NaN or infinite (``NON_FINITE``; the run stops at that step).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

CONVERGED, MAX_ITER, NON_FINITE = 0, 1, 2
STATUS_NAMES = ("converged", "max_iter", "non_finite")


class MethodState(Protocol):
  """The fields every method state has (the driver records them each iteration)."""

  x: jax.Array            # the iterate, canvas shape
  objective: jax.Array    # F(x), the true objective (never an incrementally updated one)
  stepsize: jax.Array     # the step used to reach x (scalar; a mean for a diagonal step)
  backtracks: jax.Array   # line-search reductions spent on that step (int)


@runtime_checkable
class Method(Protocol):
  """``init`` / ``step``; see the module docstring for the optional hooks."""

  def init(self, problem: Any, x0: jax.Array) -> Any:
    ...

  def step(self, problem: Any, state: Any) -> Any:
    ...


def held(state) -> jax.Array:
  """``state.held`` where the method records it, else False."""
  return jax.numpy.asarray(getattr(state, "held", False), bool)


def for_vmap(method):
  """The form of ``method`` to use under ``vmap``: ``method.vmap_variant()`` if it defines one,
  else ``method`` itself."""
  variant = getattr(method, "vmap_variant", None)
  return method if variant is None else variant()


def warm_start(method, problem, x, residual, grad, objective):
  """``method``'s state at ``x``: its ``warm_start`` hook (no operator application) where it has
  one, else ``method.init(problem, x)``."""
  start = getattr(method, "warm_start", None)
  if start is None:
    return method.init(problem, x)
  return start(problem, x, residual, grad, objective)


def restart(method, problem, state, x, residual, grad, objective):
  """``method``'s state at ``x`` given its earlier ``state`` on the same problem: its ``restart``
  hook where it has one, else ``warm_start``."""
  again = getattr(method, "restart", None)
  if again is None:
    return warm_start(method, problem, x, residual, grad, objective)
  return again(problem, state, x, residual, grad, objective)


def check_method(method) -> None:
  """``TypeError`` naming the method unless it has callable ``init`` and ``step``."""
  if not isinstance(method, Method):
    raise TypeError(f"{type(method).__name__} is not a jsgp method: a method has "
                    "init(problem, x0) -> state and step(problem, state) -> state "
                    "(jsgp.solvers.protocol)")
