"""Issue 26, eleventh session: SGP with a constant step 1/L and three forms of the Armijo reference value:
Delta = <grad, z> + g(x + z) - g(x) (the algorithm, ALGORITHMS.md; "const"), -L ||z||^2 (the prox-gradient bound, "const_zz"),
and <grad, z> alone ("const_lin", not a valid test: timing only). Run from the repository root:
  python experiments/results/classical_floor/sgp_ablation/composite_decrease_forms.py inpainting
"""
import sys, jax, jax.numpy as jnp
import os; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import floor_jobs, report, speed_problem
from experiments.bench.timing import compile_fn, paired_ratio, solve_fn
from jsgp.solvers import SGP, FISTA
from jsgp.solvers import sgp as sgpmod
from jsgp.operators import vdot_real
from jsgp import policies
name = sys.argv[1]
problem, x0 = speed_problem(name)
shipped = sgpmod.composite_decrease
orig = lambda problem, x, grad, z: vdot_real(grad, z) + problem.g(x + z) - problem.g(x)  # the form when measured
zz = lambda problem, x, grad, z: -problem.lipschitz * vdot_real(z, z)
nog = lambda problem, x, grad, z: vdot_real(grad, z)  # only the linear part
iters = 100; jobs = floor_jobs(problem, x0, iters)
m = FISTA(max_backtracks=0); c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs["fista"] = (c, (m, problem, x0))
for label, cd in [("const", orig), ("const_zz", zz), ("const_lin", nog), ("const_fused", shipped)]:
  sgpmod.composite_decrease = cd
  m = SGP(policy=policies.ConstantPolicy())
  c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs[label] = (c, (m, problem, x0))
sgpmod.composite_decrease = shipped
times = report(jobs, 60, iters)
