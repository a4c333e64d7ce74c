import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from experiments.bench import reference
from experiments.bench.accuracy import first_reached
from jsgp.data import load_images
from jsgp.problems import Task, simulate
from jsgp.solvers import DouglasRachford

name = sys.argv[1]; rate = float(sys.argv[2])
images = load_images("../shared/data/bsds500", "train", 128, n=3, dtype=np.float64)
dr = DouglasRachford()
def run(problem, x0, consistent, n=600):
  st = dr.init(problem, x0)
  if consistent:
    t = st.stepsize
    g = problem.synthesis.adjoint(problem.measurement.adjoint(st.residual))
    gi = problem.measurement.adjoint(st.residual)
    st = st._replace(z=x0 - t * g, z_image=problem.image(x0) - t * gi)
  def body(s, _):
    s = dr.step(problem, s); return s, s.objective
  _, obj = jax.lax.scan(body, st, None, length=n)
  return np.concatenate([[float(st.objective)], np.asarray(obj)])
for i, image in enumerate(images):
  problem = simulate(Task(name, (128, 128), pattern="uniform", rate=rate), jnp.asarray(image), jax.random.PRNGKey(100 + i))
  ref = reference.reference(problem, dict(tool="oracle", task=name, rate=rate, image=i), "out/cache/references", 1e-9, 30000)
  xs = jnp.asarray(ref.x); xt = problem.synthesis.adjoint(jnp.asarray(image))
  def its(o): g = (o - ref.F)/abs(ref.F); return f"{first_reached(g,1e-2)}/{first_reached(g,1e-3)}/{first_reached(g,1e-5)} g0={g[0]:.2g}"
  key = jax.random.PRNGKey(7)
  noisy = lambda s: xs + s * jnp.linalg.norm(xs) / np.sqrt(xs.size) * jax.random.normal(key, xs.shape)
  rel = lambda x: float(jnp.linalg.norm(x - xs) / jnp.linalg.norm(xs))
  print(name, rate, i, "zero", its(run(problem, jnp.zeros_like(xs), False)),
        "| true(rel %.2f) incons" % rel(xt), its(run(problem, xt, False)), "cons", its(run(problem, xt, True)),
        "| x*+5%%noise", its(run(problem, noisy(0.05), True)), "| x*+20%", its(run(problem, noisy(0.2), True)), flush=True)
