import sys, numpy as np, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from experiments.bench.accuracy import NORMALIZED_GAP_TASKS, first_reached
from experiments.bench.config import BenchConfig
from experiments.bench.measure import images_for
from jsgp.problems import Task, simulate
from jsgp.solvers import solve, FISTA, DouglasRachford
from jsgp.solvers.douglas_rachford import default_gamma
name = sys.argv[1]; rates = [float(r) for r in sys.argv[2].split(",")]; scales = [float(c) for c in sys.argv[3].split(",")]
gaps = [1e-3, 1e-5] if name not in NORMALIZED_GAP_TASKS else [1e-5, 1e-7]
where = BenchConfig(data_dir="../shared/data/bsds500", ct_data_dir="../shared/data/ct/covid19_ny_sbu/png16", size=128, ct_size=128)
images = images_for(name, where, 3, [], held_out=True)[:3]
for rate in rates:
  task = Task(name, (128, 128), pattern="uniform", **({"rate": rate} if name in ("inpainting", "fourier") else {}))
  MULT = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
  task = task.replace(lam=task.regularization * MULT)
  for i, image in enumerate(images):
    problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(i))
    ref = reference.reference(problem, (dict(tool="policy_iterations", task=name, rate=rate if name in ("inpainting","fourier") else None, size=128, image=i) if MULT == 1.0 else dict(tool="dr_real", task=name, rate=rate, size=128, image=i, mult=MULT)), "out/cache/references", 1e-9, 30000)
    def its(method):
      o = np.asarray(solve(method, problem, max_iter=3000, tol=-1).history.objective, np.float64)
      scale = o[0] - ref.F if name in NORMALIZED_GAP_TASKS else abs(ref.F)
      return "/".join(str(first_reached((o - ref.F) / scale, g)) for g in gaps)
    row = [f"MFISTA {its(FISTA(max_backtracks=0, monotone=True))}"]
    for c in scales:
      row.append(f"c={c} (t={float(default_gamma(problem, c, 300.0)):.3g}) {its(DouglasRachford(gamma_scale=c))}")
    print(name, rate, i, "  ".join(row), flush=True)
