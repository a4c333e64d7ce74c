import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from experiments.bench.accuracy import first_reached
from jsgp.data import load_images
from jsgp.problems import Task, simulate
from jsgp.solvers import DouglasRachford
from jsgp.prox import soft_threshold

name = sys.argv[1]; rate = float(sys.argv[2])
images = load_images("../shared/data/bsds500", "train", 128, n=3, dtype=np.float64)
dr = DouglasRachford()

@jax.jit
def run(problem, S, n=600):
  st = dr.init(problem, problem.zeros())
  def step(state, _):
    t = state.stepsize
    x = S * soft_threshold(state.z, problem.lam * t)
    x_image = problem.image(x)
    residual = problem.measurement.apply(x_image) - problem.y
    objective = problem.f_from_residual(residual) + problem.g(x)
    u, u_image = problem.normal_solve_imaged(2.0 * x - state.z, 2.0 * x_image - state.z_image, t)
    u, u_image = u + state.offset, u_image + state.offset_image
    rho = state.relaxation
    st = state._replace(x=x, z=state.z + rho * (u - x), z_image=state.z_image + rho * (u_image - x_image))
    return st, objective
  _, obj = jax.lax.scan(step, st, None, length=n)
  return jnp.concatenate([st.objective[None], obj])

for i, image in enumerate(images):
  problem = simulate(Task(name, (128, 128), pattern="uniform", rate=rate), jnp.asarray(image), jax.random.PRNGKey(100 + i))
  ref = reference.reference(problem, dict(tool="oracle", task=name, rate=rate, image=i), "out/cache/references", 1e-9, 30000)
  xs = jnp.asarray(ref.x); supp = (xs != 0)
  def its(o): g = (np.asarray(o) - ref.F)/abs(ref.F); return f"{first_reached(g,1e-3)}/{first_reached(g,1e-5)}"
  key = jax.random.PRNGKey(3)
  extra = lambda p: (supp | (jax.random.uniform(key, xs.shape) < p)).astype(xs.dtype)
  # near-support: coefficients with |A^T(Ax*-y)| >= (1-eps) lam (the dual-certificate 'almost active' set)
  corr = jnp.abs(problem.grad(xs)) / problem.lam
  near = lambda e: (corr >= 1 - e).astype(xs.dtype)
  out = [f"full {its(run(problem, jnp.ones_like(xs)))}", f"oracle {its(run(problem, supp.astype(xs.dtype)))}"]
  for p in (0.1, 0.3):
    out.append(f"supp+{int(p*100)}%zeros {its(run(problem, extra(p)))}")
  for e in (0.1, 0.3, 0.5):
    out.append(f"|grad|>={1-e:.1f}lam (size {int(near(e).sum())}) {its(run(problem, near(e)))}")
  print(name, rate, i, f"nnz* {int(supp.sum())}/{xs.size}", " | ".join(out), flush=True)
