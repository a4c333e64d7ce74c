"""Eleventh session: what the driver costs: FISTA 1/L through jsgp.solvers.run (history, stopping test) against the
same step in a bare fori_loop, with and without an objective history; interleaved, 60 rounds.
  python experiments/results/classical_floor/sgp_ablation/driver_cost.py inpainting
"""
import sys, jax, jax.numpy as jnp
from experiments.bench.config import BenchConfig
from experiments.bench.measure import task_of, images_for
from experiments.bench.timing import compile_fn, interleaved, solve_fn, floor_fn, median, paired_ratio
from jsgp.problems import simulate
from jsgp.solvers import FISTA
name = sys.argv[1]
cfg = BenchConfig(size=128); task = task_of(name, cfg)
image = images_for(name, cfg, 1, [])[0]
problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(0))
x0 = jnp.zeros(problem.op.in_shape, image.dtype)
iters = 100
def bare(method, problem, x0):
  st = method.init(problem, x0)
  return jax.lax.fori_loop(0, iters, lambda i, s: method.step(problem, s), st)
def bare_hist(method, problem, x0):  # objective history only
  st = method.init(problem, x0)
  h = jnp.full((iters + 1,), jnp.nan, st.objective.dtype).at[0].set(st.objective)
  def body(i, c):
    s, h = c; s = method.step(problem, s); return s, h.at[i + 1].set(s.objective)
  return jax.lax.fori_loop(0, iters, body, (st, h))
m = FISTA(max_backtracks=0); jobs = {}
c, _ = compile_fn(floor_fn(iters), problem, x0); jobs["floor"] = (c, (problem, x0))
for label, fn in [("driver", solve_fn(iters)), ("bare", bare), ("bare_hist", bare_hist)]:
  c, _ = compile_fn(fn, m, problem, x0); jobs[label] = (c, (m, problem, x0))
times, _ = interleaved(jobs, 60)
for k in jobs: print(k, f"{1e3*median(times[k])/iters:.3f} ms/it", f"x floor {paired_ratio(times[k], times['floor']):.3f}")
print("driver / bare", f"{paired_ratio(times['driver'], times['bare']):.3f}")
