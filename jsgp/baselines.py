"""The paper's direct-mapping baseline: a U-Net trained to map the initial image estimate to the
converged solution's image, ``W^T x*`` (FBPConvNet-style residual learning)."""
from __future__ import annotations

import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from jsgp import nets

SCALE = 255.0  # images are on the 0-255 scale; the network sees them divided by this


def _inputs(images: jax.Array) -> jax.Array:
  return (images / SCALE)[..., None]


def train_direct(config: nets.UNetConfig, inputs: np.ndarray, targets: np.ndarray, *,
                 steps: int, batch_size: int, learning_rate: float, seed: int) -> Dict[str, Any]:
  """Fit ``config`` (head ``"image"``) to map ``inputs`` to ``targets`` ``(N, H, W)`` (MSE)."""
  if config.head != "image":
    raise ValueError(f"the direct-mapping baseline needs head='image', got {config.head!r}")
  inputs, targets = jnp.asarray(inputs, jnp.float32), jnp.asarray(targets, jnp.float32)
  variables = nets.init_network(config, jax.random.PRNGKey(seed), inputs.shape[1:] + (1,))
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(variables["params"])

  @jax.jit
  def step(variables, opt_state, i):
    idx = jax.random.randint(jax.random.fold_in(jax.random.PRNGKey(seed + 7), i), (batch_size,),
                             0, inputs.shape[0])

    def loss_fn(params):
      out, stats = nets.apply_network(config, {"params": params,
                                               "batch_stats": variables["batch_stats"]},
                                      _inputs(inputs[idx]), train=True)
      return jnp.mean((out - targets[idx] / SCALE) ** 2), stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
    return {"params": optax.apply_updates(variables["params"], updates),
            "batch_stats": stats}, opt_state, loss

  start = time.time()
  for i in range(steps):
    variables, opt_state, loss = step(variables, opt_state, i)
    if (i + 1) % max(1, steps // 5) == 0 or i + 1 == steps:
      logging.info("direct U-Net step %d/%d loss %.4g (%.0fs)", i + 1, steps, float(loss),
                   time.time() - start)
  return variables


def apply_direct(config: nets.UNetConfig, variables, images: jax.Array) -> jax.Array:
  """``(N, H, W)`` initial estimates -> ``(N, H, W)`` predicted images (0-255 scale)."""
  return nets.apply_network(config, variables, _inputs(images), train=False) * SCALE
