"""Douglas-Rachford: the cheap ``(I + t A^T A)^{-1}`` it rests on, checked against a dense float64
solve, and its limits (CT, bad settings). Convergence to the float64 reference and the float32
true objective are in ``test_solvers`` / ``test_classical`` with the other methods."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsgp.problems import Task, simulate, to_float64
from jsgp.solvers import DouglasRachford, solve
from jsgp.solvers.douglas_rachford import measured_offset

from helpers import camera_image, four_problems

SHAPE = (16, 16)


def dense(fn, shape):
  """The matrix of a linear map on real arrays of ``shape`` (float64), column by column."""
  size = int(np.prod(shape))
  basis = jnp.eye(size, dtype=jnp.float64).reshape((size,) + tuple(shape))
  return np.asarray(jax.vmap(fn)(basis)).reshape(size, -1).T


@pytest.mark.parametrize("task", ["inpainting", "fourier", "deblur"])
def test_normal_solve_inverts_i_plus_t_ata_in_float64(task):
  """``problem.normal_solve(v, t) = (I + t A^T A)^{-1} v`` on the wavelet canvas (a Parseval
  frame) for each measurement that has one, against the dense matrix; and the measurement's own
  solve against ``(I + t M^T M)`` on images (Fourier: an unsymmetric random pattern)."""
  problem = simulate(Task(task, SHAPE, rate=0.4, lam=1.0), camera_image(SHAPE),
                     jax.random.PRNGKey(3))
  t = 7.5
  m = problem.measurement
  normal = dense(lambda v: m.adjoint(m.apply(v)), SHAPE)
  solved = dense(lambda v: m.normal_solve(v, t), SHAPE)
  np.testing.assert_allclose(solved @ (np.eye(len(normal)) + t * normal), np.eye(len(normal)),
                             atol=1e-10)
  canvas = problem.op.in_shape
  gram = dense(lambda v: problem.op.adjoint(problem.op.apply(v)), canvas)
  inverse = dense(lambda v: problem.normal_solve(v, t), canvas)
  np.testing.assert_allclose(inverse @ (np.eye(len(gram)) + t * gram), np.eye(len(gram)),
                             atol=1e-9)
  v = jax.random.normal(jax.random.PRNGKey(5), canvas, jnp.float64)
  u, u_image = problem.normal_solve_imaged(v, problem.image(v), t)  # the image DR carries
  np.testing.assert_allclose(u_image, problem.image(u), atol=1e-10)
  np.testing.assert_allclose(u, problem.normal_solve(v, t), atol=1e-12)


def test_ct_has_no_normal_solve_and_says_so():
  problem = simulate(Task("ct", (16, 16), n_views=8), camera_image(SHAPE), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="no normal_solve"):
    solve(DouglasRachford(), problem, max_iter=3)


def test_settings_are_checked_and_gamma_is_the_parameter_used():
  for bad in (dict(gamma=0.0), dict(gamma=-1.0), dict(gamma_scale=0.0), dict(gamma_max=-1.0),
              dict(relaxation=0.0), dict(relaxation=2.0),
              dict(gamma=float("nan"))):
    with pytest.raises(ValueError):
      DouglasRachford(**bad)
  problem = simulate(Task("inpainting", SHAPE, rate=0.5, lam=1.0), camera_image(SHAPE),
                     jax.random.PRNGKey(1))
  result = solve(DouglasRachford(gamma=3.0), problem, max_iter=5, tol=-1)
  np.testing.assert_allclose(np.asarray(result.history.stepsize[1:6]), 3.0)
  peak = float(jnp.max(jnp.abs(problem.initial_image())))
  scaled = solve(DouglasRachford(gamma_scale=0.1), problem, max_iter=1, tol=-1)
  rate = float(np.mean(np.asarray(problem.measurement.mask)))  # the kept pixels' fraction
  assert 0.3 < rate < 0.7
  expected = 0.1 * peak / (rate * float(problem.lam)) / float(problem.lipschitz)
  np.testing.assert_allclose(float(scaled.history.stepsize[1]), expected, rtol=1e-6)
  assert float(scaled.state.relaxation) == pytest.approx(1.7)  # a mask samples: over-relaxed
  blurred = simulate(Task("deblur", SHAPE, lam=1.0), camera_image(SHAPE), jax.random.PRNGKey(1))
  assert float(solve(DouglasRachford(), blurred, max_iter=1).state.relaxation) == 1.0
  assert float(solve(DouglasRachford(relaxation=1.2), blurred, max_iter=1).state.relaxation) == \
      pytest.approx(1.2)
  capped = solve(DouglasRachford(gamma_scale=0.1, gamma_max=2.0), problem, max_iter=1, tol=-1)
  assert expected * float(problem.lipschitz) > 2.0  # the cap applies
  np.testing.assert_allclose(float(capped.history.stepsize[1]), 2.0 / float(problem.lipschitz),
                             rtol=1e-6)


def test_the_rule_is_invariant_to_the_scale_of_the_data():
  """Scaling ``y`` and ``lam`` by ``s`` scales every iterate by ``s`` under the default rule."""
  problem = simulate(Task("fourier", SHAPE, rate=0.5, lam=1.0), camera_image(SHAPE),
                     jax.random.PRNGKey(2))
  scaled = problem.replace(y=10.0 * problem.y, lam=10.0 * problem.lam)
  a = solve(DouglasRachford(), problem, max_iter=30, tol=-1)
  b = solve(DouglasRachford(), scaled, max_iter=30, tol=-1)
  np.testing.assert_allclose(np.asarray(b.x), 10.0 * np.asarray(a.x), rtol=1e-8, atol=1e-8)


def test_a_vmapped_batch_matches_single_runs_each_with_its_own_t():
  """A batch of problems with different images, masks and lam: each instance gets its own default
  ``t`` and stopping point, as if solved alone."""
  problems = four_problems()
  batched = solve(DouglasRachford(), problems, max_iter=300, tol=1e-7)
  steps = np.asarray(batched.history.stepsize[:, 1])
  assert len(set(np.round(steps, 8).tolist())) > 1, steps
  for i in range(4):
    single = solve(DouglasRachford(), jax.tree_util.tree_map(lambda a: a[i], problems),
                   max_iter=300, tol=1e-7)
    assert int(single.num_iter) == int(batched.num_iter[i])
    np.testing.assert_allclose(batched.x[i], single.x, rtol=1e-10, atol=1e-8)


def test_measured_offset_keeps_float32_accuracy_at_a_large_t():
  """``c = (I + t A^T A)^{-1} t A^T y`` in float32 agrees with float64 to ~float32 precision at
  ``t L = 1000``, where one solve of the ``t L``-times larger ``t A^T y`` loses ~3 digits."""
  image = camera_image((32, 32)).astype(jnp.float32)
  for task in ("inpainting", "fourier", "deblur"):
    problem32 = simulate(Task(task, (32, 32), rate=0.5, lam=0.1), image, jax.random.PRNGKey(4))
    problem64 = to_float64(problem32)
    t = 1000.0 / float(problem64.lipschitz)
    exact, exact_image = measured_offset(problem64, t)
    np.testing.assert_allclose(exact_image, problem64.image(exact), atol=1e-9)  # W^T c, unformed
    exact = np.asarray(exact)
    scale = np.linalg.norm(exact)
    refined = np.asarray(measured_offset(problem32, jnp.float32(t))[0], np.float64)
    one_solve = np.asarray(problem32.normal_solve(
        jnp.float32(t) * problem32.op.adjoint(problem32.y), jnp.float32(t)), np.float64)
    assert np.linalg.norm(refined - exact) <= 1e-5 * scale, task
    assert np.linalg.norm(one_solve - exact) > 10 * np.linalg.norm(refined - exact), task


def _z_steps(method, problem, x0, iterations):
  """``||z_{k+1} - z_k||`` over ``iterations`` steps of a Douglas-Rachford ``method`` (or a
  ``DRS`` handing off to it: its tail's ``z``), and the objectives."""
  z_of = lambda s: s.tail.z if hasattr(s, "tail") else s.z

  def body_for(p):
    def body(state, _):
      new = method.step(p, state)
      return new, (jnp.linalg.norm(z_of(new) - z_of(state)), new.objective)
    return body

  run = jax.jit(lambda p, x: jax.lax.scan(body_for(p), method.init(p, x), None,
                                          length=iterations)[1])
  steps, objective = run(problem, x0)
  return np.asarray(steps), np.asarray(objective)


@pytest.mark.parametrize("task", ["inpainting", "fourier", "deblur"])
def test_the_fixed_point_residual_never_grows(task):
  """Over-relaxed DR is a Krasnosel'skii-Mann iteration of a nonexpansive map: ``||z_{k+1} - z_k||``
  is nonincreasing (float64), whatever the objective does."""
  problem = simulate(Task(task, SHAPE, rate=0.5, lam=0.1), camera_image(SHAPE),
                     jax.random.PRNGKey(2))
  steps, _ = _z_steps(DouglasRachford(), problem, problem.zeros(), 200)
  assert np.all(steps[1:] <= steps[:-1] * (1 + 1e-9) + 1e-12 * steps[0]), task


def test_restart_is_a_warm_start_that_keeps_the_solves():
  """``restart`` at a new point (how DRS hands off) equals ``warm_start`` there: same state, and
  the offset, ``t`` and ``rho`` reused from the earlier state."""
  problem = simulate(Task("fourier", SHAPE, rate=0.5, lam=0.1), camera_image(SHAPE),
                     jax.random.PRNGKey(3))
  method = DouglasRachford()
  earlier = solve(method, problem, max_iter=5, tol=-1).state
  x1 = problem.synthesis.adjoint(problem.initial_image())
  residual = problem.residual(x1)
  objective = problem.f_from_residual(residual) + problem.g(x1)
  again = method.restart(problem, earlier, x1, residual, None, objective)
  fresh = method.warm_start(problem, x1, residual, None, objective)
  for name, a, b in zip(fresh._fields, again, fresh):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12,
                               err_msg=name)


@pytest.mark.parametrize("task", ["inpainting", "fourier", "deblur"])
def test_the_cold_start_is_the_prox_of_f_at_x0(task):
  """``init`` starts at ``z_0 = prox_{t f}(x_0)``: ``(I + t A^T A) z_0 = x_0 + t A^T y`` (float64),
  ``z_0 = c`` from ``x_0 = 0``, so the first iterate is not ``x_0`` again; ``warm_start`` keeps
  ``z_0 = x_0``."""
  problem = simulate(Task(task, SHAPE, rate=0.5, lam=0.1), camera_image(SHAPE),
                     jax.random.PRNGKey(5))
  method = DouglasRachford()
  x0 = problem.synthesis.adjoint(problem.initial_image())
  state = method.init(problem, x0)
  t = state.stepsize
  normal = lambda v: v + t * problem.op.adjoint(problem.op.apply(v))
  rhs = x0 + t * problem.op.adjoint(problem.y)
  np.testing.assert_allclose(normal(state.z), rhs, atol=1e-9 * float(jnp.max(jnp.abs(rhs))))
  np.testing.assert_allclose(state.z_image, problem.image(state.z), atol=1e-9 * 255)
  cold = method.init(problem, problem.zeros())
  np.testing.assert_allclose(cold.z, cold.offset, rtol=0, atol=0)
  first = method.step(problem, cold)
  assert float(jnp.max(jnp.abs(first.x))) > 0 and not bool(first.held)
  warm = method.warm_start(problem, x0, problem.residual(x0), None, problem.objective(x0))
  np.testing.assert_allclose(warm.z, x0, rtol=0, atol=0)
