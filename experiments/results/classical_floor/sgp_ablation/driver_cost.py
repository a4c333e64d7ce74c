"""Eleventh session: what the driver costs: FISTA 1/L through jsgp.solvers.run (history, stopping test) against the
same step in a bare fori_loop, with and without an objective history; interleaved, 60 rounds.
  python experiments/results/classical_floor/sgp_ablation/driver_cost.py inpainting
"""
import sys, jax, jax.numpy as jnp
import os; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import floor_jobs, report, speed_problem
from experiments.bench.timing import compile_fn, paired_ratio, solve_fn
from jsgp.solvers import FISTA
name = sys.argv[1]
problem, x0 = speed_problem(name)
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
m = FISTA(max_backtracks=0); jobs = floor_jobs(problem, x0, iters)
for label, fn in [("driver", solve_fn(iters)), ("bare", bare), ("bare_hist", bare_hist)]:
  c, _ = compile_fn(fn, m, problem, x0); jobs[label] = (c, (m, problem, x0))
times = report(jobs, 60, iters)
print("driver / bare", f"{paired_ratio(times['driver'], times['bare']):.3f}")
