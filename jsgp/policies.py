"""Stepsize policies: one protocol for SGP, SpaRSA and DRS.

A policy is a pytree with two pure functions (the optax shape):

  ``init(problem, x, grad) -> state``
  ``update(problem, state, x, grad) -> (d, state)``

``d`` is in stepsize units: a scalar per instance, or a canvas-shaped diagonal (the metric of a
scaled proximal-gradient step ``prox_{d}(x - d grad)``). Classical policies
(``ConstantPolicy``, ``BarzilaiBorwein``, ``Scaled``) carry the memory they need in ``state``;
stateless ones (a learned network, the greedy oracle) are plain callables
``(problem, x, grad) -> d`` and get ``init``/``update`` from ``Stateless``. Solvers apply their
own safeguards (bounds, line searches, the DRS acceptance test), so a policy may return anything,
even NaN, without breaking convergence.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jsgp import struct
from jsgp.operators import vdot_real


class Stateless:
  """Mixin: ``init``/``update`` for a policy that is a pure ``__call__(problem, x, grad)``."""

  init_uses_grad = False

  def init(self, problem, x, grad):
    del problem, x, grad
    return ()

  def update(self, problem, state, x, grad):
    return self(problem, x, grad), state


@struct.dataclass
class FromCallable(Stateless):
  """A plain callable ``(problem, x, grad) -> d`` (a pytree or a function) as a policy."""

  policy: Any

  def __call__(self, problem, x, grad):
    return self.policy(problem, x, grad)


def as_policy(policy):
  """``policy`` if it has ``init`` and ``update``, else ``FromCallable(policy)``."""
  if hasattr(policy, "init") and hasattr(policy, "update"):
    return policy
  if not callable(policy):
    raise TypeError(f"a policy has init/update or is a callable (problem, x, grad) -> d; "
                    f"got {type(policy).__name__}")
  return FromCallable(policy)


@struct.dataclass
class ConstantPolicy(Stateless):
  """``d = multiplier / L``: a fixed multiple of the conventional step (``ConstantPolicy()`` is
  1/L)."""

  multiplier: jax.Array = 1.0

  def __call__(self, problem, x, grad):
    return jnp.asarray(self.multiplier, x.dtype) / problem.lipschitz


BB_VARIANTS = ("bb1", "bb2", "abb_min")


class BBState(NamedTuple):
  prev_x: jax.Array      # x_{k-1} (canvas)
  prev_grad: jax.Array   # grad f(x_{k-1})
  step: jax.Array        # the last step returned
  memory: jax.Array      # (memory,) last BB2 values (ABB_min)
  tau: jax.Array         # ABB_min switching threshold
  started: jax.Array     # bool: a previous point exists


@struct.dataclass
class BarzilaiBorwein:
  """Barzilai-Borwein steps from ``s = x_k - x_{k-1}``, ``w = grad_k - grad_{k-1}``:
  ``bb1 = <s,s>/<s,w>`` (long), ``bb2 = <s,w>/<w,w>`` (short), or ``abb_min`` (Frassoldati,
  Zanghirati, Zanni 2008: ``min`` of the last ``memory`` BB2 values when ``bb2/bb1 < tau``, else
  BB1; ``tau`` adapts). Bounded in ``[t_min_factor/L, t_max_factor/L]``; ``1/L`` until two points
  exist; a curvature ``<s,w> <= 0`` or no movement gives ``t_max`` resp. the previous step.

  Per call: three inner products over the canvas; state holds two canvases.
  """

  variant: str = struct.field(pytree_node=False, default="abb_min")
  t_min_factor: float = struct.field(pytree_node=False, default=1e-5)
  t_max_factor: float = struct.field(pytree_node=False, default=1e5)
  tau0: float = struct.field(pytree_node=False, default=0.5)
  memory: int = struct.field(pytree_node=False, default=3)

  def __post_init__(self):
    if self.variant not in BB_VARIANTS:
      raise ValueError(f"BarzilaiBorwein variant must be one of {BB_VARIANTS}, got "
                       f"{self.variant!r}.")

  def init(self, problem, x, grad) -> BBState:
    t0 = (1.0 / problem.lipschitz).astype(jnp.real(x).dtype)
    return BBState(x, grad, t0, jnp.full((self.memory,), self.t_max_factor * t0, t0.dtype),
                   jnp.asarray(self.tau0, t0.dtype), jnp.bool_(False))

  def update(self, problem, state: BBState, x, grad):
    step, state = self.update_from_step(problem, state, x - state.prev_x, grad - state.prev_grad)
    return step, state._replace(prev_x=x, prev_grad=grad)

  def init_from_step(self, problem, x, grad) -> BBState:
    """``init`` for callers that hand ``update_from_step`` the step differences themselves:
    the state holds no canvases (``prev_x``, ``prev_grad`` are None)."""
    return self.init(problem, x, grad)._replace(prev_x=None, prev_grad=None)

  def update_from_step(self, problem, state: BBState, s, w):
    """``update`` from ``s = x_k - x_{k-1}`` and ``w = grad_k - grad_{k-1}`` (zeros before the
    first step): a caller that forms them fresh (``SGP``) spares the state two canvases that
    every iteration would copy. Returns ``(step, state)``; ``prev_x`` / ``prev_grad`` are left
    as they are."""
    return self.update_from_products(problem, state, vdot_real(s, s), vdot_real(s, w),
                                     vdot_real(w, w))

  def update_from_products(self, problem, state: BBState, ss, sw, ww):
    """``update_from_step`` from the inner products ``<s, s>``, ``<s, w>``, ``<w, w>``
    (scalars) alone."""
    t0 = (1.0 / problem.lipschitz).astype(state.step.dtype)
    t_min, t_max = self.t_min_factor * t0, self.t_max_factor * t0
    curved = sw > 0
    bb1 = jnp.where(curved, ss / jnp.where(curved, sw, 1.0), t_max)
    bb2 = jnp.where(curved, sw / jnp.maximum(ww, jnp.finfo(t0.dtype).tiny), t_max)
    bb1 = jnp.clip(jnp.nan_to_num(bb1, nan=t_max), t_min, t_max)
    bb2 = jnp.clip(jnp.nan_to_num(bb2, nan=t_max), t_min, t_max)
    memory, tau = state.memory, state.tau
    if self.variant == "bb1":
      step = bb1
    elif self.variant == "bb2":
      step = bb2
    else:
      memory = jnp.roll(memory, 1).at[0].set(bb2)
      use_bb2 = bb2 / bb1 < tau
      step = jnp.where(use_bb2, jnp.min(memory), bb1)
      tau = jnp.where(use_bb2, 0.9 * tau, 1.1 * tau)
    moved = state.started & (ss > 0)
    first = ~state.started
    step = jnp.where(moved, step, jnp.where(first, t0, state.step))
    keep = lambda new, old: jnp.where(moved, new, old)
    return step, state._replace(step=step, memory=keep(memory, state.memory),
                                tau=keep(tau, state.tau), started=jnp.bool_(True))


class ScaledState(NamedTuple):
  step: Any             # the scalar step policy's state
  scaling: Any          # the scaling policy's state
  iteration: jax.Array  # k (int32)


@struct.dataclass
class Scaled:
  """``d = t_k * D_k``: a scalar step policy ``step`` times a diagonal ``scaling`` (any policy
  returning a canvas-shaped positive array, e.g. a learned diag network) clipped to
  ``[1/delta_k, delta_k]`` with ``delta_k^2 = 1 + c / (k + 1)^2``, so that ``D_k -> I`` as the
  SGP convergence theory asks (Bonettini, Zanella, Zanni 2009). A non-finite scaling counts as 1.
  """

  step: Any = BarzilaiBorwein()
  scaling: Any = ConstantPolicy(1.0)
  c: float = struct.field(pytree_node=False, default=1e10)

  def init(self, problem, x, grad) -> ScaledState:
    return ScaledState(self.step.init(problem, x, grad), self.scaling.init(problem, x, grad),
                       jnp.int32(0))

  def update(self, problem, state: ScaledState, x, grad):
    t, step_state = self.step.update(problem, state.step, x, grad)
    raw, scaling_state = self.scaling.update(problem, state.scaling, x, grad)
    # Relative to the scaling's mean so that the step policy keeps setting the step length.
    raw = raw / jnp.mean(raw)
    k = state.iteration.astype(jnp.real(x).dtype)
    delta = jnp.sqrt(1.0 + self.c / (k + 1.0) ** 2)
    d = jnp.clip(jnp.nan_to_num(raw, nan=1.0, posinf=delta, neginf=1.0 / delta), 1.0 / delta,
                 delta)
    return t * d, ScaledState(step_state, scaling_state, state.iteration + 1)


# ------------------------------------------------------------------------------------------------
# Learned policies: a network maps (x, grad, k) to a bounded log-scale s; d = exp(s) / L.

NUM_INPUT_CHANNELS = 3  # the U-Net's input channels (``jsgp.nets.network_inputs``)


def network_inputs(problem, x: jax.Array, grad: jax.Array) -> jax.Array:
  """The U-Net's input canvas (``jsgp.nets.network_inputs``)."""
  from jsgp import nets  # pylint: disable=import-outside-toplevel  (flax.linen on demand)
  return nets.network_inputs(problem, x, grad)


def stepsize_from_log_scale(problem, log_scale: jax.Array) -> jax.Array:
  """Positive, bounded stepsize (or diagonal) ``exp(s) / L`` from the network's ``s``."""
  return jnp.exp(log_scale) / problem.lipschitz


@struct.dataclass
class LearnedPolicy:
  """A trained network as a DRS policy: ``d_k = exp(s_k) / L`` with ``s_k =
  config.log_scale(variables, problem, x, grad, k)`` at policy iteration ``k``.

  ``config``: a network configuration (``jsgp.nets.UNetConfig``, or one of
  ``jsgp.policy_nets``: ``SubbandMLP``, ``SubbandTable``, ``CoefficientMLP``, ``CoarseUNet``),
  static. ``variables``: its parameters (and BatchNorm statistics), pytree leaves, so user code
  can jit/vmap solvers over them. The state is the iteration ``k`` (int32). Inference mode: the
  output of one instance does not depend on the others in a batch.
  """

  variables: dict
  config: object = struct.field(pytree_node=False)

  init_uses_grad = False  # DRS need not form grad f(x0) for ``init``

  def log_scale(self, problem, x, grad, k=0):
    return self.config.log_scale(self.variables, problem, x, grad, k)

  def __call__(self, problem, x, grad, k=0):
    return stepsize_from_log_scale(problem, self.log_scale(problem, x, grad, k)).astype(x.dtype)

  def init(self, problem, x, grad):
    del problem, x, grad
    return jnp.int32(0)

  def update(self, problem, state, x, grad):
    return self(problem, x, grad, state), state + 1


# ------------------------------------------------------------------------------------------------
# The greedy oracle: the ceiling of greedy training (it needs x*, so it is a yardstick, not a
# solver).

def log_scale_grid(max_log_scale: float = 7.0, num: int = 141) -> jax.Array:
  """Evenly spaced log-scales ``s`` in ``[-max, max]`` (``d = exp(s) / L``); 141 points over
  the default bound of 7 is a step of 0.1, i.e. stepsizes 10.5 % apart."""
  return jnp.linspace(-max_log_scale, max_log_scale, num)


@struct.dataclass
class GreedyOraclePolicy(Stateless):
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
