"""Issue 26, eleventh session: what SGP's Armijo search costs per iteration (constant step 1/L, so
that no BB work is in the way): as shipped (const), max_backtracks=0, no while loop (a single
test), no search at all (gamma = 1 statically), only the composite decrease computed (delta_only:
gamma = 1), only a data-dependent gamma (gamma_only: no delta). Run from the repository root:
  python experiments/results/classical_floor/sgp_ablation/line_search_parts.py inpainting
"""
import sys, jax, jax.numpy as jnp
import os; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import floor_jobs, report, speed_problem
from experiments.bench.timing import compile_fn, paired_ratio, solve_fn
from jsgp.solvers import SGP, FISTA
from jsgp.solvers import sgp as sgpmod, linesearch
from jsgp import policies
name = sys.argv[1]
problem, x0 = speed_problem(name)
orig = linesearch.armijo
def noarmijo(problem, x, residual, objective, z, residual_full, delta, **kw):
  one = jnp.ones((), objective.dtype)
  full = 0.5 * linesearch.sum_squares(residual_full) + problem.g(x + z)
  return linesearch.LineSearchResult(one, full, jnp.int32(0), jnp.bool_(True))
def noloop(problem, x, residual, objective, z, residual_full, delta, **kw):
  full = 0.5 * linesearch.sum_squares(residual_full) + problem.g(x + z)
  ok = jnp.isfinite(full) & (full <= objective + kw["sufficient_decrease"] * delta) & (delta <= 0)
  return linesearch.LineSearchResult(jnp.where(ok, 1.0, 0.0).astype(objective.dtype), jnp.where(ok, full, objective), jnp.int32(0), ok)
def delta_only(problem, x, residual, objective, z, residual_full, delta, **kw):
  full = 0.5 * linesearch.sum_squares(residual_full) + problem.g(x + z)
  ok = jnp.isfinite(full) & (full <= objective + kw["sufficient_decrease"] * delta) & (delta <= 0)
  return linesearch.LineSearchResult(jnp.ones((), objective.dtype), jnp.where(ok, full, objective), jnp.int32(0), ok)
def gamma_only(problem, x, residual, objective, z, residual_full, delta, **kw):
  full = 0.5 * linesearch.sum_squares(residual_full) + problem.g(x + z)
  ok = jnp.isfinite(full) & (full <= objective)
  return linesearch.LineSearchResult(jnp.where(ok, 1.0, 0.0).astype(objective.dtype), jnp.where(ok, full, objective), jnp.int32(0), ok)
iters = 100
jobs = floor_jobs(problem, x0, iters)
m = FISTA(max_backtracks=0); c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs["fista"] = (c, (m, problem, x0))
for label, arm, kw in [("const", orig, {}), ("const_mb0", orig, dict(max_backtracks=0)), ("const_noloop", noloop, {}),
                       ("const_noarm", noarmijo, {}), ("const_delta_only", delta_only, {}), ("const_gamma_only", gamma_only, {})]:
  sgpmod.armijo = arm
  m = SGP(policy=policies.ConstantPolicy(), **kw)
  c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs[label] = (c, (m, problem, x0))
sgpmod.armijo = orig
times = report(jobs, 60, iters)
