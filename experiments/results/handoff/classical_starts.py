import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from experiments.bench.accuracy import first_reached
from jsgp.data import load_images
from jsgp.problems import Task, simulate
from jsgp.solvers import DouglasRachford, FISTA, solve
name = sys.argv[1]; rate = float(sys.argv[2]); split = sys.argv[3] if len(sys.argv) > 3 else "train"
images = load_images("../shared/data/bsds500", split, 128, n=3, dtype=np.float32)
dr = DouglasRachford()
for i, image in enumerate(images):
  problem = simulate(Task(name, (128, 128), pattern="uniform", rate=rate), jnp.asarray(image), jax.random.PRNGKey(100 + i))
  ref = reference.reference(problem, dict(tool="oracle", task=name, rate=rate, image=i, split=split), "out/cache/references", 1e-9, 30000)
  def its(o):
    g = (np.asarray(o, np.float64) - ref.F)/abs(ref.F)
    return "/".join(str(first_reached(g, t)) for t in (1e-2, 1e-3, 1e-5))
  x_bp = problem.synthesis.adjoint(problem.initial_image())
  row = [f"DR0 {its(solve(dr, problem, max_iter=800, tol=-1).history.objective)}",
         f"DR(bp) {its(solve(dr, problem, x0=x_bp, max_iter=800, tol=-1).history.objective)}",
         f"DR(bp/rate) {its(solve(dr, problem, x0=x_bp/rate, max_iter=800, tol=-1).history.objective)}"]
  for H in (1, 3):
    r = solve(FISTA(max_backtracks=0, monotone=True), problem, max_iter=H, tol=-1)
    o = np.concatenate([np.asarray(r.history.objective), np.asarray(solve(dr, problem, x0=r.x, max_iter=800, tol=-1).history.objective)])
    row.append(f"MF{H}+DR {its(o)}")
  print(name, rate, i, " | ".join(row), flush=True)
