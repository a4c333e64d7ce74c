"""Unrolled training: the stepsize / diagonal network trained through T solver iterations.

Greedy training (``jsgp.training.greedy``, the paper's eq. 7-9) scores each learned step on its
own: the step that lands closest to ``x*`` now. Here the network is scored on the whole
trajectory of the solver it will drive: ``T`` iterations of the actual ``DRS.step`` (relaxation
test, Armijo search, fallback and all), run by the driver's differentiable mode
(``jsgp.solvers.run_batch(..., unroll=True)``: ``lax.scan``, each step a ``jax.checkpoint``)
from ``x_0 = 0``, with the loss

  ``L = mean over the batch and k = 1..T of 10 log10(||x_k - x*||^2 / ||x*||^2)``,

the mean NMSE to ``x*`` in dB along the trajectory (every iteration weighs alike, whatever its
error's magnitude); or, with ``target="image"``, the mean NMSE of ``W^T x_k`` to the original
image, the measure the experiments report. The Armijo factor and the relaxation decisions are
piecewise constant in the iterate, so their derivative is zero almost everywhere;
``jsgp.solvers.linesearch.armijo`` cuts them from the autodiff graph, which makes ``jax.grad``
through the solver step exact wherever those decisions do not switch. BatchNorm runs on frozen
statistics, exactly as the solver applies the network (``LearnedPolicy``): the warm start's, or,
from scratch, statistics calibrated once on proximal-gradient iterates of the training set.

With remat the backward pass stores one DRS state per iteration instead of every activation of
every network call: memory grows with ``T`` by a canvas-sized state (``loss_memory``).
"""
from __future__ import annotations

import functools
import time
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jsgp import nets, policies
from jsgp.problems import L1Problem
from jsgp.solvers import DRS, PGM, run_batch
from jsgp.training import checkpoint, files, loop
from jsgp.training.configs import UnrolledConfig, check_target
from jsgp.training.dataset import make_dataset
from jsgp.training.greedy import TrainResult


def learned_solver(net: nets.UNetConfig, variables) -> DRS:
  """The DRS method unrolled training differentiates, in its vmap form (no ``lax.cond``): the
  paper's relaxation mode, whose loss is smooth in the policy. (The safeguarded mode keeps a
  candidate only when it passes its test, so a rejected candidate contributes no gradient but the
  hinge, and unrolled training barely moves the loss; measured in BUILD_NOTES.md.)"""
  return DRS(policies.LearnedPolicy(variables, net), mode="relaxation", branchless=True)


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
  check_target(target)
  method = learned_solver(net, {"params": params, "batch_stats": batch_stats})
  as_target = (lambda p, x: x) if target == "solution" else L1Problem.image
  estimates, decrease_ratio = run_batch(
      method, problems, problems.zeros(), unroll_steps, unroll=True, remat=remat,
      record=lambda p, s: (as_target(p, s.x), s.decrease_ratio)).trace
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


@functools.lru_cache(maxsize=8)
def make_unrolled_step(config: UnrolledConfig):
  """The jitted optimiser step ``(state, (problems, targets)) -> (state, loss)`` on the unrolled
  loss (``loop.minibatch_step``, PRNG stream 2). ``targets``: ``x*`` or the images, as
  ``config.target`` says."""

  def loss(params, batch_stats, problems, targets):
    return unrolled_loss(params, batch_stats, config.net, problems, targets, config.unroll_steps,
                         config.remat, config.descent_penalty, config.target)

  return loop.minibatch_step(config, 2, loss)


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
def pgm_network_inputs(problems: L1Problem, num_steps: int, max_inputs: int) -> jax.Array:
  """Network inputs at ``x_0 .. x_{T-1}`` of PGM on each problem, at most ``max_inputs``."""
  x0 = problems.zeros()
  xs = run_batch(PGM(), problems, x0, num_steps - 1, unroll=True, remat=False,
                 record=lambda p, s: s.x).trace
  xs = jnp.concatenate([x0[:, None], xs], axis=1)                     # (N, T, Hc, Wc)
  inputs = jax.vmap(lambda p, x: jax.vmap(
      lambda v: policies.network_inputs(p, v, p.grad(v)))(x))(problems, xs)
  return inputs.reshape((-1,) + inputs.shape[2:])[:max_inputs]


def initial_variables(config: UnrolledConfig, problems: L1Problem):
  """The starting network: the greedy checkpoint of ``config.warm_start`` (its network must be
  ``config.net``), or a fresh one with BatchNorm statistics calibrated on PGM iterates."""
  if config.warm_start:
    policy = checkpoint.load_policy(config.warm_start)
    if policy.config != config.net:
      raise checkpoint.CheckpointMismatch(
          f"warm start {config.warm_start} holds network {policy.config}, but this run asks "
          f"for {config.net}")
    logging.info("warm start from %s", config.warm_start)
    return policy.variables
  shape = tuple(problems.op.in_shape) + (policies.NUM_INPUT_CHANNELS,)
  variables = nets.init_network(config.net, jax.random.PRNGKey(config.seed), shape)
  inputs = pgm_network_inputs(problems, config.unroll_steps, 256)
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
  a resumed run equals an uninterrupted one. A second run on the same ``checkpoint_dir`` is
  refused while this one holds it (``files.DirectoryInUse``).
  """
  with files.exclusive_directory(checkpoint_dir):
    return _train_unrolled(config, images, checkpoint_dir, checkpoint_every, cache_dir,
                           stop_after_steps, log_every)


def _train_unrolled(config, images, checkpoint_dir, checkpoint_every, cache_dir,
                    stop_after_steps, log_every) -> TrainResult:
  start = time.time()
  data = make_dataset(config, images, cache_dir)
  if checkpoint_dir and checkpoint.read_meta(checkpoint_dir) is not None:
    template = loop.init_state(config, data.problems.op.in_shape)
    state, _ = checkpoint.restore(checkpoint_dir, config, template)
    logging.info("resumed unrolled training from %s at step %d", checkpoint_dir,
                 int(state.step))
  else:
    state = loop.state_from_variables(config, initial_variables(config, data.problems))
  targets = data.images if config.target == "image" else data.x_star
  state, _, losses = loop.run(
      make_unrolled_step(config), state, (data.problems, targets),
      total_steps=config.num_steps, items_per_step=config.batch_size, log_every=log_every,
      checkpoint_every=checkpoint_every,
      save=(lambda step, state, data: checkpoint.save(checkpoint_dir, config, state))
      if checkpoint_dir else None,
      stop_after_steps=stop_after_steps, label=lambda step: f"unrolled T={config.unroll_steps} ")
  return TrainResult(variables=loop.variables_of(state), losses=losses,
                     seconds=time.time() - start)
