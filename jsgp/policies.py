"""Stepsize / scaling policies for ``DRS``: pure pytree callables ``(problem, x, grad) -> d``.

``d`` is in stepsize units (scalar per instance, or a canvas-shaped diagonal); the solver applies
its own safeguards, so a policy may return anything, even NaN, without breaking convergence.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jsgp.nets import apply_network


@struct.dataclass
class ConstantPolicy:
  """``d = multiplier / L``: a fixed multiple of the conventional step (a non-learned DRS)."""

  multiplier: jax.Array = 1.0

  def __call__(self, problem, x, grad):
    return jnp.asarray(self.multiplier, x.dtype) / problem.lipschitz


# ------------------------------------------------------------------------------------------------
# Learned policies: a Flax network maps (x, grad) to a bounded log-scale s; d = exp(s) / L.

NUM_INPUT_CHANNELS = 3


def network_inputs(problem, x: jax.Array, grad: jax.Array) -> jax.Array:
  """Canvas channels for the network: ``(Hc, Wc, 3)`` = ``[x, grad, lam/L] / c``.

  "Normalized gradients" (paper, section 6.1): ``x`` and ``grad f(x)`` are divided by ONE common
  per-instance scale ``c = sqrt(mean(x^2) + mean(grad^2))``, which removes the image's intensity
  scale but keeps the ratio of iterate to gradient (the quantity a stepsize trades off). The third,
  constant channel is the ``1/L`` soft threshold ``lam / L`` in the same units, so the network can
  see the regulariser's strength (the paper's 2 lam / lam/2 robustness test). Gaps of the canvas
  are zero in every channel but the last. ``x`` is real (the wavelet coefficients of a real image),
  so partial Fourier needs no real/imaginary split (the paper's 4 channels held complex images).
  """
  scale = jnp.sqrt(jnp.mean(x * x) + jnp.mean(grad * grad))
  scale = jnp.maximum(scale, jnp.finfo(x.dtype).tiny)
  threshold = jnp.broadcast_to(problem.lam / problem.lipschitz / scale, x.shape)
  return jnp.stack([x / scale, grad / scale, threshold.astype(x.dtype)], axis=-1)


def stepsize_from_log_scale(problem, log_scale: jax.Array) -> jax.Array:
  """Positive, bounded stepsize (or diagonal) ``exp(s) / L`` from the network's ``s``."""
  return jnp.exp(log_scale) / problem.lipschitz


@struct.dataclass
class LearnedPolicy:
  """A trained U-Net as a DRS policy. ``variables`` (params, batch_stats) are pytree leaves, so
  user code can jit/vmap solvers over them; ``config`` (a ``jsgp.nets.UNetConfig``) is static.

  ``head="step"`` gives one stepsize per instance, ``head="diag"`` a per-coefficient diagonal.
  Inference mode (BatchNorm running averages): the output of one instance does not depend on the
  others in a batch.
  """

  variables: dict
  config: object = struct.field(pytree_node=False)

  def log_scale(self, problem, x, grad):
    inputs = network_inputs(problem, x, grad)[None]
    return apply_network(self.config, self.variables, inputs, train=False)[0]

  def __call__(self, problem, x, grad):
    return stepsize_from_log_scale(problem, self.log_scale(problem, x, grad)).astype(x.dtype)


# ------------------------------------------------------------------------------------------------
# The greedy oracle: the ceiling of greedy training (it needs x*, so it is a yardstick, not a
# solver).

def log_scale_grid(max_log_scale: float = 7.0, num: int = 141) -> jax.Array:
  """Evenly spaced log-scales ``s`` in ``[-max, max]`` (``d = exp(s) / L``); 141 points over
  the default bound of 7 is a step of 0.1, i.e. stepsizes 10.5 % apart."""
  return jnp.linspace(-max_log_scale, max_log_scale, num)


@struct.dataclass
class GreedyOraclePolicy:
  """For each call, the stepsize (``diagonal=False``) or per-coefficient diagonal
  (``diagonal=True``) from ``log_scales`` whose eq.-6 step ``T_{lam d}(x - d grad f(x))`` lands
  closest to ``x_star`` ``(Hc, Wc)``: what the greedy loss (eq. 7) would pick with a perfect
  network, restricted to the grid. The eq.-6 error is separable over coefficients, so the diagonal
  oracle is the coefficient-wise argmin. Grid search by ``lax.scan`` (memory of two canvases,
  whatever the grid size).
  """

  x_star: jax.Array
  log_scales: jax.Array
  diagonal: bool = struct.field(pytree_node=False, default=False)

  def __call__(self, problem, x, grad):
    steps = stepsize_from_log_scale(problem, self.log_scales).astype(x.dtype)

    def error(d):
      err = (problem.forward_backward(x, grad, d) - self.x_star) ** 2
      return err if self.diagonal else jnp.sum(err)

    def scan_body(best, d):
      best_err, best_d = best
      err = error(d)
      better = err < best_err
      return (jnp.where(better, err, best_err), jnp.where(better, d, best_d)), None

    first = error(steps[0])
    (_, best_d), _ = jax.lax.scan(scan_body, (first, jnp.full_like(first, steps[0])), steps[1:])
    return best_d
