"""Eleventh session: SGP-BB per iteration with the Armijo reference Delta as three sums (before) and as one entrywise
sum (composite_decrease since), interleaved in one run, 80 rounds.
  python experiments/results/classical_floor/sgp_ablation/delta_forms_bb.py inpainting
"""
import sys, jax, jax.numpy as jnp
from experiments.bench.config import BenchConfig
from experiments.bench.measure import task_of, images_for
from experiments.bench.timing import compile_fn, interleaved, solve_fn, floor_fn, median, paired_ratio
from jsgp.problems import simulate
from jsgp.solvers import SGP, FISTA
from jsgp.solvers import sgp as sgpmod
from jsgp.operators import vdot_real
name = sys.argv[1]
cfg = BenchConfig(size=128); task = task_of(name, cfg)
image = images_for(name, cfg, 1, [])[0]
problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(0))
x0 = jnp.zeros(problem.op.in_shape, image.dtype)
new = sgpmod.composite_decrease
old = lambda problem, x, grad, z: vdot_real(grad, z) + problem.g(x + z) - problem.g(x)
iters = 100; jobs = {}
c, _ = compile_fn(floor_fn(iters), problem, x0); jobs["floor"] = (c, (problem, x0))
m = FISTA(max_backtracks=0); c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs["fista"] = (c, (m, problem, x0))
for label, cd in [("sgp_bb_three_sums", old), ("sgp_bb_one_sum", new)]:
  sgpmod.composite_decrease = cd
  m = SGP(); c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs[label] = (c, (m, problem, x0))
sgpmod.composite_decrease = new
times, _ = interleaved(jobs, 80)
for k in jobs: print(k, f"{1e3*median(times[k])/iters:.3f} ms/it", f"x floor {paired_ratio(times[k], times['floor']):.3f}")
print("paired one_sum / three_sums", f"{paired_ratio(times['sgp_bb_one_sum'], times['sgp_bb_three_sums']):.3f}")
