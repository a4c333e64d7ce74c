"""U-Net that predicts a stepsize or a diagonal scaling for a proximal-gradient step.

After section 6.1 of arXiv 1902.02449: a reduced FBPConvNet (U-Net) with 3x3 convolutions,
each followed by BatchNorm and ReLU; 2x2 max pooling on the way down; 2x2 stride-2 transposed
convolutions (also followed by BatchNorm and ReLU, as in FBPConvNet) and concatenated skip
connections on the way up. Two heads (static ``UNetConfig.head``):

  ``"step"``: global average pooling of the last feature map, then ONE ``nn.Dense(1)``
      -> ``(B,)``, one number per image.
  ``"diag"``: a 1x1 convolution to one channel -> ``(B, H, W)``, one number per coefficient.
  ``"image"``: FBPConvNet's residual output, input channel 0 plus a 1x1 convolution ->
      ``(B, H, W)``, unbounded: the direct-mapping U-Net baseline of the paper's tables.

The network returns a bounded LOG-SCALE ``s = max_log_scale * tanh(raw)``; positivity is the
caller's business (``stepsize = exp(s) / L``). The final layer (Dense or 1x1 conv) starts with a
zero kernel and zero bias, so an untrained network outputs ``s = 0`` exactly: the classical
``1/L`` step.

Parameters are float32. Inputs of any real floating dtype (float64 under ``jax_enable_x64``)
are cast to float32 inside; the output is cast back to the input dtype.

Convolutions followed by BatchNorm carry no bias (BatchNorm's shift makes it redundant).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

HEADS = ("step", "diag", "image")
NUM_INPUT_CHANNELS = 3
BN_MOMENTUM = 0.9

Variables = Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Static, hashable network configuration.

  Attributes:
    features: channels at the top level; doubled at each of the ``depth`` levels below.
    depth: number of 2x2 poolings; inputs need H, W divisible by ``2**depth``.
    convs_per_level: 3x3 conv + BN + ReLU blocks per level (down, bottleneck and up).
    head: ``"step"`` -> ``(B,)``; ``"diag"`` or ``"image"`` -> ``(B, H, W)``.
    max_log_scale: bound on the returned log-scale, ``|s| <= max_log_scale``. The default 7
      (steps in ``[e^-7, e^7] / L``) covers the greedy oracle's steps on inpainting
      (BUILD_NOTES.md).
  """

  kind: ClassVar[str] = "unet"
  features: int = 16
  depth: int = 3
  convs_per_level: int = 2
  head: str = "step"
  max_log_scale: float = 7.0

  def __post_init__(self):
    if self.head not in HEADS:
      raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
    if self.features < 1 or self.depth < 0 or self.convs_per_level < 1:
      raise ValueError(f"invalid UNetConfig {self}")
    if not self.max_log_scale > 0:
      raise ValueError(f"max_log_scale must be positive, got {self.max_log_scale}")

  def init(self, key: jax.Array, synthesis) -> "Variables":
    """Variables for the canvases of ``synthesis`` (the policy-network interface)."""
    return init_network(self, key, tuple(synthesis.in_shape) + (NUM_INPUT_CHANNELS,))

  def log_scale(self, variables, problem, x, grad, k=0):
    """The bounded log-scale for one instance: a scalar (step head) or ``(Hc, Wc)`` (diag)."""
    del k
    return apply_network(self, variables, network_inputs(problem, x, grad)[None],
                         train=False)[0]

  @classmethod
  def paper(cls, head: str = "step") -> "UNetConfig":
    """Paper-sized network: 64 features, 3 poolings, 2 convs per level (~7.7M parameters)."""
    return cls(features=64, depth=3, convs_per_level=2, head=head)

  @classmethod
  def small(cls, head: str = "step") -> "UNetConfig":
    """CPU-sized network: 8 features, 3 poolings, 2 convs per level (~120k parameters)."""
    return cls(features=8, depth=3, convs_per_level=2, head=head)


def check_input_shape(shape: Tuple[int, ...], depth: int) -> None:
  """Raise ValueError unless ``shape == (B, H, W, C)`` with H, W divisible by ``2**depth``."""
  if len(shape) != 4:
    raise ValueError(f"expected input of shape (B, H, W, C), got shape {tuple(shape)}")
  factor = 2 ** depth
  if shape[1] % factor or shape[2] % factor:
    raise ValueError(
        f"input shape {tuple(shape)}: H and W must be divisible by 2**depth = {factor}")


class ConvBlock(nn.Module):
  """``convs`` x (3x3 conv -> BatchNorm -> ReLU): ``(B, H, W, *) -> (B, H, W, features)``."""

  features: int
  convs: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for _ in range(self.convs):
      x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)(x)
      x = nn.relu(x)
    return x


class UpSample(nn.Module):
  """2x2 stride-2 transposed conv -> BatchNorm -> ReLU: ``(B, H, W, *) -> (B, 2H, 2W, features)``.
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.ConvTranspose(self.features, (2, 2), strides=(2, 2), padding="SAME", use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)(x)
    return nn.relu(x)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """``(B, H, W, C) -> (B, H/2, W/2, C)``."""
  return nn.max_pool(x, (2, 2), strides=(2, 2))


class StepsizeUNet(nn.Module):
  """U-Net with a stepsize or diagonal head; returns the bounded log-scale ``s``.

  ``(B, H, W, C) -> (B,)`` for ``head="step"``, ``(B, H, W)`` for ``head="diag"``; ``|s| <=
  config.max_log_scale``. The output has the input's dtype (computation is float32).
  """

  config: UNetConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    cfg = self.config
    check_input_shape(x.shape, cfg.depth)
    out_dtype = x.dtype
    h = x.astype(jnp.float32)

    skips = []
    for level in range(cfg.depth):
      h = ConvBlock(cfg.features * 2 ** level, cfg.convs_per_level)(h, train)
      skips.append(h)
      h = max_pool_2x2(h)
    h = ConvBlock(cfg.features * 2 ** cfg.depth, cfg.convs_per_level)(h, train)
    for level in reversed(range(cfg.depth)):
      width = cfg.features * 2 ** level
      h = UpSample(width)(h, train)
      h = jnp.concatenate([skips[level], h], axis=-1)
      h = ConvBlock(width, cfg.convs_per_level)(h, train)

    zeros = nn.initializers.zeros
    if cfg.head == "step":
      pooled = jnp.mean(h, axis=(1, 2))                          # (B, features)
      raw = nn.Dense(1, kernel_init=zeros, bias_init=zeros)(pooled)[:, 0]      # (B,)
    else:
      raw = nn.Conv(1, (1, 1), kernel_init=zeros, bias_init=zeros)(h)[..., 0]  # (B, H, W)
    if cfg.head == "image":
      return (x[..., 0].astype(jnp.float32) + raw).astype(out_dtype)
    return (cfg.max_log_scale * jnp.tanh(raw)).astype(out_dtype)


def network_inputs(problem, x: jax.Array, grad: jax.Array) -> jax.Array:
  """Canvas channels for the U-Net: ``(Hc, Wc, 3)`` = ``[x, grad, lam/L] / c``.

  "Normalized gradients" (paper, section 6.1): ``x`` and ``grad f(x)`` are divided by ONE common
  per-instance scale ``c = sqrt(mean(x^2) + mean(grad^2))``, which removes the image's intensity
  scale but keeps the ratio of iterate to gradient (the quantity a stepsize trades off). The third,
  constant channel is the ``1/L`` soft threshold ``lam / L`` in the same units, so the network can
  see the regulariser's strength. Gaps of the canvas are zero in every channel but the last.
  ``x`` is real (the wavelet coefficients of a real image), so partial Fourier needs no
  real/imaginary split (the paper's 4 channels held complex images).
  """
  scale = jnp.sqrt(jnp.mean(x * x) + jnp.mean(grad * grad))
  scale = jnp.maximum(scale, jnp.finfo(x.dtype).tiny)
  threshold = jnp.broadcast_to(problem.lam / problem.lipschitz / scale, x.shape)
  return jnp.stack([x / scale, grad / scale, threshold.astype(x.dtype)], axis=-1)


def count_params(params) -> int:
  """Total number of scalars in a pytree of arrays (or ``jax.ShapeDtypeStruct``s)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


@functools.partial(jax.jit, static_argnums=0)
def _jitted_init(config: UNetConfig, key: jax.Array, dummy: jax.Array) -> Variables:
  """``StepsizeUNet(config).init`` compiled once per (config, input shape)."""
  return StepsizeUNet(config).init(key, dummy, train=False)


def init_network(config: UNetConfig, key: jax.Array,
                 input_shape: Tuple[int, int, int]) -> Variables:
  """Initialise on a zero batch of one ``(1, H, W, C)`` float32 image (jitted; classic threefry).

  Returns the variables ``{"params": ..., "batch_stats": ...}``; the parameter count is logged
  with ``absl.logging.info`` (use ``count_params(variables["params"])`` to get it). Cheap to
  size without computing: ``jax.eval_shape(lambda k: init_network(cfg, k, shape), key)``.
  """
  height, width, channels = input_shape
  check_input_shape((1, height, width, channels), config.depth)
  dummy = jnp.zeros((1, height, width, channels), jnp.float32)
  # The partitionable threefry (JAX's default) costs XLA:CPU far more compile time per parameter
  # tensor than the classic one. Values are deterministic either way.
  with jax.threefry_partitionable(False):
    variables = _jitted_init(config, key, dummy)
  variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
  logging.info("StepsizeUNet %s: %d parameters", config, count_params(variables["params"]))
  return variables


def apply_network(config: UNetConfig, variables: Variables, inputs: jax.Array, train: bool = False):
  """Run the network on ``inputs`` of shape ``(B, H, W, C)``.

  ``train=False``: BatchNorm uses running statistics; returns the log-scale, ``(B,)`` or
  ``(B, H, W)``. Pure, so it can be jitted (``config`` and ``train`` static) and vmapped.
  ``train=True``: BatchNorm uses batch statistics; returns ``(output, new_batch_stats)``.
  """
  model = StepsizeUNet(config)
  if not train:
    return model.apply(variables, inputs, train=False)
  output, updates = model.apply(variables, inputs, train=True, mutable=["batch_stats"])
  return output, updates["batch_stats"]
