import sys, numpy as np, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from experiments.bench.accuracy import first_reached, problem_of
from experiments.bench.config import BenchConfig
from experiments.bench.measure import images_for
from jsgp.problems import Task
from jsgp.solvers import solve, FISTA, DouglasRachford
from jsgp.solvers.douglas_rachford import default_gamma
rate = float(sys.argv[1])
where = BenchConfig(data_dir="../shared/data/bsds500", size=128)
images = images_for("fourier", where, 3, [], held_out=True)[:3]
task = Task("fourier", (128, 128), pattern="uniform", rate=rate)
for i, image in enumerate(images):
  problem = problem_of(task, np.asarray(image, np.float64), 0, i)
  ref = reference.reference(problem, dict(tool="dr_benchmask", rate=rate, image=i), "out/cache/references", 1e-9, 30000)
  def its(m):
    o = np.asarray(solve(m, problem, max_iter=3000, tol=-1).history.objective, np.float64)
    return "/".join(str(first_reached((o - ref.F) / abs(ref.F), g)) for g in [1e-3, 1e-5])
  t0 = float(default_gamma(problem, 0.04, 300.0))
  print(rate, i, f"t0={t0:.1f}", "MFISTA", its(FISTA(max_backtracks=0, monotone=True)), "  ".join(f"x{m}: {its(DouglasRachford(gamma=t0*m))}" for m in [0.5, 1.0, 2.0]), " rho1:", its(DouglasRachford(relaxation=1.0)), flush=True)
