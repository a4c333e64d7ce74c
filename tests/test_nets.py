"""Tests for the stepsize / diagonal U-Net (jsgp.nets)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jsgp import nets

SMALL_STEP = nets.UNetConfig.small("step")
SMALL_DIAG = nets.UNetConfig.small("diag")

# Jitted once per (config, train, shape): much faster on CPU than op-by-op eager Flax.
apply = jax.jit(nets.apply_network, static_argnums=(0, 3))


def perturbed(variables, key, scale=0.1):
  """``variables`` with Gaussian noise of std ``scale`` added to every parameter (head included).

  One draw for the flattened parameters: per-leaf draws cost a compile per shape on CPU.
  """
  flat, unravel = ravel_pytree(variables["params"])
  noisy = flat + scale * jax.random.normal(key, flat.shape, flat.dtype)
  return {"params": unravel(noisy), "batch_stats": variables["batch_stats"]}


def expected_shape(config, batch_shape):
  batch, height, width, _ = batch_shape
  return (batch,) if config.head == "step" else (batch, height, width)


@pytest.fixture(scope="module")
def trained_like():
  """Small step network at 64x64x2 with perturbed params and non-trivial batch statistics."""
  variables = nets.init_network(SMALL_STEP, jax.random.key(0), (64, 64, 2))
  variables = perturbed(variables, jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (4, 64, 64, 2), jnp.float32)
  _, stats = apply(SMALL_STEP, variables, x + 1.0, train=True)
  return {"params": variables["params"], "batch_stats": stats}


POLICY_HEADS = ("step", "diag")  # bounded log-scale heads; "image" is the residual baseline head


def test_image_head_is_a_residual_identity_when_untrained():
  config = nets.UNetConfig(features=4, depth=2, head="image")
  variables = nets.init_network(config, jax.random.key(0), (32, 32, 1))
  x = 100.0 * jax.random.normal(jax.random.key(1), (2, 32, 32, 1), jnp.float32)
  out = apply(config, variables, x)
  assert out.shape == (2, 32, 32)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x[..., 0]))  # unbounded, residual


@pytest.mark.parametrize("head", POLICY_HEADS)
@pytest.mark.parametrize("shape", [(2, 88, 88, 2), (2, 64, 64, 3)])
def test_shapes_and_zero_init(head, shape):
  config = nets.UNetConfig.small(head)
  variables = nets.init_network(config, jax.random.key(0), shape[1:])
  assert set(variables) == {"params", "batch_stats"}
  x = jax.random.normal(jax.random.key(1), shape, jnp.float32)
  out = apply(config, variables, x)
  assert out.shape == expected_shape(config, shape)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(out), 0.0)  # untrained: s = 0 exactly -> step 1/L
  out, stats = apply(config, variables, x, train=True)
  assert out.shape == expected_shape(config, shape)
  np.testing.assert_array_equal(np.asarray(out), 0.0)


@pytest.mark.parametrize("head", POLICY_HEADS)
def test_bounded_for_huge_inputs(head):
  config = nets.UNetConfig.small(head)
  variables = perturbed(nets.init_network(config, jax.random.key(0), (64, 64, 2)),
                        jax.random.key(3), scale=1.0)
  x = 1e6 * jax.random.normal(jax.random.key(4), (2, 64, 64, 2), jnp.float32)
  out = np.asarray(apply(config, variables, x))
  assert np.all(np.isfinite(out))
  assert np.all(np.abs(out) <= config.max_log_scale)
  assert np.max(np.abs(out)) > 1.0  # saturates rather than being trivially zero


def test_float64_input_returns_float64():
  variables = nets.init_network(SMALL_DIAG, jax.random.key(0), (32, 32, 2))
  x = jnp.ones((1, 32, 32, 2), jnp.float64)
  out = apply(SMALL_DIAG, variables, x)
  assert out.dtype == jnp.float64 and out.shape == (1, 32, 32)


@pytest.mark.parametrize("head", POLICY_HEADS)
def test_one_adam_step_moves_output(head):
  config = nets.UNetConfig(features=4, depth=2, head=head)  # tiny: backward-pass compiles are slow
  variables = nets.init_network(config, jax.random.key(0), (16, 16, 2))
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 2), jnp.float32)

  def loss_fn(params):
    out, stats = apply(config, {"params": params,
                                             "batch_stats": variables["batch_stats"]}, x, True)
    return jnp.mean((out - 1.0) ** 2), stats

  opt = optax.adam(1e-2)

  @jax.jit
  def step(params):
    grads, stats = jax.grad(loss_fn, has_aux=True)(params)
    updates, _ = opt.update(grads, opt.init(params), params)
    return optax.apply_updates(params, updates), stats

  params, stats = step(variables["params"])
  out = apply(config, {"params": params, "batch_stats": stats}, x)
  assert np.all(np.asarray(out) > 0)  # moved towards the target 1


def test_non_divisible_shape_raises():
  variables = nets.init_network(SMALL_STEP, jax.random.key(0), (64, 64, 2))
  with pytest.raises(ValueError, match=r"\(1, 60, 64, 2\)"):
    nets.apply_network(SMALL_STEP, variables, jnp.zeros((1, 60, 64, 2)))
  with pytest.raises(ValueError, match="60"):
    nets.init_network(SMALL_STEP, jax.random.key(0), (60, 64, 2))
  with pytest.raises(ValueError):
    nets.apply_network(SMALL_STEP, variables, jnp.zeros((64, 64, 2)))


def test_config_validation_and_hashable():
  with pytest.raises(ValueError):
    nets.UNetConfig(head="bogus")
  assert hash(nets.UNetConfig.small("step")) == hash(nets.UNetConfig.small("step"))


def test_parameter_counts():
  shape = (256 + 24, 256 + 24, 2)
  for head in nets.HEADS:
    config = nets.UNetConfig.paper(head)
    abstract = jax.eval_shape(lambda k: nets.init_network(config, k, shape), jax.random.key(0))
    assert 5_000_000 < nets.count_params(abstract["params"]) < 9_000_000
    small = nets.UNetConfig.small(head)
    abstract = jax.eval_shape(lambda k: nets.init_network(small, k, (128, 128, 2)),
                              jax.random.key(0))
    assert nets.count_params(abstract["params"]) < 200_000


def test_train_mode_updates_batch_stats():
  variables = nets.init_network(SMALL_STEP, jax.random.key(0), (32, 32, 2))
  x = 3.0 + jax.random.normal(jax.random.key(1), (2, 32, 32, 2), jnp.float32)
  _, stats = apply(SMALL_STEP, variables, x, train=True)
  old = jax.tree_util.tree_leaves(variables["batch_stats"])
  new = jax.tree_util.tree_leaves(stats)
  assert jax.tree_util.tree_structure(stats) == jax.tree_util.tree_structure(
      variables["batch_stats"])
  assert all(not np.allclose(a, b) for a, b in zip(old, new))


def test_inference_deterministic_jit_and_vmap(trained_like):
  x = jax.random.normal(jax.random.key(5), (3, 64, 64, 2), jnp.float32)
  jitted = apply(SMALL_STEP, trained_like, x, False)
  again = apply(SMALL_STEP, trained_like, x, False)
  np.testing.assert_array_equal(np.asarray(jitted), np.asarray(again))
  assert np.ptp(np.asarray(jitted)) > 0  # the network is non-trivial

  eager = nets.apply_network(SMALL_STEP, trained_like, x, False)  # no jit
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)

  per_image = jax.jit(jax.vmap(
      lambda v: nets.apply_network(SMALL_STEP, trained_like, v[None], False)[0]))(x)
  assert per_image.shape == (3,)
  np.testing.assert_allclose(np.asarray(per_image), np.asarray(eager), rtol=1e-5, atol=1e-6)


def test_coefficient_mlp_equals_its_network_on_the_written_features():
  """CoefficientMLP enters the sub-band and iteration one-hots as rows of its first layer: the
  same function as the flax module applied to ``coefficient_features``, for random weights."""
  from jsgp import policy_nets
  from helpers import problem_for
  problem = problem_for("inpainting")
  net = policy_nets.CoefficientMLP()
  variables = net.init(jax.random.PRNGKey(0), problem.synthesis)
  keys = iter(jax.random.split(jax.random.PRNGKey(1), 8))
  variables = jax.tree_util.tree_map(
      lambda a: jax.random.normal(next(keys), a.shape, a.dtype) * 0.5, variables)
  x = jax.random.laplace(jax.random.PRNGKey(2), problem.op.in_shape)
  grad = problem.grad(x)
  module = policy_nets._CoefficientModule(net.hidden, net.max_log_scale)  # pylint: disable=protected-access
  for k in (0, 3, 20):
    written = module.apply(variables, policy_nets.coefficient_features(problem, x, grad, k))
    fast = net.log_scale(variables, problem, x, grad, k)
    gaps = ~problem.synthesis.coefficient_mask()
    assert not np.allclose(written, 0.0)
    np.testing.assert_allclose(fast, written, rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(np.asarray(fast)[gaps]))
