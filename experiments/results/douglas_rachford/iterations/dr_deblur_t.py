"""Deblurring (lam = 1e-5): Douglas-Rachford's iterations to normalised gap 1e-5 / 1e-7 against an
explicit t L, on 3 BSDS500 training images, float32 problems, float64 references.

python experiments/results/douglas_rachford/iterations/dr_deblur_t.py TL[,TL...]
"""
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

tls = [float(v) for v in sys.argv[1].split(",")]
images = load_images("../shared/data/bsds500", "train", 128, n=3, dtype=np.float32)
task = Task("deblur", (128, 128))
for i, image in enumerate(images):
  problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(100 + i))
  ref = reference.reference(problem, dict(tool="dr_sweep_train", task="deblur", size=128, image=i),
                            "out/cache/references", 1e-9, 30000)

  def its(method, max_iter=1500):
    o = np.asarray(solve(method, problem, max_iter=max_iter, tol=-1).history.objective, np.float64)
    gap = (o - ref.F) / (o[0] - ref.F)
    return "/".join(str(first_reached(gap, g)) for g in (1e-5, 1e-7))

  row = [f"MFISTA {its(FISTA(max_backtracks=0, monotone=True), 3000)}", f"default {its(DouglasRachford())}"]
  for tl in tls:
    row.append(f"tL={tl:g} {its(DouglasRachford(gamma=tl / float(problem.lipschitz)))}")
  print("deblur", i, "  ".join(row), flush=True)
