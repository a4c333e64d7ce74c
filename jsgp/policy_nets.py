"""Cheap networks that choose the stepsize of a proximal-gradient step.

Every architecture is a frozen (hashable) configuration with two pure functions:

  ``init(key, synthesis) -> variables``  (``synthesis``: the problems' ``WaveletSynthesis``)
  ``log_scale(variables, problem, x, grad, k) -> s``  (a scalar, or a canvas ``(Hc, Wc)``)

The step is ``d = exp(s) / L`` (``jsgp.policies.LearnedPolicy``); ``|s| <= max_log_scale`` and the
last layer starts at zero, so an untrained network is the classical step ``1/L``. ``k`` is the
policy iteration (0 at the first call). Inputs are scale-free: ``x`` and ``grad f(x)`` divided by
one per-instance scale (``normalized``), plus the soft threshold ``lam / L`` in the same units.

  ``SubbandMLP``    one stepsize per wavelet sub-band from pooled per-sub-band statistics
  ``SubbandTable``  a learned per-iteration, per-sub-band stepsize schedule (no inputs at all)
  ``CoefficientMLP`` a tiny MLP per coefficient over local features (hidden width 4-16)
  ``CoarseUNet``    the U-Net on a canvas pooled by ``factor``, its output upsampled back
  (``jsgp.nets.UNetConfig``, the paper's U-Net on the full canvas, has the same interface)

Parameters are float32; inputs of any real dtype are cast to float32 and the output cast back.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jsgp import nets

Variables = Dict[str, Any]
HORIZON = 8  # policy iterations told apart by the iteration features (later ones share the last)


def normalized(problem, x: jax.Array, grad: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """``(x / c, grad / c, lam / (L c))`` with ``c = sqrt(mean(x^2) + mean(grad^2))``, float32."""
  x, grad = x.astype(jnp.float32), grad.astype(jnp.float32)
  scale = jnp.maximum(jnp.sqrt(jnp.mean(x * x) + jnp.mean(grad * grad)),
                      jnp.finfo(jnp.float32).tiny)
  threshold = (problem.lam / problem.lipschitz).astype(jnp.float32) / scale
  return x / scale, grad / scale, threshold


def subbands_of(problem) -> np.ndarray:
  """``(Hc, Wc)`` sub-band index of each canvas position (-1 in gaps), from the synthesis."""
  return problem.synthesis.subband_index()


def _one_hot_subbands(index: np.ndarray) -> jax.Array:
  """``(B, Hc, Wc)`` float32 indicator of each sub-band (gaps in none)."""
  return jnp.asarray(np.stack([index == b for b in range(index.max() + 1)]), jnp.float32)


def _iteration_features(k) -> jax.Array:
  return jax.nn.one_hot(jnp.minimum(k, HORIZON - 1), HORIZON, dtype=jnp.float32)


def _bounded(raw: jax.Array, bound: float) -> jax.Array:
  return bound * jnp.tanh(raw)


def _log1p_abs(v: jax.Array) -> jax.Array:
  return jnp.sign(v) * jnp.log1p(jnp.abs(v))


# --------------------------------------------------------------------------------------------------
# One stepsize per sub-band.

def subband_statistics(problem, x: jax.Array, grad: jax.Array) -> jax.Array:
  """``(B, 6)`` pooled statistics per sub-band of the normalised ``x`` and gradient: log mean
  |x|, log mean |grad|, the fraction of non-zero coefficients, the correlation of ``x`` and
  ``grad``, log mean |grad| where ``x = 0``, and log of the threshold relative to mean |grad|."""
  xn, gn, threshold = normalized(problem, x, grad)
  onehot = _one_hot_subbands(subbands_of(problem))
  count = jnp.sum(onehot, axis=(1, 2))
  mean = lambda v: jnp.einsum("bhw,hw->b", onehot, v) / count
  eps = 1e-6
  ax, ag = jnp.abs(xn), jnp.abs(gn)
  nonzero = (ax > 0).astype(jnp.float32)
  corr = mean(xn * gn) / (jnp.sqrt(mean(xn * xn) * mean(gn * gn)) + eps)
  zero_grad = mean(ag * (1.0 - nonzero)) / (mean(1.0 - nonzero) + eps)
  return jnp.stack([jnp.log(mean(ax) + eps), jnp.log(mean(ag) + eps), mean(nonzero), corr,
                    jnp.log(zero_grad + eps), jnp.log(threshold + eps) - jnp.log(mean(ag) + eps)],
                   axis=-1)


class _SubbandModule(nn.Module):
  hidden: int
  embed: int
  num_subbands: int
  max_log_scale: float

  @nn.compact
  def __call__(self, stats: jax.Array, iteration: jax.Array) -> jax.Array:
    embedding = self.param("embedding", nn.initializers.normal(0.1),
                           (self.num_subbands, self.embed))
    h = jnp.concatenate([stats, embedding,
                         jnp.broadcast_to(iteration, (self.num_subbands, HORIZON))], axis=-1)
    h = nn.relu(nn.Dense(self.hidden)(h))
    h = nn.relu(nn.Dense(self.hidden)(h))
    zeros = nn.initializers.zeros
    return _bounded(nn.Dense(1, kernel_init=zeros, bias_init=zeros)(h)[:, 0], self.max_log_scale)


def check_subbands(trained: int, problem, name: str) -> None:
  """Refuse a problem whose wavelet has another number of sub-bands than the network's."""
  have = problem.synthesis.num_subbands
  if trained != have:
    raise ValueError(
        f"{name} was trained for a {trained}-sub-band wavelet (level {(trained - 1) // 3}); this "
        f"problem's {problem.synthesis.wavelet} level-{problem.synthesis.level} transform of a "
        f"{tuple(problem.synthesis.image_shape)} image has {have}")


def _spread(values: jax.Array, index: np.ndarray) -> jax.Array:
  """Per-sub-band ``values`` ``(B,)`` on the canvas (0 in gaps)."""
  return jnp.where(index >= 0, values[np.maximum(index, 0)], 0.0)


@dataclasses.dataclass(frozen=True)
class SubbandMLP:
  """A stepsize per wavelet sub-band: an MLP (shared by the sub-bands, with a learned sub-band
  embedding and the iteration) over each sub-band's pooled statistics. Cost per call: a few
  elementwise passes and reductions over the canvas."""

  hidden: int = 32
  embed: int = 4
  max_log_scale: float = 7.0
  kind: ClassVar[str] = "subband_mlp"

  def _module(self, synthesis) -> _SubbandModule:
    return _SubbandModule(self.hidden, self.embed, synthesis.num_subbands, self.max_log_scale)

  def init(self, key, synthesis) -> Variables:
    nb = synthesis.num_subbands
    return {"params": self._module(synthesis).init(key, jnp.zeros((nb, 6)),
                                                   jnp.zeros((HORIZON,)))["params"]}

  def log_scale(self, variables, problem, x, grad, k):
    check_subbands(variables["params"]["embedding"].shape[0], problem, "SubbandMLP")
    s = self._module(problem.synthesis).apply({"params": variables["params"]},
                                              subband_statistics(problem, x, grad),
                                              _iteration_features(k))
    return _spread(s, subbands_of(problem)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class SubbandTable:
  """A learned schedule: one log-stepsize per policy iteration ``k < horizon`` and sub-band
  (later iterations use the last row). Zero cost at run time; sees nothing of the problem."""

  horizon: int = HORIZON
  max_log_scale: float = 7.0
  kind: ClassVar[str] = "subband_table"

  def init(self, key, synthesis) -> Variables:
    del key
    return {"params": {"table": jnp.zeros((self.horizon, synthesis.num_subbands), jnp.float32)}}

  def log_scale(self, variables, problem, x, grad, k):
    del grad
    check_subbands(variables["params"]["table"].shape[1], problem, "SubbandTable")
    row = variables["params"]["table"][jnp.minimum(k, self.horizon - 1)]
    return _spread(_bounded(row, self.max_log_scale), subbands_of(problem)).astype(x.dtype)


# --------------------------------------------------------------------------------------------------
# Per-coefficient networks.

NUM_LOCAL_FEATURES = 6


def local_features(problem, x: jax.Array, grad: jax.Array) -> jax.Array:
  """``(Hc, Wc, 6)``: x, grad, x * grad, |x| > 0, |grad| - threshold (all scaled, signed log) and
  the 3x3 mean of |grad|."""
  xn, gn, threshold = normalized(problem, x, grad)
  box = jax.lax.reduce_window(jnp.abs(gn), 0.0, jax.lax.add, (3, 3), (1, 1), "SAME") / 9.0
  return jnp.stack([_log1p_abs(10 * xn), _log1p_abs(10 * gn), _log1p_abs(100 * xn * gn),
                    (xn != 0).astype(jnp.float32), _log1p_abs(10 * (jnp.abs(gn) - threshold)),
                    _log1p_abs(10 * box)], axis=-1)


def coefficient_features(problem, x: jax.Array, grad: jax.Array, k) -> jax.Array:
  """``(Hc, Wc, F)``: ``local_features``, the sub-band one-hot and the iteration one-hot (the
  network's input as it is written; ``CoefficientMLP`` evaluates it without materialising the
  one-hots)."""
  onehot = jnp.moveaxis(_one_hot_subbands(subbands_of(problem)), 0, -1)
  local = local_features(problem, x, grad)
  it = jnp.broadcast_to(_iteration_features(k), local.shape[:-1] + (HORIZON,))
  return jnp.concatenate([local, onehot, it], axis=-1)


class _CoefficientModule(nn.Module):
  hidden: int
  max_log_scale: float

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    h = nn.relu(nn.Dense(self.hidden)(features))
    zeros = nn.initializers.zeros
    return _bounded(nn.Dense(1, kernel_init=zeros, bias_init=zeros)(h)[..., 0],
                    self.max_log_scale)


def _coefficient_log_scale(params, local: jax.Array, index: np.ndarray, k,
                           max_log_scale: float) -> jax.Array:
  """``_CoefficientModule`` on ``coefficient_features`` without the one-hot inputs: their part of
  the first layer is a row of its kernel, picked per sub-band (zero in gaps) and per iteration.
  (Written as unrolled elementwise sums the network alone is ~2x faster on CPU, but a DRS
  iteration around it measured slower: XLA fuses it differently there.)"""
  kernel, bias = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]
  num_local, num_subbands = local.shape[-1], int(index.max()) + 1
  per_subband = jnp.concatenate([kernel[num_local:num_local + num_subbands],
                                 jnp.zeros((1, kernel.shape[1]), kernel.dtype)])
  per_iteration = kernel[num_local + num_subbands + jnp.minimum(k, HORIZON - 1)]
  h = local @ kernel[:num_local] + per_subband[np.where(index >= 0, index, num_subbands)]
  h = jax.nn.relu(h + (bias + per_iteration))
  out = h @ params["Dense_1"]["kernel"][:, 0] + params["Dense_1"]["bias"][0]
  return _bounded(out, max_log_scale)


@dataclasses.dataclass(frozen=True)
class CoefficientMLP:
  """A per-coefficient MLP (one hidden layer of width ``hidden``) over ``coefficient_features``,
  as in per-parameter learned optimisers. Cost per coefficient: the 6 local features and
  ``7 * hidden`` multiply-adds (the sub-band and iteration one-hots enter as a row of the first
  layer each)."""

  hidden: int = 8
  max_log_scale: float = 7.0
  kind: ClassVar[str] = "coefficient_mlp"

  def init(self, key, synthesis) -> Variables:
    width = NUM_LOCAL_FEATURES + synthesis.num_subbands + HORIZON
    feats = jnp.zeros(tuple(synthesis.in_shape) + (width,), jnp.float32)
    return {"params": _CoefficientModule(self.hidden, self.max_log_scale).init(
        key, feats)["params"]}

  def log_scale(self, variables, problem, x, grad, k):
    params = variables["params"]
    trained = params["Dense_0"]["kernel"].shape[0] - NUM_LOCAL_FEATURES - HORIZON
    check_subbands(trained, problem, "CoefficientMLP")
    return _coefficient_log_scale(params, local_features(problem, x, grad),
                                  subbands_of(problem), k, self.max_log_scale).astype(x.dtype)


# --------------------------------------------------------------------------------------------------
# U-Nets.

@dataclasses.dataclass(frozen=True)
class CoarseUNet:
  """The U-Net on the canvas average-pooled by ``factor`` (1/factor^2 of the pixels), its diagonal
  upsampled back by repetition. The canvas side must be divisible by ``factor * 2**depth``."""

  factor: int = 2
  features: int = 8
  depth: int = 2
  max_log_scale: float = 7.0
  kind: ClassVar[str] = "coarse_unet"

  @property
  def unet(self) -> nets.UNetConfig:
    return nets.UNetConfig(features=self.features, depth=self.depth, head="diag",
                           max_log_scale=self.max_log_scale)

  def _pool(self, inputs: jax.Array) -> jax.Array:
    f = self.factor
    h, w, c = inputs.shape
    return inputs.reshape(h // f, f, w // f, f, c).mean(axis=(1, 3))

  def init(self, key, synthesis) -> Variables:
    h, w = synthesis.in_shape
    shape = (h // self.factor, w // self.factor, nets.NUM_INPUT_CHANNELS)
    return nets.init_network(self.unet, key, shape)

  def log_scale(self, variables, problem, x, grad, k):
    del k
    inputs = self._pool(nets.network_inputs(problem, x, grad))[None]
    coarse = nets.apply_network(self.unet, variables, inputs, train=False)[0]
    f = self.factor
    return jnp.repeat(jnp.repeat(coarse, f, axis=0), f, axis=1).astype(x.dtype)


ARCHITECTURES = {cls.kind: cls for cls in (nets.UNetConfig, SubbandMLP, SubbandTable,
                                           CoefficientMLP, CoarseUNet)}


def architecture(kind: str, hidden: Optional[int] = None):
  """The network configuration ``kind`` (a key of ``ARCHITECTURES``) with its defaults, or with
  hidden width ``hidden``; ``ValueError`` naming ``kind`` if it has no hidden layer width."""
  config = ARCHITECTURES[kind]
  if hidden is None:
    return config()
  if "hidden" not in {field.name for field in dataclasses.fields(config)}:
    raise ValueError(f"{kind} has no hidden width (the MLP architectures have one)")
  return config(hidden=hidden)
