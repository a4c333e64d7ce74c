"""Learned DRS: the guarantee under adversarial policies; greedy training, checkpoints, resume."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jsgp import policies, training
from jsgp.training import greedy, loop
from jsgp.data import load_images
from jsgp.nets import UNetConfig, apply_network
from jsgp.policies import LearnedPolicy
from jsgp.solvers import DRS, solve

from helpers import four_problems, problem_for, reference, tiny_greedy_config


@struct.dataclass
class AdversarialPolicy:
  """Returns ``value`` (scaled by 1/L unless raw) as a stepsize or as a diagonal."""

  value: float
  diagonal: bool = struct.field(pytree_node=False, default=False)
  kind: str = struct.field(pytree_node=False, default="constant")

  def __call__(self, problem, x, grad):
    key = jax.random.PRNGKey(0)
    if self.kind == "noisy":  # a wildly varying diagonal: 10^[-6, 6] / L
      d = 10.0 ** (12 * jax.random.uniform(key, x.shape, x.dtype) - 6)
    elif self.kind == "random_sign":  # +-value / L, random signs
      d = self.value * jnp.where(jax.random.bernoulli(key, 0.5, x.shape), 1.0, -1.0)
    elif self.kind == "minus_grad":  # d = -value * grad (in units of 1/L)
      return -self.value * grad
    elif self.diagonal:
      d = jnp.full(x.shape, self.value, x.dtype)
    else:
      d = jnp.asarray(self.value, x.dtype)
    return d / problem.lipschitz


ADVERSARIES = {
    "huge": AdversarialPolicy(1e8), "tiny": AdversarialPolicy(1e-12),
    "zero": AdversarialPolicy(0.0), "negative": AdversarialPolicy(-5.0),
    "nan": AdversarialPolicy(float("nan")), "inf": AdversarialPolicy(float("inf")),
    "diag_huge": AdversarialPolicy(1e6, diagonal=True),
    "diag_negative": AdversarialPolicy(-1.0, diagonal=True),
    "diag_random": AdversarialPolicy(1.0, diagonal=True, kind="noisy"),
    "diag_random_sign": AdversarialPolicy(5.0, diagonal=True, kind="random_sign"),
    "minus_grad": AdversarialPolicy(1e3, diagonal=True, kind="minus_grad"),
}
CHECKPOINTS = (300, 3000)


@functools.lru_cache(maxsize=None)
def classical_gaps(task):
  """Relative gaps of DRS's hand-off method run alone from x0 = 0, at ``CHECKPOINTS``."""
  _, f_star = reference(task)
  objective = np.asarray(solve(DRS(ADVERSARIES["nan"]).handoff, problem_for(task),
                               max_iter=max(CHECKPOINTS), tol=-1).history.objective)
  return {k: (objective[k] - f_star) / f_star for k in CHECKPOINTS}


IN_DEFAULT_SUITE = {"relaxation": ("nan", "huge", "diag_random_sign", "minus_grad"),
                    "accelerated": ("nan", "minus_grad")}


@pytest.mark.parametrize("name, mode", [
    pytest.param(name, mode, id=f"{name}-{mode}", marks=(
        pytest.mark.slow if mode != "safeguarded" and name not in IN_DEFAULT_SUITE[mode] else ()))
    for mode in ("safeguarded", "relaxation", "accelerated") for name in sorted(ADVERSARIES)])
def test_drs_under_adversarial_policy(name, mode):
  """Whatever the policy outputs, in every mode: finite, monotone, and within 2x the hand-off
  method's own gap after 300 and 3000 iterations."""
  task = "inpainting"
  problem = problem_for(task)
  _, f_star = reference(task)
  result = solve(DRS(ADVERSARIES[name], mode=mode), problem, max_iter=max(CHECKPOINTS), tol=-1)
  objective = np.asarray(result.history.objective)
  assert np.all(np.isfinite(objective)) and np.all(np.isfinite(np.asarray(result.x)))
  assert np.all(np.diff(objective) <= 1e-12 * objective[:-1]), "objective increased"
  gaps = {k: (objective[k] - f_star) / f_star for k in CHECKPOINTS}
  for k, classical in classical_gaps(task).items():
    assert gaps[k] <= 2 * classical + 1e-12, f"{name} @ {k}: {gaps[k]:.2e} vs {classical:.2e}"
  assert gaps[max(CHECKPOINTS)] < 1e-6


@functools.lru_cache(maxsize=None)
def douglas_rachford_reaches(task, target):
  """Iterations Douglas-Rachford alone needs from x0 = 0 to a relative gap ``target``."""
  from jsgp.solvers import DouglasRachford
  _, f_star = reference(task)
  objective = np.asarray(solve(DouglasRachford(), problem_for(task), max_iter=3000,
                               tol=-1).history.objective)
  return int(np.argmax((objective - f_star) / f_star <= target))


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=() if name in ("nan", "huge", "diag_random_sign", "minus_grad")
                 else pytest.mark.slow) for name in sorted(ADVERSARIES)])
def test_drs_handing_off_to_douglas_rachford_under_adversarial_policy(name):
  """The pretrained inpainting / Fourier solvers' configuration (safeguarded, then
  Douglas-Rachford), whatever the policy outputs: finite, monotone through the policy phase, and
  to a 1e-8 gap within 25 % + 10 iterations of Douglas-Rachford alone (a rejected policy costs
  one iteration; an accepted one moves at most ``(1 + 2 trust_radius)``-fold away from x*)."""
  from jsgp.solvers import DouglasRachford
  task, budget = "inpainting", 5
  _, f_star = reference(task)
  method = DRS(ADVERSARIES[name], handoff=DouglasRachford(), max_policy_steps=budget)
  result = solve(method, problem_for(task), max_iter=3000, tol=-1)
  objective = np.asarray(result.history.objective)
  assert np.all(np.isfinite(objective)) and np.all(np.isfinite(np.asarray(result.x)))
  phase = objective[:int(result.state.policy_steps) + 1]
  assert np.all(np.diff(phase) <= 1e-12 * phase[:-1]), "objective increased in the policy phase"
  gaps = (objective - f_star) / f_star
  assert gaps[-1] < 1e-10
  reached = int(np.argmax(gaps <= 1e-8))
  assert reached <= 1.25 * douglas_rachford_reaches(task, 1e-8) + 10, (name, reached)


@pytest.mark.parametrize("mode", ["safeguarded", pytest.param("accelerated",
                                                              marks=pytest.mark.slow)])
def test_batched_drs_is_branchless_and_matches_single_runs(mode):
  """vmapped solves use DRS.vmap_variant (jnp.where instead of lax.cond): same numbers."""
  from jsgp.policies import ConstantPolicy
  problems = four_problems()
  method = DRS(ConstantPolicy(40.0), mode=mode)
  batched = solve(method, problems, max_iter=30)
  for i in range(4):
    single = solve(method, jax.tree_util.tree_map(lambda a: a[i], problems), max_iter=30)
    np.testing.assert_allclose(batched.history.objective[i], single.history.objective,
                               rtol=1e-10)
  assert method.vmap_variant().branchless and not method.branchless


def test_nan_policy_switches_off_for_good():
  problem = problem_for("fourier")
  state = DRS(ADVERSARIES["nan"]).init(problem, jnp.zeros(problem.op.in_shape))
  state = DRS(ADVERSARIES["nan"]).step(problem, state)
  assert not bool(state.use_policy)


def test_untrained_network_policy_is_the_lipschitz_step():
  problem = problem_for("deblur")
  cfg = UNetConfig(features=4, depth=2, head="diag")
  from jsgp.nets import init_network
  variables = init_network(cfg, jax.random.PRNGKey(0), tuple(problem.op.in_shape) + (3,))
  d = LearnedPolicy(variables, cfg)(problem, jnp.ones(problem.op.in_shape),
                                    jnp.ones(problem.op.in_shape))
  np.testing.assert_allclose(d, 1.0 / problem.lipschitz, rtol=1e-6)


# --- training ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_images():
  return load_images(None, "train", 32, n=4)


def test_interrupted_training_resumes_to_identical_parameters(tmp_path, tiny_images):
  config = tiny_greedy_config()
  cache = str(tmp_path / "cache")
  full = training.train(config, tiny_images, cache_dir=cache)
  ckpt = str(tmp_path / "ckpt")
  training.train(config, tiny_images, checkpoint_dir=ckpt, checkpoint_every=3, cache_dir=cache,
              stop_after_steps=7)  # killed mid stage 2: last checkpoint at step 6
  assert training.read_meta(ckpt)["step"] == 6
  resumed = training.train(config, tiny_images, checkpoint_dir=ckpt, checkpoint_every=3,
                        cache_dir=cache)
  for a, b in zip(jax.tree_util.tree_leaves(full.variables),
                  jax.tree_util.tree_leaves(resumed.variables)):
    np.testing.assert_array_equal(a, b)
  # The learned parameters moved away from the zero-initialised head.
  head = full.variables["params"]
  assert any(float(jnp.abs(leaf).max()) > 0 for leaf in jax.tree_util.tree_leaves(head))


def test_greedy_training_reduces_the_loss(tiny_images):
  """From x0 = 0 the greedy optimum is ~1/L, where the untrained net already is; after a few
  1/L steps it is far larger (BUILD_NOTES.md), so train on the iterates x^(4)."""
  config = tiny_greedy_config(num_stages=1, steps_per_stage=60, learning_rate=3e-3)
  data = training.make_dataset(config, tiny_images, None)
  state = loop.init_state(config, data.problems.op.in_shape)
  untrained = {"params": state.params, "batch_stats": state.batch_stats}
  x = data.iterates[0]
  for _ in range(2):
    x = greedy.advance(config.net, untrained, data.problems, x)
  data = data._replace(iterates=x[None])
  step = greedy.make_train_step(config)
  losses = []
  for _ in range(60):
    state, loss = step(state, data)
    losses.append(float(loss))
  assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:5])


def test_mismatched_checkpoint_is_refused(tmp_path, tiny_images):
  ckpt = str(tmp_path / "ckpt")
  training.train(tiny_greedy_config(num_stages=1), tiny_images, checkpoint_dir=ckpt)
  other = tiny_greedy_config(num_stages=1, net=UNetConfig(features=8, depth=2, head="step"))
  with pytest.raises(training.CheckpointMismatch, match="net.features: checkpoint 4 vs requested 8"):
    training.train(other, tiny_images, checkpoint_dir=ckpt)
  with pytest.raises(training.CheckpointMismatch, match="num_stages"):
    training.load_policy(ckpt, tiny_greedy_config(num_stages=2))
  policy = training.load_policy(ckpt, tiny_greedy_config(num_stages=1))
  assert isinstance(policy, LearnedPolicy)


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, tiny_images):
  ckpt = tmp_path / "ckpt"
  training.train(tiny_greedy_config(num_stages=1), tiny_images, checkpoint_dir=str(ckpt))
  step_dir = next(p for p in ckpt.iterdir() if p.name.isdigit())
  for path in step_dir.rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")
  with pytest.raises(ValueError, match="corrupt"):
    training.train(tiny_greedy_config(num_stages=1), tiny_images, checkpoint_dir=str(ckpt))


def test_stage_iterates_are_written_once_and_checked_on_resume(tmp_path, tiny_images):
  """Each stage's iterates go to their own file when made (not into every checkpoint); a resume
  whose iterate file is corrupt or missing stops with an error naming the stage."""
  config, ckpt, cache = tiny_greedy_config(), str(tmp_path / "ckpt"), str(tmp_path / "cache")
  training.train(config, tiny_images, checkpoint_dir=ckpt, checkpoint_every=3, cache_dir=cache,
              stop_after_steps=7)  # in stage 2: the iterates of stages 0 and 1 exist
  files = sorted(os.listdir(os.path.join(ckpt, "iterates")))
  assert files == ["stage_000.npy", "stage_000.npy.sha256", "stage_001.npy",
                   "stage_001.npy.sha256"]  # each with its checksum
  files = files[::2]
  np.testing.assert_array_equal(np.load(os.path.join(ckpt, "iterates", files[0])), 0.0)
  assert float(np.abs(np.load(os.path.join(ckpt, "iterates", files[1]))).max()) > 0
  path = os.path.join(ckpt, "iterates", "stage_001.npy")
  with open(path, "wb") as f:
    f.write(b"garbage")
  with pytest.raises(training.CorruptFile, match="iterates of stage 1 .* is corrupt"):
    training.train(config, tiny_images, checkpoint_dir=ckpt, cache_dir=cache)
  os.remove(path)
  with pytest.raises(ValueError, match="iterates of stage 1 .* missing or unreadable"):
    training.train(config, tiny_images, checkpoint_dir=ckpt, cache_dir=cache)


def test_training_step_compiles_once_for_all_stages(tiny_images):
  """The iterate set grows every stage, but lives in one K-stage buffer with a traced count: the
  jitted step must not be retraced per stage (at paper scale on a GPU each retrace cost ~10 s)."""
  config = tiny_greedy_config(num_stages=4, steps_per_stage=2)
  training.train(config, tiny_images)
  assert greedy.make_train_step(config)._cache_size() == 1  # pylint: disable=protected-access


def test_converged_solutions_are_cached(tmp_path, tiny_images):
  config = tiny_greedy_config()
  first = training.make_dataset(config, tiny_images, str(tmp_path))
  files = [f for f in os.listdir(tmp_path) if f.startswith("xstar_")]
  assert len(files) == 1 and files[0].endswith(".npz")
  again = training.make_dataset(config, tiny_images, str(tmp_path))
  np.testing.assert_array_equal(again.x_star, first.x_star)


@pytest.mark.parametrize("head", [pytest.param("step", marks=pytest.mark.slow), "diag"])
def test_chunked_advance_equals_eq6_then_eq8_on_the_whole_batch(tiny_images, head):
  """``advance`` runs the network ``chunk`` instances at a time (with a remainder chunk here:
  4 = 3 + 1); the next iterates must equal eq. 6 then eq. 8 computed on the whole batch at once
  with a network whose head is not the zero initialisation. (The float32 network's convolutions
  round differently at batch 3 and 4; exp(s) amplifies that to ~6e-6 of the largest coefficient
  for the diagonal head.)"""
  config = tiny_greedy_config(net=UNetConfig(features=4, depth=2, head=head))
  data = training.make_dataset(config, tiny_images, None)
  state = loop.init_state(config, data.problems.op.in_shape)
  params = jax.tree_util.tree_map(
      lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape, a.dtype),
      state.params)
  variables = {"params": params, "batch_stats": state.batch_stats}
  x = jax.vmap(lambda p: p.forward_backward(jnp.zeros(p.op.in_shape), p.grad(
      jnp.zeros(p.op.in_shape)), 1.0 / p.lipschitz))(data.problems)  # one 1/L step from 0
  inputs = jax.vmap(lambda p, v: policies.network_inputs(p, v, p.grad(v)))(data.problems, x)
  log_scale = apply_network(config.net, variables, inputs, train=False)
  d = jax.vmap(policies.stepsize_from_log_scale)(data.problems, log_scale)
  x_tilde = jax.vmap(lambda p, v, s: p.forward_backward(v, p.grad(v), s))(data.problems, x, d)
  expected = jax.vmap(lambda p, v: p.forward_backward(v, p.grad(v), 1.0 / p.lipschitz))(
      data.problems, x_tilde)
  chunked = greedy.advance(config.net, variables, data.problems, x, 3)
  assert float(jnp.max(jnp.abs(expected - x))) > 1e-3  # the step moved the iterates
  scale = float(jnp.max(jnp.abs(expected)))
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(expected), rtol=0, atol=1e-5 * scale)


def test_greedy_loss_against_the_image_is_the_nmse_of_the_policy_step(tiny_images):
  """``target="image"``: eq. 7's distance is taken between ``W^T x~`` and the original image
  (normalised by the image's energy), ``x~`` being the policy's eq.-6 step; checked against the
  same quantity computed directly from the problem pytree."""
  config = tiny_greedy_config(target="image")
  data = training.make_dataset(config, tiny_images, None)
  state = loop.init_state(config, data.problems.op.in_shape)
  x = data.x_star * 0.5  # somewhere between 0 and x*
  loss, _ = greedy.greedy_loss(state.params, state.batch_stats, config.net, data.problems, x,
                              data.images, "image")
  # The untrained network outputs the 1/L step: x~ = T_{lam/L}(x - grad/L).
  x_tilde = jax.vmap(lambda p, v: p.forward_backward(v, p.grad(v), 1.0 / p.lipschitz))(
      data.problems, x)
  images = jax.vmap(lambda p, v: p.image(v))(data.problems, x_tilde)
  expected = np.mean([np.sum((np.asarray(tiny_images[i]) - np.asarray(images[i])) ** 2)
                      / np.sum(np.asarray(tiny_images[i]) ** 2) for i in range(len(tiny_images))])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  to_solution, _ = greedy.greedy_loss(state.params, state.batch_stats, config.net, data.problems,
                                     x, data.x_star)
  assert abs(float(to_solution) - float(loss)) > 1e-3 * float(loss)
  with pytest.raises(ValueError, match="target"):
    tiny_greedy_config(target="images")
  with pytest.raises(ValueError, match="target"):
    greedy.greedy_loss(state.params, state.batch_stats, config.net, data.problems, x, data.images,
                      "images")
