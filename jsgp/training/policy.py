"""Training a policy through the solver it drives: ``H`` iterations of the default DRS.

A trained policy's job is to hand the classical tail a point close to the minimiser: the tail's
iterations to a given accuracy fall with the distance of its starting point to ``x*`` (measured:
BUILD_NOTES.md). So the loss is that distance, in dB, along the policy phase and at its end:

  ``L = mean_batch [ 1/2 D_H + 1/2 mean_{k=1..H} D_k ] + descent_penalty * mean relu(miss_k)``

with ``D_k = 10 log10(||x_k - x*||^2 / ||x*||^2)`` and ``x_k`` the iterates of
``DRS(policy, mode, max_policy_steps=H)`` (the default safeguarded mode or the accelerated one;
the safeguard included: a rejected proposal gives the PGM
step, with no gradient to the policy) run by the driver's differentiable mode
(``run_batch(..., unroll=True)``, ``lax.scan`` with ``jax.checkpoint`` per step). ``miss_k`` is
how much the proposal's objective exceeded ``F(x_k)`` relative to it (> 0: rejected), so the
hinge teaches steps the safeguard keeps.

Robust training: each training image gets its own sampling rate, noise level and ``lam``
multiplier drawn uniformly from the configured ranges (deterministic in the seed), so one policy
serves the conditions users meet rather than the one it was trained on.

Any architecture of ``jsgp.policy_nets`` or ``jsgp.nets.UNetConfig`` can be trained; a U-Net's
BatchNorm statistics are calibrated once on PGM iterates and then frozen (the solver applies the
network in inference mode).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jsgp import policies
from jsgp.problems import L1Problem, Task, TaskNumbers, simulate_batch
from jsgp.solvers import DRS, drs, run_batch
from jsgp.training import checkpoint, files, loop
from jsgp.training.dataset import converged_solutions
from jsgp.training.greedy import TrainResult


def sample_settings(task: Task, count: int, seed: int, rate_range: Tuple[float, float],
                    noise_range: Tuple[float, float], lam_range: Tuple[float, float]
                    ) -> TaskNumbers:
  """Per-image settings ``(count,)``: rate and noise uniform in their ranges, ``lam`` the task's
  times a log-uniform factor in ``lam_range`` (the rate only where the task has one)."""
  rng = np.random.default_rng(seed + 17)
  rates = rng.uniform(*rate_range, count) if task.name in ("inpainting", "fourier") else (
      np.full(count, task.rate))
  noise = rng.uniform(*noise_range, count)
  lam = task.regularization * np.exp(rng.uniform(*np.log(lam_range), count))
  return TaskNumbers(rates, noise, lam, np.full(count, task.blur_sigma))


def handoff_loss(params, batch_stats, net, problems: L1Problem, x_star: jax.Array,
                 policy_steps: int, descent_penalty: float = 1.0,
                 mode: str = "safeguarded") -> jax.Array:
  """The loss of the module docstring for ``problems`` batched over ``B``, ``x_star``
  ``(B, Hc, Wc)``, from ``x_0 = 0``, through ``DRS(mode=mode)``."""
  policy = policies.LearnedPolicy({"params": params, "batch_stats": batch_stats}, net)
  method = DRS(policy, mode=mode, max_policy_steps=policy_steps, branchless=True)
  norm = jnp.sum(x_star ** 2, axis=(-2, -1))

  def record(problem, state):
    return state.x, state.decrease_ratio

  xs, miss = run_batch(method, problems, problems.zeros(), policy_steps, unroll=True,
                       record=record).trace
  err = jnp.sum((xs - x_star[:, None]) ** 2, axis=(-2, -1)) / norm[:, None]
  dist = 10.0 * jnp.log10(err + 1e-12)                                # (B, H)
  loss = 0.5 * jnp.mean(dist[:, -1]) + 0.5 * jnp.mean(dist)
  return loss + descent_penalty * jnp.mean(jax.nn.relu(miss))


@dataclasses.dataclass(frozen=True)
class PolicyTrainingConfig:
  """A policy trained through ``policy_steps`` iterations of the default DRS (module docstring).

  ``net``: the architecture (``jsgp.policy_nets`` or ``jsgp.nets.UNetConfig``). Ranges are
  ``(low, high)``: sampling rate (inpainting, fourier), noise std (0-255 scale) and ``lam``
  multiplier (log-uniform).
  """

  task: Task
  net: Any
  policy_steps: int = 5
  num_steps: int = 600
  batch_size: int = 8
  learning_rate: float = 3e-3
  grad_clip: float = 1.0
  seed: int = 0
  reference_iters: int = 2000
  rate_range: Tuple[float, float] = (0.3, 0.7)
  noise_range: Tuple[float, float] = (0.0, 0.0)
  lam_range: Tuple[float, float] = (0.5, 2.0)
  descent_penalty: float = 1.0
  mode: str = "safeguarded"
  init_sha256: str = ""  # the weights training starts from (a policy file's sha256; "": fresh)

  def __post_init__(self):
    if self.mode not in drs.MODES:
      raise ValueError(f"mode must be one of DRS's modes {drs.MODES}, got {self.mode!r}")
    for name in ("policy_steps", "num_steps", "batch_size", "reference_iters"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("rate_range", "noise_range", "lam_range"):
      low, high = getattr(self, name)
      if not low <= high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {(low, high)}")
    if not (0 < self.rate_range[0] and self.rate_range[1] <= 1):
      raise ValueError(f"rate_range must lie in (0, 1], got {self.rate_range}")
    if self.noise_range[0] < 0 or self.lam_range[0] <= 0:
      raise ValueError("noise_range must be >= 0 and lam_range > 0")

  @property
  def total_steps(self) -> int:
    return self.num_steps

  def to_dict(self):
    out = json.loads(json.dumps(dataclasses.asdict(self)))
    out["net"]["kind"] = self.net.kind
    return out


def _solutions(config: PolicyTrainingConfig, problems: L1Problem, images: np.ndarray,
               numbers: TaskNumbers, cache_dir: Optional[str]) -> jax.Array:
  """``x*`` of the training problems, cached in ``cache_dir`` (keyed by everything that
  determines them)."""
  if not cache_dir:
    return converged_solutions(problems, config.reference_iters)
  digest = hashlib.sha256()
  digest.update(json.dumps(dataclasses.asdict(config.task), sort_keys=True).encode())
  digest.update(f"{config.seed}/{config.reference_iters}".encode())
  for array in (images,) + tuple(numbers):
    digest.update(np.ascontiguousarray(array, np.float64).tobytes())
  path = os.path.join(cache_dir, f"policy_xstar_{digest.hexdigest()[:16]}.npz")
  with files.exclusive(path + ".lock", f"x* cache {path}", wait=True):
    if os.path.exists(path):
      try:
        with np.load(path) as cached:
          x_star = cached["x_star"]
        if x_star.shape == (len(images),) + tuple(problems.op.in_shape):
          return jnp.asarray(x_star)
      except Exception as err:  # pylint: disable=broad-except
        logging.warning("x* cache %s unreadable (%s); recomputing", path, err)
    start = time.time()
    x_star = jax.block_until_ready(converged_solutions(problems, config.reference_iters))
    logging.info("x* for %d problems (%d iterations) in %.0fs", len(images),
                 config.reference_iters, time.time() - start)
    files.write_arrays(path, {"x_star": np.asarray(x_star)})
  return x_star


def make_training_set(config: PolicyTrainingConfig, images: np.ndarray,
                      cache_dir: Optional[str] = None) -> Tuple[L1Problem, jax.Array]:
  """``(problems, x*)`` for ``images`` ``(N, H, W)``, each with its own sampled settings."""
  numbers = sample_settings(config.task, len(images), config.seed, config.rate_range,
                            config.noise_range, config.lam_range)
  images = np.asarray(images)
  problems = simulate_batch(config.task, jnp.asarray(images), jax.random.PRNGKey(config.seed),
                            numbers)
  return problems, _solutions(config, problems, images, numbers, cache_dir)


def initial_variables(config: PolicyTrainingConfig, problems: L1Problem):
  """A fresh network; a U-Net's BatchNorm statistics calibrated on PGM iterates."""
  variables = config.net.init(jax.random.PRNGKey(config.seed), config.task.synthesis)
  if config.net.kind != "unet":  # a coarse U-Net's BatchNorm keeps its initial (identity) stats
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  from jsgp.training import unrolled  # pylint: disable=import-outside-toplevel
  inputs = unrolled.pgm_network_inputs(problems, config.policy_steps, 256)
  return unrolled.calibrate_batch_stats(config.net, variables, inputs)


@functools.lru_cache(maxsize=8)
def make_step(config: PolicyTrainingConfig):
  """The jitted optimiser step ``(state, (problems, x*)) -> (state, loss)`` on the hand-off
  loss (``loop.minibatch_step``, PRNG stream 3)."""

  def loss(params, batch_stats, problems, x_star):
    return handoff_loss(params, batch_stats, config.net, problems, x_star, config.policy_steps,
                        config.descent_penalty, config.mode)

  return loop.minibatch_step(config, 3, loss)


def train_policy(config: PolicyTrainingConfig, images: np.ndarray, *,
                 checkpoint_dir: Optional[str] = None, checkpoint_every: int = 100,
                 cache_dir: Optional[str] = None, stop_after_steps: Optional[int] = None,
                 log_every: int = 25, initial: Optional[dict] = None) -> TrainResult:
  """Train ``config.net`` on ``images`` ``(N, H, W)``, from ``initial`` variables (``params``,
  ``batch_stats``; e.g. a shipped policy's, to fine-tune it: then ``config.init_sha256`` names
  them) or a fresh network. With ``checkpoint_dir`` the run saves every
  ``checkpoint_every`` steps and at the end, and resumes from the latest checkpoint there
  (refusing another configuration's); a resumed run equals an uninterrupted one."""
  with files.exclusive_directory(checkpoint_dir):
    start = time.time()
    problems, x_star = make_training_set(config, images, cache_dir)
    if checkpoint_dir and checkpoint.read_meta(checkpoint_dir) is not None:
      template = loop.init_state(config)
      state, _ = checkpoint.restore(checkpoint_dir, config, template)
      logging.info("resumed policy training from %s at step %d", checkpoint_dir,
                   int(state.step))
    else:
      if initial is None and config.init_sha256:
        raise ValueError(f"config.init_sha256={config.init_sha256!r} names starting weights; "
                         "pass them as initial=")
      start_from = initial_variables(config, problems) if initial is None else initial
      state = loop.state_from_variables(config, start_from)
    save = None
    if checkpoint_dir:
      save = lambda step, state, data: checkpoint.save(checkpoint_dir, config, state)
    state, _, losses = loop.run(
        make_step(config), state, (problems, x_star), total_steps=config.num_steps,
        items_per_step=config.batch_size, log_every=log_every, checkpoint_every=checkpoint_every,
        save=save, stop_after_steps=stop_after_steps,
        label=lambda step: f"{config.net.kind} H={config.policy_steps} ")
    return TrainResult(variables=loop.variables_of(state), losses=losses,
                       seconds=time.time() - start)
