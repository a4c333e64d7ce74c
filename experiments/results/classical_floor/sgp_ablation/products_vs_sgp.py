"""Issue 26, eleventh session: SGP-BB as shipped against a variant that forms the BB inner products
in the step (no step / gradient differences carried) and carries g(x) (sgp2), or not (sgp2_nog);
per-iteration time x the fused floor, interleaved, 60 rounds. Run from the repository root:
  python experiments/results/classical_floor/sgp_ablation/products_vs_sgp.py inpainting 60
"""
import sys
import jax, jax.numpy as jnp, numpy as np
import os; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import floor_jobs, report, speed_problem
from experiments.bench.timing import compile_fn, paired_ratio, solve_fn
from jsgp.solvers import SGP, FISTA, run
from sgp_products import SGP2
name = sys.argv[1]
problem, x0 = speed_problem(name)
iters = 100
ms = {"fista": FISTA(max_backtracks=0), "sgp": SGP(), "sgp2": SGP2(), "sgp2_nog": SGP2(carry_g=False)}
r = {k: run(m, problem, x0, 100) for k, m in ms.items()}
print({k: float(v.history.objective[-1]) for k, v in r.items()}, "true", float(problem.objective(r["sgp2"].x)))
jobs = floor_jobs(problem, x0, iters)
for k, m in ms.items():
  c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs[k] = (c, (m, problem, x0))
times = report(jobs, int(sys.argv[2]), iters)
