"""Peers of jsgp's solvers on jsgp's own operators (``problem.op.apply`` / ``adjoint``, ``y``,
``lam``, ``lipschitz``): a plain textbook FISTA with Beck-Teboulle backtracking (written here, a
method of jsgp's driver shape), jaxopt's accelerated ``ProximalGradient`` (fixed step ``1/L``, and
its own line search) when jaxopt is importable, and SCICO (``scico_peer.py``, run in a
subprocess with another interpreter since SCICO pins an older jax).
"""
from __future__ import annotations

import os
import subprocess
from typing import Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import struct

from jsgp.operators import sum_squares, vdot_real
from jsgp.prox import soft_threshold

INSTALL = {"jaxopt": "pip install jaxopt   (or: pip install -e '.[peers]')",
           "scico": "a Python with scico (pip install scico), given as --scico_python=PATH"}


class FistaBTState(NamedTuple):
  x: jax.Array           # (Hc, Wc) iterate x_k
  x_prev: jax.Array      # x_{k-1}
  t: jax.Array           # momentum parameter t_k
  lipschitz: jax.Array   # current L_k
  objective: jax.Array   # F(x_k)
  stepsize: jax.Array    # 1 / L_k
  backtracks: jax.Array  # increases of L in the last step


@struct.dataclass
class FistaBT:
  """Beck & Teboulle (2009) FISTA with backtracking, as in the paper: every iteration computes
  ``A z`` and ``A^T (A z - y)`` at the extrapolated point and ``A p`` for each trial ``p`` until
  ``f(p) <= f(z) + <p - z, grad f(z)> + L/2 ||p - z||^2`` (``L <- eta L``, from ``L_0 =
  problem.lipschitz``); nothing is carried by linearity."""

  eta: float = struct.field(pytree_node=False, default=2.0)
  max_trials: int = struct.field(pytree_node=False, default=40)

  def init(self, problem, x0) -> FistaBTState:
    objective = problem.f(x0) + problem.g(x0)
    one = jnp.ones((), objective.dtype)
    return FistaBTState(x0, x0, one, problem.lipschitz * one, objective,
                        1.0 / problem.lipschitz * one, jnp.int32(0))

  def step(self, problem, s: FistaBTState) -> FistaBTState:
    t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * s.t * s.t))
    z = s.x + ((s.t - 1.0) / t_next) * (s.x - s.x_prev)
    rz = problem.op.apply(z) - problem.y
    fz = 0.5 * sum_squares(rz)
    grad = problem.op.adjoint(rz)

    def trial(lipschitz):
      p = soft_threshold(z - grad / lipschitz, problem.lam / lipschitz)
      d = p - z
      fp = 0.5 * sum_squares(problem.op.apply(p) - problem.y)
      return p, fp, fp <= fz + vdot_real(d, grad) + 0.5 * lipschitz * sum_squares(d)

    def body(c):
      lipschitz, _, _, _, i = c
      lipschitz = self.eta * lipschitz
      return (lipschitz,) + trial(lipschitz) + (i + 1,)

    lipschitz, p, fp, _, i = jax.lax.while_loop(
        lambda c: ~c[3] & (c[4] < self.max_trials), body,
        (s.lipschitz,) + trial(s.lipschitz) + (jnp.int32(0),))
    return FistaBTState(p, s.x, t_next, lipschitz, fp + problem.g(p), 1.0 / lipschitz, i)


# ------------------------------------------------------------------------------------------------
# jaxopt.

def jaxopt_available() -> bool:
  try:
    import jaxopt  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def jaxopt_solver(problem, maxiter: int, linesearch: bool):
  """``jaxopt.ProximalGradient(acceleration=True)`` on ``problem.f`` and ``prox_lasso``: the fixed
  step ``1/L`` or (``linesearch``) jaxopt's backtracking line search (``stepsize <= 0``)."""
  import jaxopt  # pylint: disable=import-outside-toplevel
  step = 0.0 if linesearch else 1.0 / problem.lipschitz
  return jaxopt.ProximalGradient(
      fun=lambda x, problem: problem.f(x), prox=jaxopt.prox.prox_lasso,
      stepsize=step if linesearch else (lambda _: step), maxiter=maxiter, tol=-1.0,
      acceleration=True, jit=True, implicit_diff=False)


class Contender(NamedTuple):
  """One solver of the accuracy benchmark, as pure functions to jit.

  ``trace(problem, problem64, x0, image, steps) -> (F (steps+1,), NMSE dB (steps+1,))``: the
  float64 objective of every iterate (fresh residual) and its NMSE; ``solve(k)(problem, x0) ->
  x_k``: exactly ``k`` iterations, what is timed. ``steps`` and ``k`` are static.
  """

  name: str
  label: str
  family: str  # "jsgp" or "peer"
  trace: Callable
  solve: Callable[[int], Callable]


def jaxopt_contender(name: str, label: str, linesearch: bool, metrics: Callable) -> Contender:
  """``metrics(problem64, image, x) -> (F, NMSE)``."""

  def trace(problem, problem64, x0, image, steps):
    solver = jaxopt_solver(problem, steps, linesearch)
    state = solver.init_state(x0, hyperparams_prox=problem.lam, problem=problem)

    def body(carry, _):
      x, state = carry
      x, state = solver.update(x, state, hyperparams_prox=problem.lam, problem=problem)
      return (x, state), metrics(problem64, image, x)

    first = metrics(problem64, image, x0)
    _, rest = jax.lax.scan(body, (x0, state), None, length=steps)
    return tuple(jnp.concatenate([a[None], b]) for a, b in zip(first, rest))

  def solve(k):
    def run(problem, x0):
      return jaxopt_solver(problem, k, linesearch).run(x0, hyperparams_prox=problem.lam,
                                                       problem=problem).params
    return run

  return Contender(name, label, "peer", trace, solve)


# ------------------------------------------------------------------------------------------------
# SCICO (another interpreter).

SCICO_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scico_peer.py")


def scico_missing(python: str) -> Optional[str]:
  """None if ``python`` imports scico, else why not."""
  if not python:
    return "no --scico_python given"
  if not os.path.exists(python):
    return f"{python} does not exist"
  proc = subprocess.run([python, "-c", "import scico, jax; print(scico.__version__, jax.__version__)"],
                        capture_output=True, text=True, timeout=300, check=False)
  if proc.returncode:
    return f"{python} cannot import scico: {proc.stderr.strip().splitlines()[-1:]}"
  return None


def scico_versions(python: str) -> Dict[str, str]:
  proc = subprocess.run([python, "-c", "import scico, jax; print(scico.__version__, jax.__version__)"],
                        capture_output=True, text=True, timeout=300, check=False)
  scico_v, jax_v = (proc.stdout.split() + ["?", "?"])[:2]
  return {"scico": scico_v, "jax": jax_v}
