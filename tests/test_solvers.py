"""Solvers against an independent float64 reference minimizer; monotonicity; vmap; bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsgp.policies import BarzilaiBorwein, ConstantPolicy
from jsgp.problems import make_problem
from jsgp.solvers import DRS, FISTA, PGM, SGP, DouglasRachford, SpaRSA, run, solve
from jsgp.solvers.linesearch import backtrack

from helpers import SHAPE, TEST_LAM, camera_image, four_problems, problem_for, reference

METHODS = {
    "pgm": (PGM(), 3000),
    "fista_b": (FISTA(lipschitz0_factor=0.05), 3000),
    "fista_restart_gradient": (FISTA(max_backtracks=0, restart="gradient"), 3000),
    "fista_restart_function": (FISTA(max_backtracks=0, restart="function"), 3000),
    "mfista": (FISTA(max_backtracks=0, monotone=True), 3000),
    "sgp_bb": (SGP(), 3000),
    "sgp_bb1": (SGP(BarzilaiBorwein("bb1")), 3000),
    "sgp_constant": (SGP(ConstantPolicy()), 3000),
    "sparsa": (SpaRSA(), 3000),
    "douglas_rachford": (DouglasRachford(), 3000),
    "drs": (DRS(ConstantPolicy(3.0)), 3000),
    "drs_relaxation": (DRS(ConstantPolicy(3.0), mode="relaxation"), 3000),
}


def _method_task_pairs():
  """Every (method, task) pair; by default each method runs on one task (tasks in turn), the
  rest of the matrix is ``slow`` (CI time)."""
  tasks = sorted(TEST_LAM)
  pairs = []
  for i, method in enumerate(sorted(METHODS)):
    for j, task in enumerate(tasks):
      marks = () if j == i % len(tasks) else (pytest.mark.slow,)
      pairs.append(pytest.param(method, task, marks=marks, id=f"{method}-{task}"))
  return pairs


@pytest.mark.parametrize("method, task", _method_task_pairs())
def test_reaches_reference_minimum_float64(method, task):
  solver, max_iter = METHODS[method]
  problem = problem_for(task)
  _, f_star = reference(task)
  result = solve(solver, problem, max_iter=max_iter, tol=1e-15)
  gap = (float(result.history.objective[result.num_iter]) - f_star) / f_star
  assert -1e-9 < gap < 1e-6, f"{method} on {task}: relative gap {gap:.2e} after {result.num_iter}"


@pytest.mark.parametrize("task", [pytest.param(t, marks=() if t == "fourier" else pytest.mark.slow)
                                  for t in sorted(TEST_LAM)])
def test_monotone_methods_never_increase(task):
  problem = problem_for(task)
  for solver in (PGM(), SGP(), SGP(ConstantPolicy()), SGP(BarzilaiBorwein("bb2")),
                 FISTA(max_backtracks=0, monotone=True), SpaRSA(memory=1),
                 DRS(ConstantPolicy(50.0)), DRS(ConstantPolicy(50.0), mode="relaxation"),
                 DRS(ConstantPolicy(0.9), max_policy_steps=30)):
    result = solve(solver, problem, max_iter=200)
    objective = np.asarray(result.history.objective)[: int(result.num_iter) + 1]
    assert np.all(np.diff(objective) <= 1e-12 * objective[:-1]), type(solver).__name__


def test_fista_b_rate_bound():
  """Beck-Teboulle: F(x_k) - F* <= 2 eta L ||x0 - x*||^2 / (k + 1)^2."""
  problem = problem_for("inpainting")
  x_star, f_star = reference("inpainting")
  eta = 2.0
  objective = np.asarray(solve(FISTA(eta=eta, lipschitz0_factor=0.05), problem,
                               max_iter=300).history.objective)
  k = np.arange(1, 301)
  bound = 2 * eta * float(problem.lipschitz) * float(jnp.sum(x_star ** 2)) / (k + 1) ** 2
  assert np.all(objective[1:] - f_star <= bound)


def test_backtracking_is_used_and_recorded():
  problem = problem_for("fourier")
  history = solve(FISTA(lipschitz0_factor=1e-3), problem, max_iter=20).history
  assert float(history.backtracks[1]) >= 9  # 2^10 > 1/1e-3: L must grow about ten times
  assert float(history.stepsize[20]) <= 1.0 / (0.5 * float(problem.lipschitz))


def test_the_shared_backtracking_loop_stops_per_instance_within_its_budget():
  """``linesearch.backtrack``: the first passing trial, or the last after ``max_backtracks``
  reductions; under vmap each instance keeps its own step and count."""
  trials = lambda step: (step * step, step * step <= 0.1)   # passes once step <= 0.316
  accept = lambda step, outputs: outputs[1]
  shrink = lambda step: 0.5 * step
  found = jax.jit(lambda s0: backtrack(trials, accept, s0, shrink, 40))(jnp.float64(1.0))
  assert float(found.step) == 0.25 and int(found.reductions) == 2
  assert float(found.outputs[0]) == 0.0625 and bool(found.outputs[1])
  capped = backtrack(trials, accept, jnp.float64(1.0), shrink, 1)
  assert float(capped.step) == 0.5 and int(capped.reductions) == 1 and not bool(capped.outputs[1])
  batched = jax.vmap(lambda s0: backtrack(trials, accept, s0, shrink, 40))(
      jnp.asarray([0.2, 1.0, 3.0]))
  np.testing.assert_array_equal(np.asarray(batched.step), [0.2, 0.25, 0.1875])
  np.testing.assert_array_equal(np.asarray(batched.reductions), [0, 2, 4])
  # ``first`` stands for the first trial (here deliberately a failing one): the loop goes on.
  given = backtrack(trials, accept, jnp.float64(0.2), shrink, 40,
                    first=(jnp.float64(1.0), jnp.bool_(False)))
  assert float(given.step) == 0.1 and int(given.reductions) == 1


def test_vmap_matches_single_runs_with_different_stopping():
  problems = four_problems()
  batched = solve(FISTA(), problems, max_iter=400, tol=1e-7)
  counts = np.asarray(batched.num_iter)
  assert len(set(counts.tolist())) == 4, f"instances should stop apart, got {counts}"
  for i in range(4):
    single = solve(FISTA(), jax.tree_util.tree_map(lambda a: a[i], problems), max_iter=400,
                   tol=1e-7)
    assert int(single.num_iter) == counts[i]
    np.testing.assert_allclose(batched.x[i], single.x, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(batched.history.objective[i], single.history.objective,
                               rtol=1e-12, equal_nan=True)


def test_vmap_sgp_matches_single_runs():
  """SGP-BB amplifies rounding (vmap reorders reductions): compare the first 50 iterations."""
  problems = four_problems()
  batched = solve(SGP(), problems, max_iter=50)
  for i in range(4):
    single = solve(SGP(), jax.tree_util.tree_map(lambda a: a[i], problems), max_iter=50)
    np.testing.assert_allclose(batched.history.objective[i], single.history.objective,
                               rtol=1e-12)
    np.testing.assert_allclose(batched.history.stepsize[i], single.history.stepsize, rtol=1e-9)


def test_history_nmse_matches_metric():
  problem = problem_for("fourier")
  image = camera_image()
  result = solve(FISTA(), problem, max_iter=10, ground_truth=image)
  from jsgp.metrics import nmse_db
  expected = nmse_db(problem.synthesis.apply(result.x), image)
  np.testing.assert_allclose(result.history.nmse[10], expected, rtol=1e-10)
  assert np.all(np.isnan(np.asarray(solve(PGM(), problem, max_iter=5).history.nmse)))


def test_zero_measurements_give_zero_solution():
  problem = problem_for("inpainting").replace(y=jnp.zeros(SHAPE))
  for solver in (PGM(), FISTA(), SGP(), SpaRSA(), DRS(ConstantPolicy(2.0))):
    result = solve(solver, problem, max_iter=20)
    assert float(jnp.max(jnp.abs(result.x))) == 0.0


def test_bad_inputs_raise_before_tracing():
  problem = problem_for("inpainting")
  with pytest.raises(ValueError, match="lam"):
    solve(PGM(), problem.replace(lam=jnp.float64(0.0)))
  with pytest.raises(ValueError, match="lam"):
    make_problem(problem.measurement, problem.y, -1.0, synthesis=problem.synthesis)
  with pytest.raises(ValueError, match="NaN"):
    solve(PGM(), problem.replace(y=problem.y.at[0, 0].set(jnp.nan)))
  with pytest.raises(ValueError, match="NaN"):
    make_problem(problem.measurement, problem.y.at[3, 3].set(jnp.inf), 0.1,
                 synthesis=problem.synthesis)
  with pytest.raises(ValueError, match="x0 has shape"):
    solve(PGM(), problem, jnp.zeros((10, 10)))
  with pytest.raises(ValueError, match="y has shape"):
    make_problem(problem.measurement, jnp.zeros((5, 5)), 0.1, synthesis=problem.synthesis)
  with pytest.raises(ValueError, match="variant"):
    BarzilaiBorwein("newton")
  with pytest.raises(ValueError, match="restart"):
    FISTA(restart="always")
  with pytest.raises(ValueError, match="mode"):
    DRS(ConstantPolicy(1.0), mode="paper")


def test_run_is_a_pure_function_under_user_jit_and_vmap():
  """User code composes ``run`` in its own jit/vmap: here over lam without re-validation."""
  problem = problem_for("deblur")
  lams = jnp.asarray([0.25, 0.5, 1.0])
  x0 = jnp.zeros(problem.op.in_shape)

  @jax.jit
  def objectives(lams):
    go = lambda lam: run(PGM(), problem.replace(lam=lam), x0, max_iter=30).history.objective[-1]
    return jax.vmap(go)(lams)

  values = np.asarray(objectives(lams))
  assert np.all(np.isfinite(values)) and values[0] < values[1] < values[2]
