"""Float32 long runs of every classical method against a float64 reference.

    python -m experiments.float32_check --task=inpainting --size=128 --iters=3000

Prints per method: |reported - true| / true (the objective the solver reports after ``iters``
float32 iterations vs F of its iterate in float64), the final relative gap to the float64
reference F*, the first iterations reaching gaps 1e-3 and 1e-5, and how often F rose.
The reference: FISTA with gradient restart in float64, 20000 iterations, with its fixed-point
residual printed.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from skimage import data as skdata
from skimage import transform

from experiments.bench import reference
from jsgp import policies
from jsgp.problems import Task, simulate
from jsgp.solvers import DRS, FISTA, PGM, SGP, SpaRSA, solve

_TASK = flags.DEFINE_enum("task", "inpainting", ["inpainting", "fourier"], "the task")
_SIZE = flags.DEFINE_integer("size", 128, "image side")
_ITERS = flags.DEFINE_integer("iters", 3000, "float32 iterations per method")
_METHODS = flags.DEFINE_list("methods", None, "subset of the methods (default: all)")

METHODS = {
    "fista_b": FISTA(), "fista": FISTA(max_backtracks=0),
    "fista_restart": FISTA(max_backtracks=0, restart="gradient"),
    "mfista": FISTA(max_backtracks=0, monotone=True), "sgp_abb": SGP(),
    "sgp_bb1": SGP(policies.BarzilaiBorwein("bb1")), "sparsa": SpaRSA(), "pgm": PGM(),
    "drs_safeguarded": DRS(policies.ConstantPolicy(3.0)),
    "drs_relaxation": DRS(policies.ConstantPolicy(3.0), mode="relaxation"),
    "drs_accelerated": DRS(policies.ConstantPolicy(3.0), mode="accelerated"),
}


def main(argv):
  del argv
  jax.config.update("jax_enable_x64", True)
  size, iters = _SIZE.value, _ITERS.value
  image = transform.resize(skdata.camera().astype(np.float64), (size, size), anti_aliasing=True)
  problem = simulate(Task(_TASK.value, (size, size), rate=0.5, lam=0.1),
                     jnp.asarray(image, jnp.float32), jax.random.PRNGKey(0))
  problem64 = reference.to_float64(problem)
  start = time.perf_counter()
  ref = solve(FISTA(max_backtracks=0, restart="gradient"), problem64, max_iter=20000, tol=-1)
  f_star = float(problem64.objective(ref.x))
  fixed = problem64.forward_backward(ref.x, problem64.grad(ref.x), 1 / problem64.lipschitz)
  print(f"{_TASK.value} {size} px: F* {f_star:.10e}, fixed-point residual "
        f"{float(jnp.linalg.norm(fixed - ref.x) / jnp.linalg.norm(ref.x)):.1e} "
        f"({time.perf_counter() - start:.0f} s)", flush=True)
  for name in _METHODS.value or METHODS:
    method = METHODS[name]
    result = solve(method, problem, max_iter=iters, tol=-1)
    reported = np.asarray(result.history.objective, np.float64)
    true = float(problem64.objective(result.x.astype(jnp.float64)))
    gaps = (reported - f_star) / f_star
    first = lambda g: int(np.argmax(gaps <= g)) if np.any(gaps <= g) else None
    print(f"{name:16s} |reported - true|/true {abs(reported[-1] - true) / true:.1e}  gap "
          f"{(true - f_star) / f_star:.1e}  k(1e-3) {first(1e-3)}  k(1e-5) {first(1e-5)}  "
          f"F rose {int(np.sum(np.diff(reported) > 0))} times", flush=True)


if __name__ == "__main__":
  app.run(main)
