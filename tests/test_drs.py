"""DRS's contract beyond the adversarial-policy guarantee (tests/test_learned.py): its settings,
the errors a broken policy gets, the state after the hand-off, and that a trained policy's steps
are kept by the default safeguard."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jsgp import policies, policy_nets
from jsgp.data import load_images
from jsgp.policies import ConstantPolicy
from jsgp.problems import Task, simulate
from jsgp.solvers import DRS, FISTA, PGM, solve
from jsgp.training.policy import PolicyTrainingConfig, train_policy

from helpers import problem_for

MODES = ["safeguarded", "relaxation", "accelerated"]
# The accelerated mode's variant of a check, behind ``slow`` where another test covers the mode.
MODES_FAST = ["safeguarded", "relaxation", pytest.param("accelerated", marks=pytest.mark.slow)]


@pytest.mark.parametrize("budget", [2.5, float("nan"), True, -1, "5"])
def test_policy_budget_must_be_a_non_negative_integer(budget):
  with pytest.raises(ValueError, match="max_policy_steps"):
    DRS(ConstantPolicy(2.0), max_policy_steps=budget)


@struct.dataclass
class BrokenPolicy(policies.Stateless):
  """Returns something that is not a stepsize."""

  what: str = struct.field(pytree_node=False, default="none")

  def __call__(self, problem, x, grad):
    if self.what == "none":
      return None
    if self.what == "shape":
      return jnp.ones((3, 5), x.dtype)
    return jnp.ones(x.shape, jnp.int32)


@pytest.mark.parametrize("what", ["none", "shape", "int"])
@pytest.mark.parametrize("mode", MODES_FAST)
def test_a_policy_returning_no_stepsize_gets_an_error_naming_it(what, mode):
  problem = problem_for("inpainting")
  with pytest.raises((TypeError, ValueError), match="BrokenPolicy"):
    solve(DRS(BrokenPolicy(what), mode=mode), problem, max_iter=3)


@pytest.mark.parametrize("mode", MODES_FAST)
def test_state_after_the_hand_off_has_the_true_residual(mode):
  problem = problem_for("fourier")
  result = solve(DRS(ConstantPolicy(1.5), mode=mode, max_policy_steps=3), problem,
                 max_iter=25, tol=-1)
  state = result.state
  np.testing.assert_allclose(state.residual, problem.op.apply(state.x) - problem.y,
                             rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(problem.y))))
  assert np.all(np.asarray(result.history.stepsize) > 0)


@pytest.mark.parametrize("mode", MODES)
def test_recorded_stepsizes_are_positive_under_a_random_sign_policy(mode):
  @struct.dataclass
  class RandomSign(policies.Stateless):
    def __call__(self, problem, x, grad):
      signs = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(1), 0.5, x.shape), 1.0, -1.0)
      return 5.0 * signs / problem.lipschitz
  result = solve(DRS(RandomSign(), mode=mode), problem_for("inpainting"), max_iter=15, tol=-1)
  assert np.all(np.asarray(result.history.stepsize) > 0)


def test_a_zero_budget_is_the_hand_off_method():
  problem = problem_for("inpainting")
  drs = solve(DRS(ConstantPolicy(3.0), max_policy_steps=0), problem, max_iter=40, tol=-1)
  handoff = solve(DRS(ConstantPolicy(3.0)).handoff, problem, max_iter=40, tol=-1)
  np.testing.assert_allclose(drs.history.objective[1:], handoff.history.objective[1:],
                             rtol=1e-12)


def test_accelerated_mode_with_the_lipschitz_step_is_its_hand_off_fista():
  """The policy's step is proposed at FISTA's extrapolated point and FISTA's momentum carries on:
  a policy returning 1/L gives MFISTA's (and FISTA's) iterates, policy phase and tail alike."""
  problem = problem_for("fourier")
  for handoff in (FISTA(max_backtracks=0, monotone=True), FISTA(max_backtracks=0)):
    drs = solve(DRS(ConstantPolicy(1.0), mode="accelerated", handoff=handoff,
                    max_policy_steps=8), problem, max_iter=30, tol=-1)
    alone = solve(handoff, problem, max_iter=30, tol=-1)
    np.testing.assert_allclose(drs.history.objective, alone.history.objective, rtol=1e-10)
    assert int(drs.state.policy_steps) == 8


def test_accelerated_mode_needs_a_constant_step_fista_hand_off():
  for handoff in (PGM(), FISTA(lipschitz0_factor=0.1)):
    with pytest.raises(ValueError, match="accelerated"):
      DRS(ConstantPolicy(2.0), mode="accelerated", handoff=handoff)


# --- a trained policy is used by the default ------------------------------------------------

@pytest.fixture(scope="module")
def trained_subband_policy():
  """A per-sub-band policy trained for a few steps on tiny inpainting problems (float64)."""
  images = load_images(None, "train", 32, n=6, dtype=np.float64)
  config = PolicyTrainingConfig(Task("inpainting", (32, 32)), policy_nets.SubbandMLP(hidden=8),
                                policy_steps=3, num_steps=40, batch_size=4, reference_iters=400,
                                learning_rate=2e-2)
  result = train_policy(config, images, log_every=1)
  return policies.LearnedPolicy(result.variables, config.net), result.losses


def test_policy_training_lowers_the_hand_off_loss(trained_subband_policy):
  _, losses = trained_subband_policy
  losses = np.asarray(losses)
  assert np.mean(losses[-8:]) < np.mean(losses[:4]) - 1.0


def test_fine_tuning_starts_from_the_given_weights(trained_subband_policy):
  """``train_policy(..., initial=)`` (``experiments.train_policy --init_from``) continues from a
  trained policy: its first loss is the trained level, not a fresh network's; a configuration
  that names starting weights without them is refused."""
  policy, losses = trained_subband_policy
  images = load_images(None, "train", 32, n=6, dtype=np.float64)
  config = PolicyTrainingConfig(Task("inpainting", (32, 32)), policy_nets.SubbandMLP(hidden=8),
                                policy_steps=3, num_steps=2, batch_size=4, reference_iters=400,
                                learning_rate=1e-4, init_sha256="trained in this test")
  tuned = train_policy(config, images, log_every=1, initial=policy.variables)
  assert np.mean(tuned.losses) < np.mean(np.asarray(losses)[:4]) - 1.0
  with pytest.raises(ValueError, match="init_sha256"):
    train_policy(config, images, log_every=1)


def test_the_default_keeps_a_trained_policys_steps_and_gets_closer_than_fista(
    trained_subband_policy):
  """Regression: the former default (candidate against PGM's guaranteed-decrease bound) rejected
  every step of a trained inpainting policy, turning DRS into its hand-off method."""
  policy, _ = trained_subband_policy
  image = jnp.asarray(load_images(None, "test", 32, n=1, dtype=np.float64)[0])
  problem = simulate(Task("inpainting", (32, 32)), image, jax.random.PRNGKey(3))
  result = solve(DRS(policy, max_policy_steps=3), problem, max_iter=3, tol=-1)
  assert int(result.state.accepted) >= 2
  x_star = solve(FISTA(max_backtracks=0), problem, max_iter=4000, tol=-1).x
  distance = lambda x: float(jnp.linalg.norm(x - x_star))
  pgm = solve(PGM(), problem, max_iter=3, tol=-1)
  fista = solve(FISTA(max_backtracks=0), problem, max_iter=3, tol=-1)
  assert distance(result.x) < min(distance(pgm.x), distance(fista.x))


@pytest.mark.slow  # 22 s of compilation
def test_a_coarse_unet_policy_trains_through_the_accelerated_mode():
  """Architectures with BatchNorm other than the paper's U-Net keep their (frozen) statistics."""
  images = load_images(None, "train", 32, n=2, dtype=np.float64)
  config = PolicyTrainingConfig(Task("inpainting", (32, 32)), policy_nets.CoarseUNet(),
                                policy_steps=2, num_steps=2, batch_size=2, reference_iters=50,
                                mode="accelerated")
  result = train_policy(config, images, log_every=1)
  assert np.all(np.isfinite(np.asarray(result.losses))) and len(result.losses) == 2
  assert "batch_stats" in result.variables and result.variables["batch_stats"]
