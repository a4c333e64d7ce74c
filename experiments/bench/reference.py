"""The float64 reference minimiser ``x*``, ``F* = F(x*)`` of one problem, written independently of
``jsgp.solvers``: FISTA with O'Donoghue-Candes gradient restart and the constant step ``1/L``, in
one ``lax.while_loop``, until the scaled fixed-point residual is below ``tol``; cached in an
``.npz`` keyed by a hash of the problem's description and ``REFERENCE_VERSION``.

Needs ``jax_enable_x64`` (the benchmark turns it on at start; float32 problems stay float32).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jsgp.operators import sum_squares
from jsgp.problems import to_float64
from jsgp.prox import soft_threshold
from jsgp.training import files

REFERENCE_VERSION = 1  # bump when the reference solver changes: older cache files are ignored
CHECK_EVERY = 50       # iterations between two fixed-point residual checks


def objective64(problem64, x: jax.Array) -> jax.Array:
  """``F(x)`` in float64 from a fresh residual: ``problem64`` (float64), ``x`` any float dtype."""
  x = x.astype(jnp.float64)
  r = problem64.op.apply(x) - problem64.y
  return 0.5 * sum_squares(r) + problem64.lam * jnp.sum(jnp.abs(x))


def fixed_point_residual(problem64, x: jax.Array) -> jax.Array:
  """``L ||x - prox(x - grad/L)|| / max(||grad f(0)||, ||A^T A x||)``: a scale-free optimality
  measure (0 at a minimiser)."""
  grad = problem64.grad(x)
  t = 1.0 / problem64.lipschitz
  step = x - soft_threshold(x - t * grad, problem64.lam * t)
  scale = jnp.maximum(jnp.linalg.norm(problem64.op.adjoint(problem64.y)),
                      jnp.linalg.norm(grad + problem64.op.adjoint(problem64.y)))
  return jnp.linalg.norm(step) * problem64.lipschitz / scale


class RestartState(NamedTuple):
  x: jax.Array         # (Hc, Wc) iterate
  x_prev: jax.Array    # previous iterate
  t: jax.Array         # momentum parameter
  k: jax.Array         # iterations done
  residual: jax.Array  # fixed-point residual at the last check
  restarts: jax.Array  # momentum restarts so far


def restarted_fista(problem64, x0: jax.Array, tol, max_iter: int) -> RestartState:
  """FISTA (step ``1/L``) with gradient restart (momentum reset when ``<z - x+, x+ - x> > 0``)
  until ``fixed_point_residual <= tol`` (checked every ``CHECK_EVERY`` steps) or ``max_iter``."""
  t_step = 1.0 / problem64.lipschitz

  def step(s: RestartState) -> RestartState:
    t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * s.t * s.t))
    z = s.x + ((s.t - 1.0) / t_next) * (s.x - s.x_prev)
    x = soft_threshold(z - t_step * problem64.grad(z), problem64.lam * t_step)
    restart = jnp.vdot(z - x, x - s.x) > 0
    return s._replace(x=x, x_prev=jnp.where(restart, x, s.x), t=jnp.where(restart, 1.0, t_next),
                      k=s.k + 1, restarts=s.restarts + restart.astype(jnp.int32))

  def chunk(s: RestartState) -> RestartState:
    s = jax.lax.fori_loop(0, CHECK_EVERY, lambda _, s: step(s), s)
    return s._replace(residual=fixed_point_residual(problem64, s.x))

  one = jnp.ones((), jnp.float64)
  state = RestartState(x0, x0, one, jnp.int32(0), jnp.inf * one, jnp.int32(0))
  return jax.lax.while_loop(lambda s: (s.residual > tol) & (s.k < max_iter), chunk, state)


_solve = jax.jit(restarted_fista, static_argnums=(3,))


class Reference(NamedTuple):
  x: np.ndarray     # (Hc, Wc) float64 minimiser
  F: float          # F(x*) in float64
  residual: float   # fixed-point residual reached
  iterations: int
  seconds: float    # 0 when read from the cache
  cached: bool


def cache_key(description: dict) -> str:
  """A hash of ``description`` (task, size, image index, seed, lam, ...) and REFERENCE_VERSION."""
  text = json.dumps(description, sort_keys=True, default=str) + f"/v{REFERENCE_VERSION}"
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference(problem, description: dict, cache_dir: Optional[str], tol: float,
              max_iter: int) -> Reference:
  """``x*``, ``F*`` of the float32 ``problem`` (solved in float64), from ``cache_dir`` when a file
  of the same key is there (converged to ``tol``, or stopped at ``max_iter``), else computed and
  written atomically."""
  key = cache_key(description)
  path = os.path.join(cache_dir, f"ref_{key}.npz") if cache_dir else None
  if path and os.path.exists(path):
    try:
      with np.load(path) as d:
        # A file that stopped at (or past) the cap is the iterate a rerun with this max_iter
        # would reach again or pass (the solve is deterministic), so it is used as well.
        if str(d["key"]) == key and (float(d["residual"]) <= tol
                                     or int(d["iterations"]) >= max_iter):
          return Reference(np.asarray(d["x"]), float(d["F"]), float(d["residual"]),
                           int(d["iterations"]), 0.0, True)
    except Exception as err:  # pylint: disable=broad-except  (zip, OS errors)
      logging.warning("reference cache %s unreadable (%s); recomputing", path, err)
  p64 = to_float64(problem)
  start = time.perf_counter()
  s = jax.block_until_ready(_solve(p64, jnp.zeros(problem.op.in_shape, jnp.float64), tol,
                                   max_iter))
  seconds = time.perf_counter() - start
  ref = Reference(np.asarray(s.x), float(objective64(p64, s.x)), float(s.residual), int(s.k),
                  seconds, False)
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    files.write_arrays(path, {"x": ref.x, "F": np.asarray(ref.F), "residual": np.asarray(
        ref.residual), "iterations": np.asarray(ref.iterations), "key": np.asarray(key),
        "description": np.asarray(json.dumps(description, sort_keys=True, default=str))})
  return ref
