"""Bad input is a clear error, naming the problem, before any work (files and checkpoints:
``test_checkpoint_faults.py``)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jsgp.operators import gaussian_blur, parallel_beam, random_pixel_mask, variable_density_pattern
from jsgp.problems import Task, make_problem, simulate
from jsgp.solvers import DRS, FISTA, PGM, solve

from helpers import problem_for


# --- API arguments ------------------------------------------------------------------------------

def test_infinite_lam_is_refused_by_make_problem_and_by_solve():
  problem = problem_for("inpainting")
  with pytest.raises(ValueError, match="lam must be finite and > 0"):
    make_problem(problem.measurement, problem.y, float("inf"), synthesis=problem.synthesis)
  with pytest.raises(ValueError, match="lam must be finite and > 0"):
    solve(PGM(), problem.replace(lam=jnp.asarray(jnp.inf)), max_iter=3)


def test_complex_measurements_for_a_real_operator_are_refused():
  problem = problem_for("inpainting")
  with pytest.raises(ValueError, match="y is complex"):  # at construction, not only in solve
    make_problem(problem.measurement, problem.y.astype(jnp.complex64), 0.1,
                 synthesis=problem.synthesis)
  fourier = problem_for("fourier")
  assert jnp.iscomplexobj(make_problem(fourier.measurement, fourier.y, 0.1,
                                       synthesis=fourier.synthesis,
                                       lipschitz=fourier.lipschitz).y)
  with pytest.raises(ValueError, match="y is complex"):
    solve(PGM(), problem.replace(y=problem.y.astype(jnp.complex128)), max_iter=3)
  fourier = problem_for("fourier")  # complex measurements of a complex-valued operator: fine
  assert np.isfinite(float(solve(PGM(), fourier, max_iter=2).history.objective[-1]))


@pytest.mark.parametrize("max_iter", [-3, 5.5, True, "7"])
def test_bad_iteration_counts_are_refused(max_iter):
  with pytest.raises(ValueError, match="max_iter must be an integer >= 0"):
    solve(PGM(), problem_for("deblur"), max_iter=max_iter)


def test_nan_tolerance_is_refused_and_zero_iterations_return_x0():
  problem = problem_for("deblur")
  with pytest.raises(ValueError, match="tol must be a real number"):
    solve(PGM(), problem, max_iter=3, tol=float("nan"))
  x0 = jnp.full(problem.op.in_shape, 0.25)
  result = solve(FISTA(), problem, x0, max_iter=0)
  np.testing.assert_array_equal(result.x, x0)
  assert int(result.num_iter) == 0 and result.history.objective.shape == (1,)
  # tol < 0 never stops early: exactly max_iter steps, even at a fixed point.
  zero = solve(PGM(), problem.replace(y=jnp.zeros_like(problem.y)), max_iter=7, tol=-1.0)
  assert int(zero.num_iter) == 7


def test_reference_of_the_wrong_shape_is_refused():
  problem = problem_for("inpainting")
  with pytest.raises(ValueError, match="ground_truth has shape"):
    solve(PGM(), problem, max_iter=2, ground_truth=jnp.zeros((5, 5)))


@pytest.mark.parametrize("rate", [0.0, 1.5, -0.1, float("nan")])
def test_sampling_operators_refuse_rates_outside_0_1(rate):
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="rate must be in"):
    random_pixel_mask(key, (16, 16), rate)
  with pytest.raises(ValueError, match="rate must be in"):
    variable_density_pattern(key, (16, 16), rate)


def test_traced_rates_still_work_under_jit():
  count = jax.jit(lambda r: random_pixel_mask(jax.random.PRNGKey(0), (16, 16), r).mask.sum())
  assert 0 < float(count(0.5)) < 256


@pytest.mark.parametrize("make, message", [
    (lambda: gaussian_blur((16, 16), 0.0), "sigma must be finite and > 0"),
    (lambda: gaussian_blur((16, 16), -2.0), "sigma must be finite and > 0"),
    (lambda: parallel_beam((16, 16), 0), "n_views must be an integer >= 1"),
    (lambda: Task("ct", (16, 16), n_views=2.5), "n_views must be an integer >= 1"),
    (lambda: Task("deblur", (16, 16), blur_sigma=float("nan")), "blur_sigma must be finite"),
    (lambda: Task("fourier", (16, 16), pattern="spiral"), "unknown Fourier sampling pattern"),
])
def test_operator_settings_are_validated(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_fourier_task_samples_with_the_chosen_pattern():
  image = jnp.full((32, 32), 100.0)
  counts = {}
  for pattern in ("variable_density", "uniform"):
    problem = simulate(Task("fourier", (32, 32), rate=0.3, pattern=pattern), image,
                       jax.random.PRNGKey(0))
    counts[pattern] = float(jnp.sum(problem.measurement.measured_entries()))
    assert abs(counts[pattern] / 32 ** 2 - 0.3) < 0.05
  default = simulate(Task("fourier", (32, 32), rate=0.3), image, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(default.measurement.measured_entries(),
                                simulate(Task("fourier", (32, 32), rate=0.3,
                                              pattern="variable_density"), image,
                                         jax.random.PRNGKey(0)).measurement.measured_entries())


@struct.dataclass
class WrongShapePolicy:
  def __call__(self, problem, x, grad):
    return jnp.ones((3, 3)) / problem.lipschitz


def test_policy_returning_a_wrongly_shaped_diagonal_is_named():
  with pytest.raises(ValueError, match="policy WrongShapePolicy returned shape"):
    solve(DRS(WrongShapePolicy()), problem_for("inpainting"), max_iter=2)
