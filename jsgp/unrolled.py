"""Unrolled training: the stepsize / diagonal network trained through T solver iterations.

Greedy training (``jsgp.train``, the paper's eq. 7-9) scores each learned step on its own: the
step that lands closest to ``x*`` now. Here the network is scored on the whole trajectory of the
solver it will drive: ``T`` iterations of the actual ``DRS.step`` (relaxation test, Armijo search,
fallback and all) run in ``lax.scan`` from ``x_0 = 0``, with the loss

  ``L = mean over the batch and k = 1..T of 10 log10(||x_k - x*||^2 / ||x*||^2)``,

the mean NMSE to ``x*`` in dB along the trajectory (every iteration weighs alike, whatever its
error's magnitude); or, with ``target="image"``, the mean NMSE of ``W^T x_k`` to the original
image, the measure the experiments report. The Armijo factor and the relaxation decisions are piecewise constant in the
iterate, so their derivative is zero almost everywhere; ``jsgp.solvers.linesearch.armijo`` cuts
them from the autodiff graph, which makes ``jax.grad`` through the solver step exact wherever those
decisions do not switch. BatchNorm runs on frozen statistics, exactly as the solver applies the
network (``LearnedPolicy``): the warm start's, or, from scratch, statistics calibrated once on
proximal-gradient iterates of the training set.

Each iteration is wrapped in ``jax.checkpoint`` (``remat``), so the backward pass stores one DRS
state per iteration instead of every activation of every network call: memory grows with ``T``
by a canvas-sized state, not by a network's activations (``loss_memory`` measures it).
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from jsgp import nets, policies, train
from jsgp.problems import L1Problem
from jsgp.solvers import DRS
from jsgp.solvers.pgm import PGM
from jsgp.train import TrainResult, TrainState, UnrolledConfig

__all__ = ["UnrolledConfig", "trajectory", "unrolled_loss", "loss_memory", "make_unrolled_step",
           "calibrate_batch_stats", "initial_variables", "train_unrolled"]


def learned_solver(net: nets.UNetConfig, variables) -> DRS:
  """The DRS method a trained network drives, in its vmap form (no ``lax.cond``)."""
  return DRS(policies.LearnedPolicy(variables, net), branchless=True)


def trajectory(method, problem: L1Problem, x0: jax.Array, num_steps: int, remat: bool = True,
               record: Callable[[Any], Any] = lambda state: state.x):
  """``record(state)`` after steps ``1 .. T`` of ``method`` from ``x0``, stacked along a new
  leading ``T`` axis; by default the iterates, ``(T, Hc, Wc)``. Differentiable; with ``remat``
  each step is a ``jax.checkpoint``. Only what ``record`` returns is kept per step."""

  def body(state, _):
    new = method.step(problem, state)
    return new, record(new)

  if remat:
    body = jax.checkpoint(body)
  _, recorded = jax.lax.scan(body, method.init(problem, x0), None, length=num_steps)
  return recorded


def nmse_to_solution_db(xs: jax.Array, x_star: jax.Array) -> jax.Array:
  """``10 log10(||x - x*||^2 / ||x*||^2)`` over the last two axes: ``(..., H, W) -> (...)``."""
  err = jnp.sum((xs - x_star) ** 2, axis=(-2, -1))
  return 10.0 * jnp.log10(err / jnp.sum(x_star ** 2, axis=(-2, -1)) + 1e-20)


def unrolled_loss(params, batch_stats, net: nets.UNetConfig, problems: L1Problem,
                  targets: jax.Array, unroll_steps: int, remat: bool = True,
                  descent_penalty: float = 0.0, target: str = "solution") -> jax.Array:
  """Mean over the batch ``B`` and ``k = 1..T`` of the dB distance of iterate ``k`` to the
  target, plus ``descent_penalty`` times the mean hinge ``max(0, Delta_k / |F(x_{k-1})|)``.

  ``target="solution"`` (the paper's goal: reach ``x*`` fast): ``targets`` is ``x*``
  ``(B, Hc, Wc)`` and the distance is ``||x_k - x*||^2 / ||x*||^2`` on the coefficients.
  ``target="image"``: ``targets`` are the original images ``(B, H, W)`` and the distance is the
  NMSE of ``W^T x_k`` against them, the quantity the experiments report. The solver is the same
  DRS either way (monotone in ``F``, converging to ``x*``); only which point of the way the
  network aims at changes.

  The hinge is there because DRS switches the policy off for good the first time its direction is
  no descent direction (``Delta >= 0``). That switch is a discrete decision: it has no gradient,
  and after it no later iterate depends on the network, so the distance term alone cannot see
  what the switch costs. The hinge is differentiable in the direction that caused it.

  ``problems`` batched over ``B``; the solve starts at zero.
  """
  train.check_target(target)
  method = learned_solver(net, {"params": params, "batch_stats": batch_stats})
  as_target = (lambda p, x: x) if target == "solution" else (lambda p, x: p.image(x))

  def one(problem):
    x0 = jnp.zeros(problem.op.in_shape, problem.lipschitz.dtype)
    return trajectory(method, problem, x0, unroll_steps, remat,
                      record=lambda s: (as_target(problem, s.x), s.decrease_ratio))

  estimates, decrease_ratio = jax.vmap(one)(problems)
  loss = jnp.mean(nmse_to_solution_db(estimates, targets[:, None]))
  if descent_penalty:
    loss = loss + descent_penalty * jnp.mean(jax.nn.relu(decrease_ratio))
  return loss


def loss_memory(net: nets.UNetConfig, variables, problems: L1Problem, x_star: jax.Array,
                unroll_steps: int, remat: bool) -> Dict[str, int]:
  """Bytes XLA allocates for one value-and-gradient of ``unrolled_loss`` (from the compiled
  program's memory analysis, so no run is needed): ``temp`` is the peak of intermediate buffers,
  ``argument`` and ``output`` the inputs and results."""
  grad_fn = jax.jit(jax.value_and_grad(unrolled_loss), static_argnums=(2, 5, 6))
  compiled = grad_fn.lower(variables["params"], variables["batch_stats"], net, problems, x_star,
                           unroll_steps, remat).compile()
  analysis = compiled.memory_analysis()
  return {"temp": int(analysis.temp_size_in_bytes),
          "argument": int(analysis.argument_size_in_bytes),
          "output": int(analysis.output_size_in_bytes)}


def sample_indices(config: UnrolledConfig, step: jax.Array, n: int) -> jax.Array:
  """Minibatch of problem indices, a pure function of ``(seed, step)`` (so resuming replays it).
  Without replacement when the set is large enough."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 2), step)
  return jax.random.choice(key, n, (config.batch_size,), replace=n < config.batch_size)


@functools.lru_cache(maxsize=8)
def make_unrolled_step(config: UnrolledConfig):
  """The jitted optimiser step: gather a minibatch, value-and-grad of the unrolled loss, Adam.
  ``targets``: ``x*`` or the images, as ``config.target`` says."""
  optimizer = train.make_optimizer(config)

  def step(state: TrainState, problems: L1Problem, targets: jax.Array):
    index = sample_indices(config, state.step, targets.shape[0])
    batch = jax.tree_util.tree_map(lambda a: a[index], problems)
    loss, grads = jax.value_and_grad(unrolled_loss)(
        state.params, state.batch_stats, config.net, batch, targets[index], config.unroll_steps,
        config.remat, config.descent_penalty, config.target)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, state.batch_stats, opt_state, state.step + 1), loss

  return jax.jit(step)


def calibrate_batch_stats(net: nets.UNetConfig, variables, inputs: jax.Array):
  """BatchNorm running statistics set to the batch statistics of ``inputs`` ``(B, H, W, C)``.

  One train-mode pass normalises every layer with its batch statistics and moves the running
  averages by ``1 - momentum`` towards them, so the statistics are recovered exactly from the
  update: ``batch = (new - momentum old) / (1 - momentum)``.
  """
  _, updated = nets.apply_network(net, variables, inputs, train=True)
  m = nets.BN_MOMENTUM
  stats = jax.tree_util.tree_map(lambda new, old: (new - m * old) / (1.0 - m), updated,
                                 variables["batch_stats"])
  return {"params": variables["params"], "batch_stats": stats}


@functools.partial(jax.jit, static_argnums=(1, 2))
def _pgm_network_inputs(problems: L1Problem, num_steps: int, max_inputs: int) -> jax.Array:
  """Network inputs at ``x_0 .. x_{T-1}`` of PGM on each problem, at most ``max_inputs``."""
  x0 = jnp.zeros((problems.lam.shape[0],) + tuple(problems.op.in_shape),
                 problems.lipschitz.dtype)
  xs = jax.vmap(lambda p, x: trajectory(PGM(), p, x, num_steps - 1, remat=False))(problems, x0)
  xs = jnp.concatenate([x0[:, None], xs], axis=1)                     # (N, T, Hc, Wc)
  inputs = jax.vmap(lambda p, x: jax.vmap(
      lambda v: policies.network_inputs(p, v, p.grad(v)))(x))(problems, xs)
  return inputs.reshape((-1,) + inputs.shape[2:])[:max_inputs]


def initial_variables(config: UnrolledConfig, problems: L1Problem):
  """The starting network: the greedy checkpoint of ``config.warm_start`` (its network must be
  ``config.net``), or a fresh one with BatchNorm statistics calibrated on PGM iterates."""
  if config.warm_start:
    policy = train.load_trained_policy(config.warm_start)
    if policy.config != config.net:
      raise train.CheckpointMismatch(
          f"warm start {config.warm_start} holds network {policy.config}, but this run asks "
          f"for {config.net}")
    logging.info("warm start from %s", config.warm_start)
    return policy.variables
  shape = tuple(problems.op.in_shape) + (policies.NUM_INPUT_CHANNELS,)
  variables = nets.init_network(config.net, jax.random.PRNGKey(config.seed), shape)
  inputs = _pgm_network_inputs(problems, config.unroll_steps, 256)
  logging.info("from scratch: BatchNorm statistics calibrated on %d PGM iterates",
               inputs.shape[0])
  return calibrate_batch_stats(config.net, variables, inputs)


def train_unrolled(config: UnrolledConfig, images: np.ndarray, *,
                   checkpoint_dir: Optional[str] = None, checkpoint_every: int = 50,
                   cache_dir: Optional[str] = None, stop_after_steps: Optional[int] = None,
                   log_every: int = 10) -> TrainResult:
  """Train through ``config.unroll_steps`` DRS iterations on ``images`` ``(N, H, W)``.

  Same measurements and ``x*`` cache as greedy training with the same task, seed and
  ``reference_iters``. With ``checkpoint_dir`` the run saves every ``checkpoint_every`` steps and
  at the end, and resumes from the latest checkpoint there (refusing another configuration's);
  a resumed run equals an uninterrupted one.
  """
  start = time.time()
  data = train.make_dataset(config, images, cache_dir)
  state = None
  if checkpoint_dir and train.read_checkpoint_meta(checkpoint_dir) is not None:
    state = train.restore_state(checkpoint_dir, config,
                                train.init_state(config, data.problems.op.in_shape))
    logging.info("resumed unrolled training from %s at step %d", checkpoint_dir, int(state.step))
  if state is None:
    variables = initial_variables(config, data.problems)
    optimizer_state = train.make_optimizer(config).init(variables["params"])
    state = TrainState(variables["params"], variables["batch_stats"], optimizer_state,
                       jnp.int32(0))
  step_fn = make_unrolled_step(config)
  targets = data.images if config.target == "image" else data.x_star
  losses = np.full((config.num_steps,), np.nan, np.float32)
  step = int(state.step)
  window_start, window_step = time.time(), step
  while step < config.num_steps:
    state, loss = step_fn(state, data.problems, targets)
    step += 1
    if step % log_every == 0 or step == config.num_steps:
      losses[step - 1] = float(loss)
      rate = (step - window_step) / max(time.time() - window_start, 1e-9)
      logging.info("unrolled T=%d step %d/%d loss %.3f dB  %.2f steps/s  ETA %.0fs",
                   config.unroll_steps, step, config.num_steps, losses[step - 1], rate,
                   (config.num_steps - step) / max(rate, 1e-9))
      window_start, window_step = time.time(), step
    if checkpoint_dir and (step % checkpoint_every == 0 or step == config.num_steps):
      train.save_state(checkpoint_dir, config, state, {"kind": "unrolled"})
    if stop_after_steps is not None and step >= stop_after_steps:
      break
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  return TrainResult(variables=variables, losses=losses, seconds=time.time() - start)
