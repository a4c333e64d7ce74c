"""What both trainings share: the state, the optimiser, minibatch sampling and the loop.

The loop (:func:`run`) calls a jitted ``step(state, data) -> (state, loss)`` until the total step
count, logs the loss with throughput and ETA, saves checkpoints at a fixed cadence and at the
caller's boundaries (greedy: the end of each stage), and lets the caller change the data between
steps (greedy: the next stage's iterates). Minibatches are a pure function of ``(seed, step)``,
so a run resumed from a checkpoint replays an uninterrupted one exactly.
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from jsgp import nets, policies


class TrainState(NamedTuple):
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array  # global step (int32)


def make_optimizer(config) -> optax.GradientTransformation:
  """Adam after global-norm clipping, from ``config.learning_rate`` and ``config.grad_clip``."""
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.learning_rate))


def state_from_variables(config, variables) -> TrainState:
  """A step-0 ``TrainState`` holding ``variables`` (params, batch_stats) and a fresh optimiser."""
  opt_state = make_optimizer(config).init(variables["params"])
  return TrainState(variables["params"], variables["batch_stats"], opt_state, jnp.int32(0))


def init_state(config, in_shape: Optional[Tuple[int, int]] = None) -> TrainState:
  """A fresh ``config.net`` for the canvases of ``config.task`` (key ``config.seed``) and its
  optimiser state. ``in_shape``: another canvas shape for a U-Net (which takes any)."""
  key = jax.random.PRNGKey(config.seed)
  if in_shape is not None and getattr(config.net, "kind", "unet") == "unet":
    variables = nets.init_network(config.net, key,
                                  tuple(in_shape) + (policies.NUM_INPUT_CHANNELS,))
  else:
    variables = config.net.init(key, config.task.synthesis)
  return state_from_variables(config, {"params": variables["params"],
                                       "batch_stats": variables.get("batch_stats", {})})


def variables_of(state: TrainState):
  """The network variables of ``state``, as host arrays (usable on any device afterwards)."""
  return jax.device_get({"params": state.params, "batch_stats": state.batch_stats})


def sample_indices(seed: int, stream: int, step: jax.Array, population, batch_size: int, *,
                   distinct: bool = False) -> jax.Array:
  """``batch_size`` indices in ``[0, population)``, a pure function of ``(seed + stream, step)``.

  ``distinct``: without replacement (``population`` static and at least ``batch_size``);
  otherwise uniform with replacement, and ``population`` may be traced.
  """
  key = jax.random.fold_in(jax.random.PRNGKey(seed + stream), step)
  if distinct:
    return jax.random.choice(key, population, (batch_size,), replace=False)
  return jax.random.randint(key, (batch_size,), 0, population)


def minibatch_step(config, stream: int, loss: Callable) -> Callable:
  """The jitted optimiser step ``(state, (problems, targets)) -> (state, loss)``.

  Gathers ``config.batch_size`` problems (distinct when the set holds that many; PRNG stream
  ``stream``, see ``sample_indices``), takes the value and gradient of
  ``loss(params, batch_stats, problems, targets)`` and applies one update of
  ``make_optimizer(config)``.
  """
  optimizer = make_optimizer(config)

  def step(state: TrainState, data):
    problems, targets = data
    n = targets.shape[0]
    index = sample_indices(config.seed, stream, state.step, n, config.batch_size,
                           distinct=n >= config.batch_size)
    batch = jax.tree_util.tree_map(lambda a: a[index], problems)
    value, grads = jax.value_and_grad(loss)(state.params, state.batch_stats, batch,
                                            targets[index])
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, state.batch_stats, opt_state, state.step + 1), value

  return jax.jit(step)


def run(step_fn: Callable, state: TrainState, data, *, total_steps: int, items_per_step: int,
        log_every: int, checkpoint_every: int, save: Optional[Callable] = None,
        boundary: Callable[[int], bool] = lambda step: False,
        after_step: Optional[Callable] = None, stop_after_steps: Optional[int] = None,
        label: Callable[[int], str] = lambda step: "") -> Tuple[TrainState, Any, np.ndarray]:
  """Train from ``state.step`` to ``total_steps``; returns ``(state, data, losses)``.

  ``losses`` ``(total_steps,)`` holds the loss at each logged step (NaN elsewhere). After a step
  ``s``: ``after_step(s, state, data) -> data``; then ``save(s, state, data)`` when ``s`` is a
  multiple of ``checkpoint_every``, a ``boundary(s)`` or the last step. ``stop_after_steps``
  ends early (an interruption, for tests). Log lines: ``label(s)``, loss, items/s, ETA.
  """
  losses = np.full((total_steps,), np.nan, np.float32)
  step = int(state.step)
  window_start, window_step = time.time(), step
  while step < total_steps:
    state, loss = step_fn(state, data)
    step += 1
    at_boundary = boundary(step)
    if step % log_every == 0 or at_boundary or step == total_steps:
      losses[step - 1] = float(loss)  # synchronises, so the rate below is compute, not dispatch
      rate = (step - window_step) * items_per_step / max(time.time() - window_start, 1e-9)
      eta = (total_steps - step) * items_per_step / max(rate, 1e-9)
      logging.info("%sstep %d/%d loss %.4g  %.1f images/s  ETA %.0fs", label(step), step,
                   total_steps, losses[step - 1], rate, eta)
      window_start, window_step = time.time(), step
    if after_step is not None:
      data = after_step(step, state, data)
    if save is not None and (at_boundary or step % checkpoint_every == 0
                             or step == total_steps):
      save(step, state, data)
    if stop_after_steps is not None and step >= stop_after_steps:
      break
  return state, data, losses
