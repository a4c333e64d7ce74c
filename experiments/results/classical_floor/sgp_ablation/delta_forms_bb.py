"""Eleventh session: SGP-BB per iteration with the Armijo reference Delta as three sums (before) and as one entrywise
sum (composite_decrease since), interleaved in one run, 80 rounds.
  python experiments/results/classical_floor/sgp_ablation/delta_forms_bb.py inpainting
"""
import sys, jax, jax.numpy as jnp
import os; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import floor_jobs, report, speed_problem
from experiments.bench.timing import compile_fn, paired_ratio, solve_fn
from jsgp.solvers import SGP, FISTA
from jsgp.solvers import sgp as sgpmod
from jsgp.operators import vdot_real
name = sys.argv[1]
problem, x0 = speed_problem(name)
new = sgpmod.composite_decrease
old = lambda problem, x, grad, z: vdot_real(grad, z) + problem.g(x + z) - problem.g(x)
iters = 100; jobs = floor_jobs(problem, x0, iters)
m = FISTA(max_backtracks=0); c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs["fista"] = (c, (m, problem, x0))
for label, cd in [("sgp_bb_three_sums", old), ("sgp_bb_one_sum", new)]:
  sgpmod.composite_decrease = cd
  m = SGP(); c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs[label] = (c, (m, problem, x0))
sgpmod.composite_decrease = new
times = report(jobs, 80, iters)
print("paired one_sum / three_sums", f"{paired_ratio(times['sgp_bb_one_sum'], times['sgp_bb_three_sums']):.3f}")
