"""Unrolled training: exact gradients through DRS, remat, memory, resume, the oracle."""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jsgp import nets, policies, training
from jsgp.training import checkpoint, unrolled
from jsgp.data import load_images
from jsgp.problems import Task, simulate_batch
from jsgp.solvers import DRS, run, run_batch, solve

from helpers import problem_for, reference

TASK = Task("inpainting", (32, 32), rate=0.5, lam=5.0)
NET = nets.UNetConfig(features=4, depth=2, head="step")


@struct.dataclass
class ExpPolicy:
  """``d = exp(theta) / L``: ``theta`` scalar (a stepsize) or canvas-shaped (a diagonal)."""

  theta: jax.Array

  def __call__(self, problem, x, grad):
    return jnp.exp(self.theta) / problem.lipschitz


def _batch(n=2, shape=(32, 32), dtype=np.float64, task=TASK):
  images = load_images(None, "train", shape[0], n=n, dtype=dtype)
  return images, simulate_batch(task, jnp.asarray(images), jax.random.PRNGKey(3))


@pytest.mark.parametrize("mode, diagonal", [
    pytest.param("relaxation", False, marks=pytest.mark.slow),
    pytest.param("relaxation", True, marks=pytest.mark.slow), ("safeguarded", False)])
def test_gradient_through_drs_steps_matches_finite_differences_float64(mode, diagonal):
  """d/dtheta of the trajectory loss through 6 DRS steps (relaxation: Armijo and fallback;
  safeguarded: the acceptance test): the jax.grad with the piecewise-constant factors (line
  search, acceptance) held fixed equals central differences, so the unrolled loss is
  differentiated exactly. Safeguarded at d = 1/L, where every candidate is accepted."""
  problem = problem_for("inpainting")
  x_star, _ = reference("inpainting")
  shape = problem.op.in_shape
  theta0 = (jnp.full(shape, 0.7) + 0.3 * jax.random.normal(jax.random.PRNGKey(0), shape)
            if diagonal else jnp.asarray(1.2 if mode == "relaxation" else 0.0))

  def loss(theta):
    method = DRS(ExpPolicy(theta), mode=mode, branchless=True)
    xs = run(method, problem, problem.zeros(), 6, unroll=True, record=lambda p, s: s.x).trace
    return jnp.mean(unrolled.nmse_to_solution_db(xs, x_star))

  grad = jax.grad(loss)(theta0)
  direction = jax.random.normal(jax.random.PRNGKey(1), jnp.shape(theta0))
  eps = 1e-6
  fd = (loss(theta0 + eps * direction) - loss(theta0 - eps * direction)) / (2 * eps)
  analytic = jnp.vdot(grad, direction)
  assert abs(float(analytic)) > 1e-3, "the policy should influence the trajectory"
  np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-5)


def _variables(head="step", seed=0):
  """A small network whose head is not zero (an untrained head gives zero gradients below it)."""
  config = NET if head == "step" else nets.UNetConfig(features=4, depth=2, head=head)
  in_shape = TASK.synthesis.in_shape
  variables = nets.init_network(config, jax.random.PRNGKey(seed), tuple(in_shape) + (3,))
  leaves, treedef = jax.tree_util.tree_flatten(variables["params"])
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  leaves = [leaf + 0.05 * jax.random.normal(k, leaf.shape, leaf.dtype)
            for leaf, k in zip(leaves, keys)]
  return config, {"params": jax.tree_util.tree_unflatten(treedef, leaves),
                  "batch_stats": variables["batch_stats"]}


@pytest.mark.slow  # ~1-3 min on 2 cores: two compilations of a 2-step unrolled training step
def test_remat_changes_memory_not_values():
  images, problems = _batch(2, dtype=np.float32)
  x_star = training.converged_solutions(problems, 100)
  config, variables = _variables("diag")
  grad_fn = jax.jit(jax.value_and_grad(unrolled.unrolled_loss), static_argnums=(2, 5, 6))
  args = (variables["params"], variables["batch_stats"], config, problems, x_star, 4)
  loss_r, grads_r = grad_fn(*args, True)
  loss_n, grads_n = grad_fn(*args, False)
  np.testing.assert_allclose(loss_r, loss_n, rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(grads_r), jax.tree_util.tree_leaves(grads_n)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads_r))
  temp = {(t, r): unrolled.loss_memory(config, variables, problems, x_star, t, r)["temp"]
          for t in (4, 8) for r in (True, False)}
  assert temp[8, True] < temp[8, False]
  # Without remat every iteration keeps the network's activations; with it, one state.
  assert temp[8, True] - temp[4, True] < 0.5 * (temp[8, False] - temp[4, False])


@pytest.mark.slow  # 14 s; keeps the default suite under 10 minutes
def test_calibrated_batch_stats_make_inference_equal_training_mode():
  config, variables = _variables("diag")
  inputs = jax.random.normal(jax.random.PRNGKey(5), (6,) + tuple(TASK.synthesis.in_shape) + (3,))
  inputs = 3.0 * inputs + 1.0
  calibrated = unrolled.calibrate_batch_stats(config, variables, inputs)
  train_out, _ = nets.apply_network(config, variables, inputs, train=True)
  infer_out = nets.apply_network(config, calibrated, inputs, train=False)
  np.testing.assert_allclose(infer_out, train_out, rtol=2e-3, atol=2e-3)
  before = nets.apply_network(config, variables, inputs, train=False)
  assert float(jnp.abs(before - train_out).max()) > 10 * float(jnp.abs(infer_out - train_out).max())


def _config(**changes):
  base = training.UnrolledConfig(task=TASK.replace(lam=0.1), net=NET, unroll_steps=3, num_steps=10,
                              batch_size=4, learning_rate=1e-3, reference_iters=100)
  return dataclasses.replace(base, **changes)


@pytest.mark.slow
def test_unrolled_training_lowers_the_loss_and_resumes_exactly(tmp_path):
  images = load_images(None, "train", 32, n=4)
  config = _config()
  full = unrolled.train_unrolled(config, images, log_every=1)
  assert np.all(np.isfinite(full.losses))
  # batch = the whole set, so the loss is a deterministic function of the parameters
  assert full.losses[-1] < full.losses[0] - 0.03, full.losses

  directory = str(tmp_path / "ckpt")
  unrolled.train_unrolled(config, images, checkpoint_dir=directory, checkpoint_every=5,
                          stop_after_steps=7)
  assert training.read_meta(directory)["step"] == 5
  resumed = unrolled.train_unrolled(config, images, checkpoint_dir=directory, checkpoint_every=5)
  for a, b in zip(jax.tree_util.tree_leaves(full.variables),
                  jax.tree_util.tree_leaves(resumed.variables)):
    np.testing.assert_array_equal(a, b)
  policy = training.load_policy(directory)
  assert policy.config == NET
  assert isinstance(training.config_of(directory), training.UnrolledConfig)

  with pytest.raises(training.CheckpointMismatch, match="unroll_steps"):
    unrolled.train_unrolled(_config(unroll_steps=4), images, checkpoint_dir=directory)


def test_warm_start_from_greedy_checkpoint_and_mismatched_network(tmp_path):
  images = load_images(None, "train", 32, n=4)
  greedy_dir = str(tmp_path / "greedy")
  greedy = training.GreedyConfig(task=TASK.replace(lam=0.1), net=NET, num_stages=1,
                                steps_per_stage=2, batch_size=2, reference_iters=100)
  result = training.train(greedy, images, checkpoint_dir=greedy_dir)
  _, problems = _batch(4, dtype=np.float32, task=TASK.replace(lam=0.1))
  start = unrolled.initial_variables(_config(warm_start=greedy_dir), problems)
  for a, b in zip(jax.tree_util.tree_leaves(start), jax.tree_util.tree_leaves(result.variables)):
    np.testing.assert_array_equal(a, b)
  other = nets.UNetConfig(features=4, depth=2, head="diag")
  with pytest.raises(training.CheckpointMismatch, match="warm start"):
    unrolled.initial_variables(_config(warm_start=greedy_dir, net=other), problems)


@pytest.mark.parametrize("diagonal", [False, True])
def test_greedy_oracle_is_the_best_grid_choice(diagonal):
  problem = problem_for("inpainting")
  x_star, _ = reference("inpainting")
  grid = policies.log_scale_grid(7.0, 141)
  x = 0.5 * x_star + 0.1 * jax.random.normal(jax.random.PRNGKey(2), x_star.shape)
  grad = problem.grad(x)
  oracle = policies.GreedyOraclePolicy(x_star, grid, diagonal=diagonal)
  d = oracle(problem, x, grad)
  assert d.shape == (x.shape if diagonal else ())
  errors = jax.vmap(lambda s: (problem.forward_backward(
      x, grad, policies.stepsize_from_log_scale(problem, s)) - x_star) ** 2)(grid)
  best = errors.min(axis=0).sum() if diagonal else errors.sum(axis=(1, 2)).min()
  achieved = jnp.sum((problem.forward_backward(x, grad, d) - x_star) ** 2)
  np.testing.assert_allclose(achieved, best, rtol=1e-12)
  if diagonal:  # a per-coefficient choice lands strictly closer than the best single stepsize
    assert achieved < 0.99 * errors.sum(axis=(1, 2)).min()


def test_oracle_driven_drs_is_monotone_and_beats_pgm():
  problem = problem_for("inpainting")
  x_star, _ = reference("inpainting")
  grid = policies.log_scale_grid(7.0, 141)
  result = solve(DRS(policies.GreedyOraclePolicy(x_star, grid, diagonal=True)), problem,
                 max_iter=10)
  objective = np.asarray(result.history.objective)
  assert np.all(np.diff(objective) <= 1e-12 * objective[:-1])
  from jsgp.solvers import PGM  # pylint: disable=import-outside-toplevel
  pgm = solve(PGM(), problem, max_iter=10)
  assert (jnp.sum((result.x - x_star) ** 2) < 0.5 * jnp.sum((pgm.x - x_star) ** 2))


@pytest.mark.slow  # an end-to-end study run: ~2-4 min on 2 cores
def test_unrolled_experiment_writes_every_row(tmp_path):
  from experiments import cli, methods  # pylint: disable=import-outside-toplevel
  from experiments import unrolled as experiment  # pylint: disable=import-outside-toplevel
  argv = ["prog", "--image_size=32", "--n_train=2", "--n_test=2", "--num_stages=1",
          "--steps_per_stage=1", "--batch_size=2", "--net_features=4", "--net_depth=2",
          "--reference_iters=10", "--unroll_steps=2", "--unrolled_train_steps=1",
          "--unrolled_batch_size=2", "--report_iters=1,3", "--memory_unroll_steps=2",
          "--oracle_grid=15", f"--out_dir={tmp_path}"]
  experiment.run(cli.parse(experiment.StudyConfig, argv))
  with open(tmp_path / "results.json") as f:
    out = json.load(f)
  assert set(out["results"]) == set(methods.STUDY_METHODS)
  for name, row in out["results"].items():
    assert len(row["nmse"]) == 2 and all(math.isfinite(v) for v in row["nmse"] + row[
        "to_solution"]), name
  assert {(m["unroll_steps"], m["remat"]) for m in out["memory"]} == {(2, True), (2, False)}
  assert (tmp_path / "nmse_vs_iteration.png").stat().st_size > 1000
  assert "Greedy oracle, diagonal" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_descent_penalty_sees_the_switch_off_that_the_distance_cannot():
  """A policy whose direction is no descent direction (relaxation mode) hands off for good: the
  distance-to-x* loss has no gradient for that, the hinge has, and the state records it."""
  problem = problem_for("inpainting")

  def parts(theta):
    method = DRS(ExpPolicy(theta), mode="relaxation", branchless=True)
    states = run(method, problem, problem.zeros(), 4, unroll=True, record=lambda p, s: s).trace
    return states, jnp.mean(jax.nn.relu(states.decrease_ratio))

  good, _ = parts(jnp.asarray(0.0))           # d = 1/L: always a descent direction
  assert bool(jnp.all(good.use_policy)) and float(jnp.max(good.decrease_ratio)) < 0
  # d = e^9 / L (trust-limited): a later step overshoots, Delta > 0, and the policy is off for good.
  bad, hinge = parts(jnp.asarray(9.0))
  used = np.asarray(bad.use_policy)
  assert used[0] and float(bad.decrease_ratio[0]) < 0 and not used.all()
  off = int(np.argmin(used))
  assert not used[off:].any() and float(bad.decrease_ratio[off]) > 0
  assert float(hinge) > 0 and abs(float(jax.grad(lambda t: parts(t)[1])(jnp.asarray(9.0)))) > 0


def test_safeguard_miss_has_a_gradient_for_the_unrolled_hinge():
  """Safeguarded mode: a rejected candidate (d = e^3 / L) ends the policy phase, records how
  far it missed the PGM bound (> 0), and that miss is differentiable in the policy."""
  problem = problem_for("inpainting")

  def miss(theta):
    method = DRS(ExpPolicy(theta), branchless=True)
    states = run(method, problem, problem.zeros(), 3, unroll=True, record=lambda p, s: s).trace
    return states, jnp.mean(jax.nn.relu(states.decrease_ratio))

  good, _ = miss(jnp.asarray(0.0))
  assert bool(jnp.all(good.use_policy)) and float(jnp.max(good.decrease_ratio)) <= 0
  bad, hinge = miss(jnp.asarray(3.0))
  assert not bool(bad.use_policy[0]) and float(bad.decrease_ratio[0]) > 0
  assert float(hinge) > 0 and abs(float(jax.grad(lambda t: miss(t)[1])(jnp.asarray(3.0)))) > 0


def test_checkpoint_without_a_newer_defaulted_setting_still_matches(tmp_path):
  """A checkpoint written before a config field existed matches a run leaving it at its
  default, and is refused for any other value."""
  config = _config()
  meta = {"kind": "unrolled", "config": {k: v for k, v in config.to_dict().items() if k != "descent_penalty"}}
  checkpoint.check_compatible(str(tmp_path), meta, config)
  with pytest.raises(training.CheckpointMismatch, match="descent_penalty"):
    checkpoint.check_compatible(str(tmp_path), meta, _config(descent_penalty=1.0))


@pytest.mark.slow  # 13 s; keeps the default suite under 10 minutes
def test_image_target_loss_is_the_reported_nmse_along_the_trajectory():
  """``target="image"`` scores what the experiments report: the mean over k = 1..T of the
  driver's NMSE (dB) of ``W^T x_k`` against the original image, for the same DRS."""
  images, problems = _batch(2, dtype=np.float64)
  config, variables = _variables("step")
  steps = 3
  loss = unrolled.unrolled_loss(variables["params"], variables["batch_stats"], config, problems,
                                jnp.asarray(images), steps, target="image")
  method = unrolled.learned_solver(config, variables)
  history = run_batch(method, problems, problems.zeros(), steps,
                      ground_truth=jnp.asarray(images)).history.nmse
  np.testing.assert_allclose(float(loss), float(jnp.mean(history[:, 1:])), rtol=1e-10)
  # Against x* it is another number: the targets are not interchangeable.
  x_star = training.converged_solutions(problems, 100)
  to_solution = unrolled.unrolled_loss(variables["params"], variables["batch_stats"], config,
                                       problems, x_star, steps)
  assert abs(float(to_solution) - float(loss)) > 0.1
  with pytest.raises(ValueError, match="target"):
    unrolled.unrolled_loss(variables["params"], variables["batch_stats"], config, problems,
                           x_star, steps, target="images")
  with pytest.raises(ValueError, match="target"):
    _config(target="x")
