"""Greedy cumulative training of the stepsize / diagonal network (paper section 4, Algorithm 2).

Stage k (k = 0 .. K-1) trains on the union of the iterates of stages 0..k (eq. 9) with the
greedy loss of eq. 7, ``1/2 ||x* - T_{lam d}(x - d grad f(x))||^2`` (normalised by ``||x*||^2``
so that bright and dark images weigh alike), ``d = exp(s)/L`` from the network. After stage k the
next iterates are produced with the current network: eq. 6, then the conventional ``1/L`` step
of eq. 8.

Every step is one jit-compiled call, vmapped over the minibatch; the whole training set (problems,
iterates, ``x*``) stays on the device and minibatches are gathered inside the step. The iterates
live in one buffer of all K stages, filled stage by stage, so the step compiles once for the whole
run. A checkpoint holds the training state; each stage's iterates are written once, when they are
made, beside it (``<checkpoint_dir>/iterates/stage_<k>.npy``).
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from jsgp import distributed, nets, policies
from jsgp.problems import L1Problem
from jsgp.training import checkpoint, files, loop
from jsgp.training.configs import GreedyConfig, check_target
from jsgp.training.dataset import Dataset, make_dataset


class TrainResult(NamedTuple):
  variables: Dict[str, Any]   # {"params", "batch_stats"}: for LearnedPolicy
  losses: np.ndarray          # (total steps,) loss at each logged step (NaN elsewhere)
  seconds: float              # wall time of this call


# ------------------------------------------------------------------------------------------------
# The greedy step and its loss.

def _policy_step(problem: L1Problem, x: jax.Array, log_scale: jax.Array) -> jax.Array:
  """Eq. 6: ``x~ = T_{lam d}(x - d grad f(x))`` with ``d = exp(s)/L``."""
  d = policies.stepsize_from_log_scale(problem, log_scale)
  return problem.forward_backward(x, problem.grad(x), d)


def _lipschitz_step(problem: L1Problem, x: jax.Array) -> jax.Array:
  """Eq. 8: the conventional ``1/L`` proximal gradient step."""
  return problem.forward_backward(x, problem.grad(x), 1.0 / problem.lipschitz)


def _network_inputs(problems: L1Problem, x: jax.Array) -> jax.Array:
  return jax.vmap(lambda p, v: policies.network_inputs(p, v, p.grad(v)))(problems, x)


def greedy_loss(params, batch_stats, net: nets.UNetConfig, problems: L1Problem, x: jax.Array,
                targets: jax.Array, target: str = "solution") -> Tuple[jax.Array, Any]:
  """Eq. 7, normalised: the batch mean of ``||x* - x~||^2 / ||x*||^2`` with ``targets = x*``
  ``(B, Hc, Wc)``; or, with ``target="image"`` and ``targets`` the original images ``(B, H, W)``,
  of ``||W^T x~ - image||^2 / ||image||^2`` (the NMSE the experiments report).
  Returns (loss, new BatchNorm statistics)."""
  check_target(target)
  variables = {"params": params, "batch_stats": batch_stats}
  log_scale, new_stats = nets.apply_network(net, variables, _network_inputs(problems, x),
                                            train=True)
  estimate = jax.vmap(_policy_step)(problems, x, log_scale)
  if target == "image":
    estimate = jax.vmap(L1Problem.image)(problems, estimate)
  err = jnp.sum((targets - estimate) ** 2, axis=(-2, -1)) / jnp.sum(targets ** 2, axis=(-2, -1))
  return jnp.mean(err), new_stats


@functools.partial(jax.jit, static_argnums=(0, 4))
def advance(net: nets.UNetConfig, variables, problems: L1Problem, x: jax.Array,
            chunk: int = 32) -> jax.Array:
  """Next iterates for the whole set with the current network: eq. 6 then eq. 8.

  ``problems`` batched over ``N``, ``x`` ``(N, Hc, Wc)``. The network runs on ``chunk`` instances
  at a time (``lax.map``), so peak memory is that of a ``chunk`` batch, not of the whole set (at
  256 x 256 with the paper's network, 450 instances at once would need ~40 GB of activations).
  Inference-mode BatchNorm makes the result independent of the chunking.
  """
  def one(args):
    problem, v = args
    inputs = policies.network_inputs(problem, v, problem.grad(v))[None]
    log_scale = nets.apply_network(net, variables, inputs, train=False)[0]
    return _lipschitz_step(problem, _policy_step(problem, v, log_scale))

  return jax.lax.map(one, (problems, x), batch_size=chunk)


def sample_batch(config: GreedyConfig, step: jax.Array, num_stages_so_far: jax.Array, n: int):
  """Minibatch (stage index, problem index) pairs drawn uniformly from the cumulative set of
  ``num_stages_so_far`` (traced: one compilation serves every stage) times ``n`` iterates."""
  flat = loop.sample_indices(config.seed, 1, step, num_stages_so_far * n, config.batch_size)
  return flat // n, flat % n


def make_train_step(config: GreedyConfig, mesh: Optional[jax.sharding.Mesh] = None):
  """The jitted step for ``config`` (cached, so repeated runs do not recompile).

  With a ``mesh`` (``jsgp.distributed.make_mesh``; data parallelism) the gathered minibatch is
  split along ``"data"`` and the returned state and loss are replicated; the caller passes a
  replicated state and dataset (``distributed.replicate``). ``None``: one device.
  """
  return _make_train_step(config, mesh)


@functools.lru_cache(maxsize=8)
def _make_train_step(config: GreedyConfig, mesh: Optional[jax.sharding.Mesh]):
  optimizer = loop.make_optimizer(config)
  distributed.check_batch_divisible(config.batch_size, mesh)

  def train_step(state: loop.TrainState, data: Dataset):
    stage_idx, prob_idx = sample_batch(config, state.step, data.num_iterates,
                                       data.x_star.shape[0])
    targets = (data.images if config.target == "image" else data.x_star)[prob_idx]
    problems, x, targets = distributed.constrain_batch(
        (jax.tree_util.tree_map(lambda a: a[prob_idx], data.problems),
         data.iterates[stage_idx, prob_idx], targets), mesh)
    (loss, new_stats), grads = jax.value_and_grad(greedy_loss, has_aux=True)(
        state.params, state.batch_stats, config.net, problems, x, targets, config.target)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return loop.TrainState(params, new_stats, opt_state, state.step + 1), loss

  return distributed.jit_replicated(train_step, mesh)


@functools.partial(jax.jit, donate_argnums=0)
def _store_iterates(iterates: jax.Array, index: jax.Array, x: jax.Array) -> jax.Array:
  """``iterates[index] = x`` in place (the buffer is donated)."""
  return jax.lax.dynamic_update_index_in_dim(iterates, x, index, axis=0)


# ------------------------------------------------------------------------------------------------
# Checkpoints: the state, and each stage's iterates once.

def _iterates_path(directory: str, stage: int) -> str:
  return os.path.join(os.path.abspath(directory), "iterates", f"stage_{stage:03d}.npy")


def load_stage_iterates(directory: str, out: np.ndarray, count: int) -> np.ndarray:
  """Read the first ``count`` stages' iterates into ``out[:count]`` (``out``: ``(K, N, Hc, Wc)``)
  and return ``out``; a clear error for a missing, unreadable or mismatched file."""
  for stage in range(count):
    out[stage] = files.read_array(_iterates_path(directory, stage), out.shape[1:],
                                       f"checkpoint at {directory}: the iterates of stage {stage}")
  return out


def restore(directory: str, config: GreedyConfig, template: loop.TrainState, data: Dataset,
            mesh: Optional[jax.sharding.Mesh] = None
            ) -> Tuple[loop.TrainState, Dataset, Dict[str, Any]]:
  """The latest checkpoint's state and the iterates that belong to it, after checking its
  configuration against ``config``. With a ``mesh`` the arrays are restored replicated over it,
  whatever devices wrote them."""
  sharding = None if mesh is None else distributed.replicated_sharding(mesh)
  state, meta = checkpoint.restore(directory, config, template, sharding)
  count = meta["num_iterates"]
  iterates = load_stage_iterates(directory, np.zeros(data.iterates.shape, data.x_star.dtype),
                                 count)
  return state, data._replace(iterates=jnp.asarray(iterates),
                              num_iterates=jnp.int32(count)), meta


# ------------------------------------------------------------------------------------------------
# The training run.

def train(config: GreedyConfig, images: np.ndarray, *, checkpoint_dir: Optional[str] = None,
          checkpoint_every: int = 100, cache_dir: Optional[str] = None,
          stop_after_steps: Optional[int] = None, log_every: int = 50,
          mesh: Optional[jax.sharding.Mesh] = None) -> TrainResult:
  """Greedy cumulative training (Algorithm 2) on ``images`` ``(N, H, W)``.

  With ``checkpoint_dir`` the run saves every ``checkpoint_every`` steps and at the end of each
  stage, and resumes from the latest checkpoint there (refusing one from another configuration).
  ``stop_after_steps`` ends the call early at that global step (to simulate an interruption).
  ``mesh`` (``jsgp.distributed.make_mesh``): data-parallel training, each minibatch split over
  the mesh's devices (the batch size must divide evenly); a checkpoint written on any number of
  devices resumes on any other. ``None``: one device. A second run on the same
  ``checkpoint_dir`` is refused while this one holds it (``files.DirectoryInUse``).
  """
  distributed.check_batch_divisible(config.batch_size, mesh)  # fail before any work
  with files.exclusive_directory(checkpoint_dir):
    return _train(config, images, checkpoint_dir, checkpoint_every, cache_dir, stop_after_steps,
                  log_every, mesh)


def _train(config, images, checkpoint_dir, checkpoint_every, cache_dir, stop_after_steps,
           log_every, mesh) -> TrainResult:
  start = time.time()
  data = make_dataset(config, images, cache_dir, config.num_stages)
  state = loop.init_state(config, data.problems.op.in_shape)
  if checkpoint_dir and checkpoint.read_meta(checkpoint_dir) is not None:
    state, data, meta = restore(checkpoint_dir, config, state, data, mesh)
    logging.info("resumed from %s at step %d (stage %d)", checkpoint_dir, int(state.step),
                 meta["stage"])
  state, data = distributed.replicate((state, data), mesh)
  per_stage = config.steps_per_stage
  made = int(data.num_iterates)  # stages whose iterates exist (host copy; no device sync)
  if checkpoint_dir and int(state.step) == 0:
    files.write_array(_iterates_path(checkpoint_dir, 0), data.iterates[0])

  def next_stage(step, state, data):
    nonlocal made
    stage = (step - 1) // per_stage
    if step % per_stage or made != stage + 1 or made == config.num_stages:
      return data
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    nxt = advance(config.net, variables, data.problems, data.iterates[stage])
    data = data._replace(iterates=_store_iterates(data.iterates, made, nxt),
                         num_iterates=jnp.int32(made + 1))
    data = distributed.replicate(data, mesh)  # keep the training set replicated
    if checkpoint_dir:
      files.write_array(_iterates_path(checkpoint_dir, made), nxt)
    made += 1
    return data

  def save(step, state, data):
    meta = {"stage": (step - 1) // per_stage, "stage_done": step % per_stage == 0,
            "num_iterates": made}
    checkpoint.save(checkpoint_dir, config, state, meta)

  state, _, losses = loop.run(
      make_train_step(config, mesh), state, data, total_steps=config.total_steps,
      items_per_step=config.batch_size, log_every=log_every, checkpoint_every=checkpoint_every,
      save=save if checkpoint_dir else None, boundary=lambda step: step % per_stage == 0,
      after_step=next_stage, stop_after_steps=stop_after_steps,
      label=lambda step: f"stage {(step - 1) // per_stage + 1}/{config.num_stages} ")
  return TrainResult(variables=loop.variables_of(state), losses=losses,
                     seconds=time.time() - start)
