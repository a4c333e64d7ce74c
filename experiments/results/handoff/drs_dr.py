import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from experiments.bench.accuracy import first_reached
from jsgp.data import load_images
from jsgp.problems import Task, simulate
from jsgp.solvers import DouglasRachford, DRS, solve
from jsgp import pretrained
name = sys.argv[1]; rate = float(sys.argv[2]); split = sys.argv[3] if len(sys.argv) > 3 else "train"
Hs = [int(h) for h in (sys.argv[4] if len(sys.argv) > 4 else "2,3,4").split(",")]
images = load_images("../shared/data/bsds500", split, 128, n=3, dtype=np.float32)
dr = DouglasRachford()
for i, image in enumerate(images):
  task = Task(name, (128, 128), pattern="uniform", **({"rate": rate} if rate < 1 else {}))
  problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(100 + i))
  ref = reference.reference(problem, dict(tool="oracle", task=name, rate=rate, image=i, split=split), "out/cache/references", 1e-9, 30000)
  norm = abs(ref.F) if name in ("inpainting", "fourier") else None
  def its(o):
    o = np.asarray(o, np.float64)
    g = (o - ref.F)/(abs(ref.F) if norm else (o[0] - ref.F))
    return "/".join(str(first_reached(g, t)) for t in ((1e-2, 1e-3, 1e-5) if norm else (1e-3, 1e-5, 1e-7)))
  row = [f"DR {its(solve(dr, problem, max_iter=800, tol=-1).history.objective)}"]
  for mode in ("safeguarded", "accelerated"):
    for H in Hs:
      m = pretrained.solver(name, mode=mode, max_policy_steps=H, **({"handoff": dr} if mode == "safeguarded" else {}))
      if mode == "accelerated":
        r = solve(m, problem, max_iter=H, tol=-1)
        o = np.concatenate([np.asarray(r.history.objective), np.asarray(solve(dr, problem, x0=r.x, max_iter=800, tol=-1).history.objective)])
      else:
        r = solve(m, problem, max_iter=800, tol=-1); o = r.history.objective
      row.append(f"{mode[:4]}{H} {its(o)}")
  print(name, rate, i, " | ".join(row), flush=True)
