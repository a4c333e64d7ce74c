"""The method protocol: a user-written method runs through solve, the batched runner and the
unrolled (differentiable) mode; the driver reports why a run stopped and stops a diverged one;
every method's settings are checked when it is built."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from skimage import data as skdata
from skimage import transform

from jsgp.problems import Task, simulate, simulate_batch
from jsgp.solvers import (CONVERGED, DRS, FISTA, MAX_ITER, NON_FINITE, SGP, Method, SpaRSA, run,
                          solve, status_name)

SHAPE = (32, 32)


def _image():
  return jnp.asarray(transform.resize(skdata.camera().astype(np.float64), SHAPE,
                                      anti_aliasing=True))


def _problem(lam=5.0):
  return simulate(Task("inpainting", SHAPE, rate=0.5, lam=lam), _image(), jax.random.PRNGKey(3))


# -- a method as a user would write it: relaxed proximal gradient, a dozen lines -----------------
class RelaxedState(NamedTuple):
  x: jax.Array
  objective: jax.Array
  stepsize: jax.Array
  backtracks: jax.Array


@struct.dataclass
class RelaxedPGM:
  relax: float = 1.5  # x + relax (T(x) - x), T the 1/L forward-backward map (Krasnoselskii-Mann)

  def init(self, problem, x0):
    return RelaxedState(x0, problem.objective(x0), 1.0 / problem.lipschitz, jnp.int32(0))

  def step(self, problem, state):
    t = 1.0 / problem.lipschitz
    target = problem.forward_backward(state.x, problem.grad(state.x), t)
    x = state.x + self.relax * (target - state.x)
    return RelaxedState(x, problem.objective(x), self.relax * t, jnp.int32(0))


def test_a_user_written_method_runs_through_solve_batches_and_unrolled_mode():
  problem = _problem()
  method = RelaxedPGM()
  assert isinstance(method, Method)
  result = solve(method, problem, max_iter=3000, tol=1e-8)
  objective = np.asarray(result.history.objective)[: int(result.num_iter) + 1]
  assert int(result.status) == CONVERGED and bool(result.converged)
  fista = solve(FISTA(max_backtracks=0), problem, max_iter=3000, tol=-1)
  gap = (objective[-1] - float(fista.history.objective[-1])) / float(fista.history.objective[-1])
  assert -1e-9 < gap < 1e-3

  problems = simulate_batch(Task("inpainting", SHAPE, rate=0.5, lam=5.0),
                            jnp.stack([_image(), _image()[::-1]]), jax.random.PRNGKey(4))
  batched = solve(method, problems, max_iter=7, tol=-1)
  assert batched.x.shape == (2,) + tuple(problem.op.in_shape)
  assert np.all(np.asarray(batched.status) == MAX_ITER)
  one = solve(method, jax.tree_util.tree_map(lambda a: a[1], problems), max_iter=7, tol=-1)
  np.testing.assert_allclose(batched.x[1], one.x, rtol=1e-9, atol=1e-9)

  def final_objective(relax):
    return run(RelaxedPGM(relax), problem, problem.zeros(), 5, unroll=True).state.objective

  assert float(jax.grad(final_objective)(1.5)) != 0.0


@struct.dataclass
class Exploding:
  """Doubles the iterate each step and turns it into NaN at step ``nan_at``."""
  nan_at: int = 3

  def init(self, problem, x0):
    return RelaxedState(x0 + 1.0, problem.objective(x0 + 1.0), jnp.ones(()), jnp.int32(0))

  def step(self, problem, state):
    k = state.backtracks + 1   # used as a step counter
    x = jnp.where(k >= self.nan_at, jnp.nan, 2.0 * state.x)
    return RelaxedState(x, problem.objective(x), jnp.ones(()), k)


def test_a_diverged_run_stops_at_the_first_non_finite_objective_and_says_so():
  problem = _problem()
  result = solve(Exploding(3), problem, max_iter=50)
  assert int(result.status) == NON_FINITE and status_name(result.status) == "non_finite"
  assert int(result.num_iter) == 3 and not bool(result.converged)
  assert np.isnan(float(result.history.objective[3]))
  assert np.all(np.isnan(np.asarray(result.history.objective[4:])))   # never ran past it
  # In a batch only the diverged instance stops; the other runs on to max_iter.
  problems = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), problem)
  x0 = jnp.stack([problem.zeros(), problem.zeros()])
  batched = solve(Exploding(3), problems, x0, max_iter=5, tol=-1)
  assert np.all(np.asarray(batched.status) == NON_FINITE)
  mixed = solve(RelaxedPGM(), problems, x0, max_iter=5, tol=-1)
  assert np.all(np.asarray(mixed.status) == MAX_ITER)
  assert [status_name(s) for s in (CONVERGED, MAX_ITER, NON_FINITE)] == [
      "converged", "max_iter", "non_finite"]


def test_an_object_that_is_not_a_method_is_refused_naming_it():
  class NotAMethod:
    def init(self, problem, x0):
      return x0

  with pytest.raises(TypeError, match="NotAMethod is not a jsgp method"):
    solve(NotAMethod(), _problem(), max_iter=2)


@pytest.mark.parametrize("make, message", [
    (lambda: SpaRSA(memory=0), "SpaRSA memory must be an integer >= 1, got 0"),
    (lambda: SpaRSA(memory=2.5), "SpaRSA memory must be an integer"),
    (lambda: SpaRSA(shrink=1.0), "SpaRSA shrink must be a finite number > 0 and < 1"),
    (lambda: SpaRSA(sufficient_decrease=float("nan")), "SpaRSA sufficient_decrease"),
    (lambda: SGP(shrink=0.0), "SGP shrink must be a finite number > 0 and < 1"),
    (lambda: SGP(sufficient_decrease=2.0), "SGP sufficient_decrease"),
    (lambda: SGP(max_backtracks=-1), "SGP max_backtracks must be an integer >= 0"),
    (lambda: FISTA(eta=1.0), "FISTA eta must be a finite number > 1"),
    (lambda: FISTA(lipschitz0_factor=0.0), "FISTA lipschitz0_factor"),
    (lambda: FISTA(max_backtracks=True), "FISTA max_backtracks must be an integer"),
    (lambda: FISTA(max_backtracks=0, lipschitz0_factor=0.5), "needs backtracking"),
    (lambda: DRS(lambda p, x, g: 1.0, eta1=1.5), "DRS eta1 must be a finite number > 0 and < 1"),
    (lambda: DRS(lambda p, x, g: 1.0, max_backtracks=-2), "DRS max_backtracks"),
    (lambda: DRS(lambda p, x, g: 1.0, shrink=1.0), "DRS shrink must be a finite number > 0"),
    (lambda: DRS(lambda p, x, g: 1.0, sufficient_decrease=0.0), "DRS sufficient_decrease"),
])
def test_method_settings_are_validated_at_construction_naming_the_field(make, message):
  with pytest.raises(ValueError, match=message):
    make()
