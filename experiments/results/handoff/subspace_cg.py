import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from jsgp.data import load_images
from jsgp.problems import Task, simulate
from jsgp.solvers import DouglasRachford, run

name = sys.argv[1]; rate = float(sys.argv[2])
images = load_images("../shared/data/bsds500", "train", 128, n=2, dtype=np.float64)
dr = DouglasRachford()

def cg(H, b, u0, n):
  r = b - H(u0); p = r; rs = jnp.vdot(r, r)
  def body(c, _):
    u, r, p, rs = c
    Hp = H(p); a = rs / jnp.vdot(p, Hp)
    u = u + a * p; r = r - a * Hp; rn = jnp.vdot(r, r)
    p = r + (rn / rs) * p
    return (u, r, p, rn), jnp.sqrt(rn)
  (u, *_), res = jax.lax.scan(body, (u0, r, p, rs), None, length=n)
  return u, res

@jax.jit
def subspace(problem, x, n_cg=40):
  S = (x != 0).astype(x.dtype); s = jnp.sign(x)
  A, At = problem.op.apply, problem.op.adjoint
  H = lambda v: S * At(A(S * v))
  b = S * (At(problem.y) - problem.lam * s)
  us = []
  u = x
  outs = []
  for n in (5, 10, 20, 40):
    u_n, res = cg(H, b, x, n)
    flips = jnp.sum((jnp.sign(u_n) != s) & (S > 0))
    outs.append((problem.objective(u_n), flips))
  return outs

for i, image in enumerate(images):
  problem = simulate(Task(name, (128, 128), pattern="uniform", rate=rate), jnp.asarray(image), jax.random.PRNGKey(100 + i))
  ref = reference.reference(problem, dict(tool="oracle", task=name, rate=rate, image=i), "out/cache/references", 1e-9, 30000)
  gap = lambda F: (float(F) - ref.F) / abs(ref.F)
  nnz_star = int(jnp.sum(jnp.asarray(ref.x) != 0))
  print(f"== {name} {rate} image {i}: nnz* {nnz_star}")
  for k in (10, 20, 30, 45, 60, 90):
    res = run(dr, problem, problem.zeros(), k, -1.0)
    x = res.x
    S = x != 0; Sstar = jnp.asarray(ref.x) != 0
    wrong = int(jnp.sum(S != Sstar))
    outs = subspace(problem, x)
    print(f" DR k={k:3d} gap {gap(res.history.objective[k]):.2e} supp_err {wrong:5d} nnz {int(S.sum())} | CG 5/10/20/40: " +
          " ".join(f"{gap(F):.2e}({int(fl)})" for F, fl in outs), flush=True)
