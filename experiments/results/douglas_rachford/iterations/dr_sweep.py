"""Iterations of Douglas-Rachford to relative gaps 1e-3 / 1e-5 against t, on BSDS500 *training*
images (the default rule for t is chosen here, and reported on held-out images elsewhere).

python experiments/results/douglas_rachford/iterations/dr_sweep.py TASK RATES SCALES [LAM_MULT]
SCALES: gamma_scale values (the rule's c), each run with gamma_max = 1e9; or, with RHOS=1.5,1.7
in the environment, the default t and these relaxations.
"""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from experiments.bench.accuracy import first_reached
from jsgp.data import load_images
from jsgp.problems import Task, simulate
from jsgp.solvers import DouglasRachford, FISTA, solve
from jsgp.solvers.douglas_rachford import default_gamma

name = sys.argv[1]
rates = [float(r) for r in sys.argv[2].split(",")]
scales = [float(c) for c in sys.argv[3].split(",")]
mult = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
images = load_images("../shared/data/bsds500", "train", 128, n=3, dtype=np.float32)
for rate in rates:
  task = Task(name, (128, 128), pattern="uniform", rate=rate)
  task = task.replace(lam=task.regularization * mult)
  for i, image in enumerate(images):
    problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(100 + i))
    ref = reference.reference(problem, dict(tool="dr_sweep_train", task=name, rate=rate, size=128,
                                            image=i, mult=mult), "out/cache/references", 1e-9, 30000)

    def its(method, max_iter=1500):
      o = np.asarray(solve(method, problem, max_iter=max_iter, tol=-1).history.objective, np.float64)
      gap = (o - ref.F) / abs(ref.F)
      return "/".join(str(first_reached(gap, g)) for g in (1e-3, 1e-5))

    row = [f"MFISTA {its(FISTA(max_backtracks=0, monotone=True), 3000)}"]
    if os.environ.get("RHOS"):
      for rho in [float(r) for r in os.environ["RHOS"].split(",")]:
        row.append(f"rho={rho} {its(DouglasRachford(relaxation=rho))}")
    else:
      for c in scales:
        t = float(default_gamma(problem, c, 1e9) * problem.lipschitz)
        row.append(f"c={c} (tL={t:.3g}) {its(DouglasRachford(gamma_scale=c, gamma_max=1e9))}")
    print(name, rate, i, "  ".join(row), flush=True)
