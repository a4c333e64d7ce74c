"""Issue 26, eleventh session: what SGP's Armijo search costs per iteration (constant step 1/L, so
that no BB work is in the way): as shipped (const), max_backtracks=0, no while loop (a single
test), no search at all (gamma = 1 statically), only the composite decrease computed (delta_only:
gamma = 1), only a data-dependent gamma (gamma_only: no delta). Run from the repository root:
  python experiments/results/classical_floor/sgp_ablation/line_search_parts.py inpainting
"""
import sys, jax, jax.numpy as jnp
from experiments.bench.config import BenchConfig
from experiments.bench.measure import task_of, images_for
from experiments.bench.timing import compile_fn, interleaved, solve_fn, floor_fn, median, paired_ratio
from jsgp.problems import simulate
from jsgp.solvers import SGP, FISTA
from jsgp.solvers import sgp as sgpmod, linesearch
from jsgp import policies
name = sys.argv[1]
cfg = BenchConfig(size=128); task = task_of(name, cfg)
image = images_for(name, cfg, 1, [])[0]
problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(0))
x0 = jnp.zeros(problem.op.in_shape, image.dtype)
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
jobs = {}
c, _ = compile_fn(floor_fn(iters), problem, x0); jobs["floor"] = (c, (problem, x0))
m = FISTA(max_backtracks=0); c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs["fista"] = (c, (m, problem, x0))
for label, arm, kw in [("const", orig, {}), ("const_mb0", orig, dict(max_backtracks=0)), ("const_noloop", noloop, {}),
                       ("const_noarm", noarmijo, {}), ("const_delta_only", delta_only, {}), ("const_gamma_only", gamma_only, {})]:
  sgpmod.armijo = arm
  m = SGP(policy=policies.ConstantPolicy(), **kw)
  c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs[label] = (c, (m, problem, x0))
sgpmod.armijo = orig
times, _ = interleaved(jobs, 60)
for k in jobs:
  print(k, f"{1e3*median(times[k])/iters:.3f} ms/it", f"x floor {paired_ratio(times[k], times['floor']):.3f}")
