"""Timing: compiled calls timed in interleaved rounds (so that background load hits every job
alike; medians and paired ratios), and the pure functions the benchmark times, each jitted
whole: solves, the floor (A + A^T + soft threshold), the parts alone, policy calls, peers."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jsgp.operators import sum_squares
from jsgp.prox import soft_threshold
from jsgp.solvers import run, run_batch
from jsgp.solvers.protocol import for_vmap

# Forces exactly max_iter iterations: the driver stops when |dF| <= tol |F|, never true for tol < 0.
NO_STOP = -1.0


def compile_fn(fn: Callable, *args):
  """``(compiled, seconds)``: lower + compile of ``jax.jit(fn)`` on ``args``."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


def timed_call(compiled, args) -> Tuple[float, Any]:
  start = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  return time.perf_counter() - start, out


def interleaved(jobs: Dict[str, Tuple[Any, tuple]], repeats: int):
  """Warm each job once, then time ``repeats`` rounds, jobs interleaved within a round so that
  background load hits them alike. Returns ``({name: [seconds per round]}, {name: warm output})``.
  """
  outputs = {name: timed_call(c, a)[1] for name, (c, a) in jobs.items()}
  times = {name: [] for name in jobs}
  for _ in range(repeats):
    for name, (compiled, args) in jobs.items():
      times[name].append(timed_call(compiled, args)[0])
  return times, outputs


def median(values) -> float:
  return float(np.median(np.asarray(values, np.float64)))


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float], scale=1.0) -> float:
  """Median over rounds of ``numerator / denominator * scale`` (paired: same round)."""
  return median([n / d * scale for n, d in zip(numerator, denominator)])


def loadavg() -> Optional[List[float]]:
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return None


# ------------------------------------------------------------------------------------------------
# What is timed. Everything below is a pure function of arrays/pytrees, jitted whole.

def solve_fn(max_iter: int):
  return lambda method, problem, x0: run(method, problem, x0, max_iter, jnp.asarray(NO_STOP))


def solve_reference_fn(max_iter: int):
  return lambda method, problem, x0, ref: run(method, problem, x0, max_iter,
                                               jnp.asarray(NO_STOP), ref)


def init_fn(method, problem, x0):
  return method.init(problem, x0)


def batch_init_fn(method, problem, x0):
  return jax.vmap(init_fn, in_axes=(None, 0, 0))(for_vmap(method), problem, x0)


def batch_solve_fn(max_iter: int):
  """The batched runner (``jsgp.solvers.run_batch``, as ``solve`` uses it)."""
  return lambda method, problem, x0: run_batch(method, problem, x0, max_iter,
                                               jnp.asarray(NO_STOP))


def floor_fn(n: int):
  """``n`` x (one ``A``, one ``A^T``, one soft threshold): the cheapest possible iteration."""

  def floor(problem, x):
    t = 1.0 / problem.lipschitz

    def body(_, x):
      return soft_threshold(x - t * problem.op.adjoint(problem.op.apply(x) - problem.y),
                            problem.lam * t)

    return jax.lax.fori_loop(0, n, body, x)

  return floor


TINY = 1e-30  # loop-carried dependencies that change nothing but keep XLA from hoisting the work


def parts_fns(n: int) -> Dict[str, Callable]:
  """Each part alone, ``n`` times in a ``fori_loop``, threaded through the carry."""

  def forward(problem, x):
    return jax.lax.fori_loop(
        0, n, lambda _, x: x + TINY * jnp.real(jnp.sum(problem.op.apply(x))), x)

  def adjoint(problem, x):
    def body(_, r):
      return r + TINY * jnp.sum(problem.op.adjoint(r))
    return jnp.sum(jnp.real(jax.lax.fori_loop(0, n, body, problem.y)))

  def prox(problem, x):
    t = 1.0 / problem.lipschitz
    g = jnp.ones_like(x)
    return jax.lax.fori_loop(
        0, n, lambda _, x: soft_threshold(x - t * g, problem.lam * t) + 1.0, x)

  def objective(problem, x):
    def body(_, carry):
      x, value = carry
      value = 0.5 * sum_squares(problem.y + TINY * value) + problem.lam * jnp.sum(jnp.abs(x))
      return x + TINY * value, value
    return jax.lax.fori_loop(0, n, body, (x, jnp.zeros((), x.dtype)))[1]

  return {"A": forward, "At": adjoint, "prox": prox, "objective": objective}


def policy_fn(n: int):
  """``n`` policy calls (network inputs, U-Net, exp) threaded through the iterate."""

  def policy_loop(policy, problem, x, grad):
    def body(_, x):
      return x + TINY * policy(problem, x, grad)
    return jax.lax.fori_loop(0, n, body, x)

  return policy_loop


def jaxopt_fn(n: int):
  """jaxopt's FISTA (``acceleration=True``, fixed step 1/L) for ``n`` iterations, or None when
  jaxopt is not installed (``peers.jaxopt_solver``)."""
  from experiments.bench import peers  # pylint: disable=import-outside-toplevel
  if not peers.jaxopt_available():
    return None
  return lambda problem, x0: peers.jaxopt_solver(problem, n, False).run(
      x0, hyperparams_prox=problem.lam, problem=problem)


# ------------------------------------------------------------------------------------------------
