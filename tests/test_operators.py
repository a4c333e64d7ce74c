"""Operators: float64 dot tests, jit/vmap invariance, gradients, batches of different operators."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsgp.operators import (PATTERNS, WaveletSynthesis, fourier_pattern, gaussian_blur,
                            operator_norm_squared, random_pixel_mask, variable_density_pattern,
                            vdot_real)
from jsgp.problems import Task, measurement_operator, simulate_batch

SHAPE = (64, 64)


def _random_like(key, shape, complex_):
  kr, ki = jax.random.split(key)
  out = jax.random.normal(kr, shape, jnp.float64)
  return out + 1j * jax.random.normal(ki, shape, jnp.float64) if complex_ else out


def _operators():
  key = jax.random.PRNGKey(3)
  synthesis = WaveletSynthesis(SHAPE)
  image_ops = {
      "mask": random_pixel_mask(key, SHAPE, 0.5, jnp.float64),
      "fourier": variable_density_pattern(key, SHAPE, 0.3, jnp.float64),
      **{f"fourier-{kind}": fourier_pattern(kind, key, SHAPE, 0.3, jnp.float64)
         for kind in PATTERNS if kind != "variable_density"},
      "blur": gaussian_blur(SHAPE, 2.0, jnp.float64),
  }
  ops = {"wavelet": synthesis}
  ops.update(image_ops)
  ops.update({f"{name}@wavelet": op @ synthesis for name, op in image_ops.items()})
  return ops


OPERATORS = _operators()


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_dot_test_float64(name):
  op = OPERATORS[name]
  kx, ky = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(kx, op.in_shape, jnp.float64)
  Ax = op.apply(x)
  assert Ax.shape == tuple(op.out_shape)
  y = _random_like(ky, Ax.shape, jnp.iscomplexobj(Ax))
  lhs, rhs = vdot_real(Ax, y), vdot_real(x, op.adjoint(y))
  assert abs(lhs - rhs) / abs(lhs) < 1e-10


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_jit_matches_eager_and_grad_is_finite(name):
  op = OPERATORS[name]
  x = jax.random.normal(jax.random.PRNGKey(1), op.in_shape, jnp.float64)
  np.testing.assert_allclose(jax.jit(lambda o, v: o.apply(v))(op, x), op.apply(x), rtol=1e-12,
                             atol=1e-12)
  y = op.apply(x)
  np.testing.assert_allclose(jax.jit(lambda o, v: o.adjoint(v))(op, y), op.adjoint(y),
                             rtol=1e-12, atol=1e-12)
  loss = lambda v: 0.5 * jnp.sum(jnp.abs(op.apply(v)) ** 2)
  g = jax.grad(loss)(x)
  # grad of 1/2||Ax||^2 is A^T A x: checks grad against the hand-written adjoint.
  np.testing.assert_allclose(g, op.adjoint(op.apply(x)), rtol=1e-9, atol=1e-9)


def test_wavelet_analysis_is_right_inverse_and_gaps_are_ignored():
  synthesis = WaveletSynthesis(SHAPE)
  image = jax.random.normal(jax.random.PRNGKey(2), SHAPE, jnp.float64)
  np.testing.assert_allclose(synthesis.apply(synthesis.analysis(image)), image, atol=1e-9)
  gaps = ~synthesis.coefficient_mask()
  assert gaps.any() and synthesis.in_shape == (88, 88)
  grad = synthesis.adjoint(image)
  assert np.all(np.asarray(grad)[gaps] == 0)


@pytest.mark.parametrize("task", ["inpainting", "fourier", "deblur"])
def test_vmapped_batch_of_8_different_operators_in_one_jit(task):
  images = jax.random.uniform(jax.random.PRNGKey(0), (8,) + SHAPE, jnp.float64) * 255
  problems = simulate_batch(Task(task, SHAPE, rate=0.5), images, jax.random.PRNGKey(1))
  x = jax.random.normal(jax.random.PRNGKey(2), (8,) + tuple(problems.op.in_shape), jnp.float64)
  batched = jax.jit(jax.vmap(lambda p, v: p.op.adjoint(p.op.apply(v))))(problems, x)
  for i in range(8):
    single = jax.tree_util.tree_map(lambda a: a[i], problems)
    np.testing.assert_allclose(batched[i], single.op.adjoint(single.op.apply(x[i])), rtol=1e-10,
                               atol=1e-9)
  if task != "deblur":  # random operators: every instance draws its own
    leaves = jax.tree_util.tree_leaves(problems.op)
    assert not np.array_equal(leaves[0][0], leaves[0][1])


def test_sampling_rates_and_norm_estimate():
  key = jax.random.PRNGKey(5)
  for rate in (0.3, 0.5, 0.7):
    assert abs(float(random_pixel_mask(key, (128, 128), rate).mask.mean()) - rate) < 0.02
    assert abs(float(variable_density_pattern(key, (128, 128), rate).pattern.mean()) - rate) < 0.02
  small = (32, 32)
  op = random_pixel_mask(key, small, 0.5, jnp.float64) @ WaveletSynthesis(small)
  estimate = operator_norm_squared(op, key, 300, jnp.float64)
  # Independent check: largest singular value of the explicit matrix.
  basis = jnp.eye(int(np.prod(op.in_shape)), dtype=jnp.float64).reshape((-1,) + op.in_shape)
  dense = jax.jit(jax.vmap(op.apply))(basis).reshape(basis.shape[0], -1)
  sigma_max = np.linalg.norm(np.asarray(dense), 2)
  assert abs(float(estimate) - sigma_max ** 2) / sigma_max ** 2 < 1e-3


@pytest.mark.parametrize("bad", [dict(rate=0.0), dict(rate=1.2), dict(noise_sigma=-1.0),
                                 dict(lam=0.0), dict(lam=-0.1), dict(name="denoise")])
def test_bad_task_settings_are_rejected(bad):
  kwargs = dict(name="inpainting", image_shape=SHAPE)
  kwargs.update(bad)
  with pytest.raises(ValueError, match="rate|noise_sigma|lam|task"):
    Task(**kwargs)


def test_measurement_operator_covers_tasks():
  key = jax.random.PRNGKey(0)
  for task in ("inpainting", "fourier", "deblur"):
    op = measurement_operator(Task(task, SHAPE), key)
    assert tuple(op.in_shape) == SHAPE


# ------------------------------------------------------------------------------------------------
# k-space sampling patterns (fourier_pattern). Tolerances on the sample count: Bernoulli draws
# (variable_density, uniform) have std sqrt(N p (1 - p)) <= 0.5 sqrt(N), i.e. <= 0.8 % of N at
# 64 x 64; 0.03 is > 3.5 std. lines is exact to one row (1/64), radial to about one spoke.

PATTERN_PARAMS = [("variable_density", {}), ("uniform", {}), ("uniform", dict(center_fraction=0.0)),
                  ("lines", {}), ("lines", dict(decay=2.0, center_fraction=0.1)), ("radial", {})]
COUNT_TOLERANCE = {"variable_density": 0.03, "uniform": 0.03, "lines": 1 / 64 + 1e-9,
                   "radial": 0.02}


@pytest.mark.parametrize("kind,params", PATTERN_PARAMS)
def test_pattern_count_dc_binary_and_key_dependence(kind, params):
  # One compilation per kind: the rate is traced.
  draw = jax.jit(lambda k, r: fourier_pattern(kind, k, SHAPE, r, jnp.float64, **params).pattern)
  for rate in (0.1, 0.3, 0.5, 0.7, 1.0):
    for seed in range(3):
      pattern = np.asarray(draw(jax.random.PRNGKey(seed), rate))
      assert pattern.shape == SHAPE and pattern.dtype == np.float64
      assert set(np.unique(pattern)) <= {0.0, 1.0}
      assert pattern[0, 0] == 1.0  # DC (unshifted)
      assert abs(pattern.mean() - rate) <= COUNT_TOLERANCE[kind], (rate, pattern.mean())
  first, second = (draw(jax.random.PRNGKey(s), 0.5) for s in (0, 1))
  assert not np.array_equal(first, second)


def test_pattern_structure():
  key = jax.random.PRNGKey(0)
  lines = np.asarray(fourier_pattern("lines", key, SHAPE, 0.3).pattern)
  assert np.all(lines == lines[:, :1])  # whole rows
  assert lines[:, 0].sum() == round(0.3 * SHAPE[0])  # exact number of rows
  assert lines[[0, 1, -1], 0].all()  # |k_y| <= 0.04 * 64 / 2: the three centre rows
  uniform = np.asarray(fourier_pattern("uniform", key, SHAPE, 0.1, center_fraction=0.04).pattern)
  fy = np.fft.fftfreq(SHAPE[0]) * SHAPE[0]
  radius = np.hypot(fy[:, None], fy[None, :])
  assert uniform[radius <= np.sqrt(0.04 * 64 * 64 / np.pi)].all()  # fully sampled centre
  radial = np.asarray(fourier_pattern("radial", key, SHAPE, 0.3).pattern)
  # Spokes through DC: point-symmetric, k and -k together (even grid: skip the Nyquist row/col).
  inner = radial[1:, 1:]
  np.testing.assert_array_equal(inner, inner[::-1, ::-1])


def test_patterns_vmap_over_keys_and_traced_rates():
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  rates = jnp.array([0.3, 0.5, 0.7])
  for kind in PATTERNS:
    batched = jax.jit(jax.vmap(lambda k, r: fourier_pattern(kind, k, SHAPE, r).pattern))(
        keys, rates)
    for i in range(3):
      np.testing.assert_array_equal(batched[i],
                                    fourier_pattern(kind, keys[i], SHAPE, float(rates[i])).pattern)


def test_unknown_pattern_is_rejected():
  with pytest.raises(ValueError, match="unknown Fourier sampling pattern 'spiral'.*radial"):
    fourier_pattern("spiral", jax.random.PRNGKey(0), SHAPE, 0.5)
