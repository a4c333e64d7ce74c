"""Scratch: is a primal-dual method (Chambolle-Pock / PDHG) faster than MFISTA on CT?"""
import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from experiments.bench.accuracy import first_reached
from jsgp.data import load_ct_slices
from jsgp.problems import Task, simulate
from jsgp.solvers import FISTA, SpaRSA, solve
size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
imgs = load_ct_slices("../shared/data/ct/covid19_ny_sbu/png16", size, n=20)[16:19]
def pdhg(problem, ratio, n):
  A = problem.op; L = problem.lipschitz  # ||A||^2
  tau = ratio / jnp.sqrt(L); sigma = 1.0 / (ratio * jnp.sqrt(L)) * 0.99
  x = problem.zeros(); xb = x; p = jnp.zeros_like(problem.y)
  def body(c, _):
    x, xb, p = c
    p = (p + sigma * (A.apply(xb) - problem.y)) / (1 + sigma)    # prox of F*(p) = |p|^2/2 + <p,y>
    xn = problem.prox(x - tau * A.adjoint(p), tau)
    xb = 2 * xn - x
    return (xn, xb, p), problem.objective(xn)
  _, obj = jax.lax.scan(body, (x, xb, p), None, length=n)
  return np.concatenate([[float(problem.objective(x))], np.asarray(obj)])
for i, im in enumerate(imgs):
  problem = simulate(Task("ct", (size, size)), jnp.asarray(im * 1.0), jax.random.PRNGKey(i))
  ref = reference.reference(problem, dict(tool="pdhg", size=size, image=i), "out/cache/references", 1e-9, 30000)
  def its(o):
    o = np.asarray(o, np.float64); g = (o - ref.F) / (o[0] - ref.F)
    return "/".join(str(first_reached(g, t)) for t in (1e-3, 1e-5, 1e-7))
  row = [f"MFISTA {its(solve(FISTA(max_backtracks=0, monotone=True), problem, max_iter=3000, tol=-1).history.objective)}",
         f"SpaRSA {its(solve(SpaRSA(), problem, max_iter=3000, tol=-1).history.objective)}"]
  for r in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0):
    row.append(f"PDHG r={r} {its(pdhg(problem, r, 3000))}")
  print(size, i, " | ".join(row), flush=True)
