"""jsgp: l1-wavelet imaging inverse problems in JAX, solved by classical first-order methods and
by DRS with learned stepsize policies that keep the classical convergence guarantee.

The names most programs need::

  from jsgp import Task, simulate, make_problem, FISTA, DRS, solve, pretrained
  problem = simulate(Task("inpainting", (128, 128), rate=0.5), image, key)
  result = solve(pretrained.solver("inpainting"), problem, max_iter=300)

Subpackages: ``jsgp.operators`` (measurement and wavelet operators), ``jsgp.problems``,
``jsgp.solvers`` (methods, the driver and its protocol), ``jsgp.policies`` / ``jsgp.policy_nets``
(stepsize rules and networks), ``jsgp.pretrained`` (the shipped policies), ``jsgp.training``,
``jsgp.data``.
"""
from jsgp import pretrained
from jsgp.problems import L1Problem, Task, make_problem, simulate, simulate_batch
from jsgp.solvers import (DRS, FISTA, PGM, SGP, Result, SpaRSA, run, run_batch, solve,
                          status_name)

__version__ = "0.1.0"
__all__ = ["pretrained", "L1Problem", "Task", "make_problem", "simulate", "simulate_batch", "DRS",
           "FISTA", "PGM", "SGP", "Result", "SpaRSA", "run", "run_batch", "solve", "status_name"]
