"""Issue 26, eleventh session: SGP with a constant step 1/L and three forms of the Armijo reference value:
Delta = <grad, z> + g(x + z) - g(x) (the algorithm, ALGORITHMS.md; "const"), -L ||z||^2 (the prox-gradient bound, "const_zz"),
and <grad, z> alone ("const_lin", not a valid test: timing only). Run from the repository root:
  python experiments/results/classical_floor/sgp_ablation/composite_decrease_forms.py inpainting
"""
import sys, jax, jax.numpy as jnp
from experiments.bench.config import BenchConfig
from experiments.bench.measure import task_of, images_for
from experiments.bench.timing import compile_fn, interleaved, solve_fn, floor_fn, median, paired_ratio
from jsgp.problems import simulate
from jsgp.solvers import SGP, FISTA
from jsgp.solvers import sgp as sgpmod
from jsgp.operators import vdot_real
from jsgp import policies
name = sys.argv[1]
cfg = BenchConfig(size=128); task = task_of(name, cfg)
image = images_for(name, cfg, 1, [])[0]
problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(0))
x0 = jnp.zeros(problem.op.in_shape, image.dtype)
shipped = sgpmod.composite_decrease
orig = lambda problem, x, grad, z: vdot_real(grad, z) + problem.g(x + z) - problem.g(x)  # the form when measured
zz = lambda problem, x, grad, z: -problem.lipschitz * vdot_real(z, z)
nog = lambda problem, x, grad, z: vdot_real(grad, z)  # only the linear part
iters = 100; jobs = {}
c, _ = compile_fn(floor_fn(iters), problem, x0); jobs["floor"] = (c, (problem, x0))
m = FISTA(max_backtracks=0); c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs["fista"] = (c, (m, problem, x0))
for label, cd in [("const", orig), ("const_zz", zz), ("const_lin", nog), ("const_fused", shipped)]:
  sgpmod.composite_decrease = cd
  m = SGP(policy=policies.ConstantPolicy())
  c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs[label] = (c, (m, problem, x0))
sgpmod.composite_decrease = shipped
times, _ = interleaved(jobs, 60)
for k in jobs: print(k, f"{1e3*median(times[k])/iters:.3f} ms/it", f"x floor {paired_ratio(times[k], times['floor']):.3f}")
