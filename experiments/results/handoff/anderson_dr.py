"""Scratch: Anderson acceleration (type II, safeguarded as in SCS) of Douglas-Rachford's z-map."""
import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from experiments.bench.accuracy import first_reached
from jsgp.data import load_images
from jsgp.problems import Task, simulate
from jsgp.solvers import DouglasRachford, solve
name = sys.argv[1]; rate = float(sys.argv[2]); mem = int(sys.argv[3]) if len(sys.argv) > 3 else 5
images = load_images("../shared/data/bsds500", "train", 128, n=3, dtype=np.float64)
dr = DouglasRachford()
for i, image in enumerate(images):
  problem = simulate(Task(name, (128, 128), pattern="uniform", rate=rate), jnp.asarray(image), jax.random.PRNGKey(100 + i))
  ref = reference.reference(problem, dict(tool="oracle", task=name, rate=rate, image=i, split="train"), "out/cache/references", 1e-9, 30000)
  step = jax.jit(lambda s: dr.step(problem, s))
  objx = jax.jit(lambda z: problem.objective(problem.prox(z, dr.parameter(problem, jnp.float64))))
  gapof = lambda F: (F - ref.F) / abs(ref.F)
  s = dr.init(problem, problem.zeros())
  Z, G, gaps = [], [], []
  z = s.z
  for k in range(1500):
    s = s._replace(z=z, z_image=problem.image(z))
    n = step(s)
    gaps.append(gapof(float(objx(n.z))))
    g = np.asarray(n.z).ravel(); zz = np.asarray(z).ravel()
    Z.append(zz); G.append(g); Z, G = Z[-(mem + 1):], G[-(mem + 1):]
    if gaps[-1] < 1e-6: break
    if len(Z) > 1:
      F = np.stack([gg - z_ for gg, z_ in zip(G, Z)], 1)      # residuals f_i = G(z_i) - z_i
      dF = np.diff(F, axis=1); dG = np.diff(np.stack(G, 1), axis=1)
      gamma = np.linalg.lstsq(dF, F[:, -1], rcond=None)[0]
      cand = G[-1] - dG @ gamma
      # safeguard: accept if the residual at the candidate is no larger than the plain step's
      sc = s._replace(z=jnp.asarray(cand.reshape(z.shape)), z_image=problem.image(jnp.asarray(cand.reshape(z.shape))))
      rc = np.linalg.norm(np.asarray(step(sc).z).ravel() - cand)
      z = jnp.asarray(cand.reshape(z.shape)) if rc <= np.linalg.norm(F[:, -1]) else n.z
    else:
      z = n.z
  gaps = np.asarray(gaps)
  base = np.asarray(solve(dr, problem, max_iter=1500, tol=-1).history.objective)
  bg = gapof(base)
  print(name, rate, i, "DR", first_reached(bg, 1e-3), first_reached(bg, 1e-5), "| AA-DR m=%d" % mem, first_reached(gaps, 1e-3), first_reached(gaps, 1e-5), flush=True)
