"""Issue 26, eleventh session: SGP-BB as shipped against a variant that forms the BB inner products
in the step (no step / gradient differences carried) and carries g(x) (sgp2), or not (sgp2_nog);
per-iteration time x the fused floor, interleaved, 60 rounds. Run from the repository root:
  python experiments/results/classical_floor/sgp_ablation/products_vs_sgp.py inpainting 60
"""
import sys; import os; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax, jax.numpy as jnp, numpy as np
from experiments.bench.config import BenchConfig
from experiments.bench.measure import task_of, images_for
from experiments.bench.timing import compile_fn, interleaved, solve_fn, floor_fn, median, paired_ratio
from jsgp.problems import simulate
from jsgp.solvers import SGP, FISTA, run
from sgp_products import SGP2
name = sys.argv[1]
cfg = BenchConfig(size=128); task = task_of(name, cfg)
image = images_for(name, cfg, 1, [])[0]
problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(0))
x0 = jnp.zeros(problem.op.in_shape, image.dtype)
iters = 100
ms = {"fista": FISTA(max_backtracks=0), "sgp": SGP(), "sgp2": SGP2(), "sgp2_nog": SGP2(carry_g=False)}
r = {k: run(m, problem, x0, 100) for k, m in ms.items()}
print({k: float(v.history.objective[-1]) for k, v in r.items()}, "true", float(problem.objective(r["sgp2"].x)))
jobs = {}
c, _ = compile_fn(floor_fn(iters), problem, x0); jobs["floor"] = (c, (problem, x0))
for k, m in ms.items():
  c, _ = compile_fn(solve_fn(iters), m, problem, x0); jobs[k] = (c, (m, problem, x0))
times, _ = interleaved(jobs, int(sys.argv[2]))
for k in jobs:
  print(k, f"{1e3*median(times[k])/iters:.3f} ms/it", f"x floor {paired_ratio(times[k], times['floor']):.3f}")
