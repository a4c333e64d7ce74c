"""Eleventh session: the Armijo reference Delta of float32 SGP-BB iterates (128 px, k = 50 / 200 / 1000) against float64:
three sums (<grad, z> + g(x + z) - g(x)) and the one entrywise sum jsgp.solvers.linesearch.composite_decrease forms.
  python experiments/results/classical_floor/sgp_ablation/delta_accuracy.py
"""
import jax, jax.numpy as jnp, numpy as np
from experiments.bench.config import BenchConfig
from experiments.bench.measure import task_of, images_for
from jsgp.problems import simulate, to_float64
from jsgp.solvers import SGP, run
from jsgp.solvers.linesearch import composite_decrease
from jsgp.operators import vdot_real
jax.config.update("jax_enable_x64", True)
for name in ("inpainting", "fourier"):
  cfg = BenchConfig(size=128); task = task_of(name, cfg)
  image = images_for(name, cfg, 1, [])[0]
  problem = simulate(task, jnp.asarray(image, jnp.float32), jax.random.PRNGKey(0))
  p64 = to_float64(problem)
  for k in (50, 200, 1000):
    st = run(SGP(), problem, problem.zeros(), k, -1.0).state
    z = problem.forward_backward(st.x, st.grad, st.stepsize) - st.x
    old = vdot_real(st.grad, z) + problem.g(st.x + z) - problem.g(st.x)  # the form before
    new = composite_decrease(problem, st.x, st.grad, z)
    x64, z64 = st.x.astype(jnp.float64), z.astype(jnp.float64)
    exact = vdot_real(p64.grad(x64), z64) + p64.g(x64 + z64) - p64.g(x64)
    print(name, k, f"exact {float(exact):.4e}  three sums {float(old):.4e} (rel err {abs(float(old)-float(exact))/abs(float(exact)):.1e})  one sum {float(new):.4e} (rel err {abs(float(new)-float(exact))/abs(float(exact)):.1e})")
