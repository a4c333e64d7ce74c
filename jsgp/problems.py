"""The l1-wavelet least-squares problem and measurement simulation for the four tasks.

``min_x F(x) = 1/2 ||A x - y||^2 + lam ||x||_1`` with ``x`` the wavelet-coefficient canvas and
``A = M o W^T`` (M the measurement operator). Images live on the paper's 0-255 intensity scale.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jsgp import struct, validation
from jsgp.operators import (PATTERNS, Composed, Identity, LinearOperator, WaveletSynthesis,
                            fourier_pattern, gaussian_blur, operator_norm_squared,
                            random_pixel_mask, sum_squares)
from jsgp.prox import soft_threshold

# Safety factor on the power-iteration estimate of ||A||^2 (which approaches it from below).
LIPSCHITZ_MARGIN = 1.01


@struct.dataclass
class L1Problem:
  """One instance (or, stacked, a batch) of the l1 least-squares problem.

  The forward map is ``A = measurement o synthesis``; the two parts are kept apart so that a
  caller can ask each for what it knows (the image of an iterate, an initial estimate from ``y``).

  Attributes:
    measurement: ``M``, maps an image ``synthesis.out_shape`` to measurements ``y``.
    synthesis: ``W^T``, maps a coefficient canvas ``(Hc, Wc)`` to the image
      (``jsgp.operators.Identity`` for a problem posed on the image itself).
    y: measurements, ``measurement.out_shape`` (complex for partial Fourier).
    lam: scalar regularisation weight.
    lipschitz: scalar upper estimate of ``||A||^2``, the Lipschitz constant of ``grad f``.
  """

  measurement: LinearOperator
  synthesis: LinearOperator
  y: jax.Array
  lam: jax.Array
  lipschitz: jax.Array

  @property
  def op(self) -> Composed:
    """``A = M o W^T``: canvas ``(Hc, Wc)`` -> measurements."""
    return Composed(outer=self.measurement, inner=self.synthesis)

  # Everything is expressed through the residual r = A x - y so that solvers can reuse A x.
  def residual(self, x: jax.Array) -> jax.Array:
    return self.op.apply(x) - self.y

  def f(self, x: jax.Array) -> jax.Array:
    return 0.5 * sum_squares(self.residual(x))

  def f_from_residual(self, r: jax.Array) -> jax.Array:
    return 0.5 * sum_squares(r)

  def grad_from_residual(self, r: jax.Array) -> jax.Array:
    return self.op.adjoint(r)

  def grad(self, x: jax.Array) -> jax.Array:
    return self.grad_from_residual(self.residual(x))

  def g(self, x: jax.Array) -> jax.Array:
    return self.lam * jnp.sum(jnp.abs(x))

  def g_change(self, x: jax.Array, z: jax.Array) -> jax.Array:
    """``g(x + z) - g(x)`` entry by entry (canvas shape; ``g`` is its sum): differences of
    entries, never of two norms of the size of ``F``."""
    return self.lam * (jnp.abs(x + z) - jnp.abs(x))

  def objective(self, x: jax.Array) -> jax.Array:
    return self.f(x) + self.g(x)

  def first_order(self, x: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """``(A x - y, grad f(x), F(x))``: one ``A`` and one ``A^T``."""
    residual = self.residual(x)
    grad = self.grad_from_residual(residual)
    return residual, grad, self.f_from_residual(residual) + self.g(x)

  def prox(self, v: jax.Array, step) -> jax.Array:
    """``prox_{step g}(v)``; ``step`` is a scalar or a per-coefficient array (``t * d``)."""
    return soft_threshold(v, self.lam * step)

  def forward_backward(self, x: jax.Array, grad: jax.Array, step) -> jax.Array:
    """``prox_{step g}(x - step * grad)``."""
    return self.prox(x - step * grad, step)

  def normal_solve(self, v: jax.Array, t) -> jax.Array:
    """``(I + t A^T A)^{-1} v`` for a canvas ``v`` ``(Hc, Wc)`` and a scalar ``t > 0``.

    With a Parseval synthesis (``W^T W = I`` on images; the wavelet canvas and ``Identity``) and
    ``Q = M^T M``: ``(I + t W Q W^T)^{-1} = I - W W^T + W (I + t Q)^{-1} W^T``, so one synthesis,
    the measurement's own ``normal_solve`` and one analysis. A measurement without one (CT's
    projector) is a ``ValueError``.
    """
    return self.normal_solve_imaged(v, self.synthesis.apply(v), t)[0]

  def normal_solve_imaged(self, v: jax.Array, v_image: jax.Array, t) -> Tuple[jax.Array, jax.Array]:
    """``normal_solve`` given ``v_image = W^T v`` ``(H, W)``: ``((I + t A^T A)^{-1} v, its image)``
    (the image is ``(I + t Q)^{-1} v_image``); one analysis and the measurement's solve."""
    solve = getattr(self.measurement, "normal_solve", None)
    if solve is None:
      raise ValueError(f"{type(self.measurement).__name__} has no normal_solve: (I + t A^T A)^-1 "
                       "is not cheap for this measurement (DouglasRachford needs it, also as "
                       "DRS's hand-off: use FISTA, or DRS(..., handoff=FISTA(max_backtracks=0, "
                       "monotone=True)); pretrained.solver(task, handoff=...) takes the same)")
    solved = solve(v_image, t)
    return v - self.synthesis.adjoint(v_image - solved), solved

  def image(self, x: jax.Array) -> jax.Array:
    """``W^T x``: the image ``(H, W)`` of a coefficient canvas."""
    return self.synthesis.apply(x)

  def initial_image(self) -> jax.Array:
    """The measurement operator's direct estimate of the image from ``y`` ``(H, W)`` (zero-filled,
    blurred, or filtered back-projection for CT)."""
    return self.measurement.initial_estimate(self.y)

  def zeros(self) -> jax.Array:
    """The all-zero starting canvas ``(Hc, Wc)`` (batch axes first for a batched problem), in the
    real dtype of ``y``: the initial point of every solve unless the caller gives one."""
    batch = jnp.shape(self.lam)
    return jnp.zeros(tuple(batch) + tuple(self.op.in_shape), jnp.real(jnp.asarray(self.y)).dtype)


def make_problem(measurement: LinearOperator, y: jax.Array, lam, *,
                 synthesis: Optional[LinearOperator] = None, lipschitz=None,
                 key: Optional[jax.Array] = None, power_iterations: int = 30) -> L1Problem:
  """Validated constructor for user code (concrete inputs, not for use under ``jit``).

  ``synthesis`` (e.g. ``WaveletSynthesis(image_shape)``) maps the unknown coefficients to the
  image that ``measurement`` sees; ``None`` poses the problem on the image itself.

  Args:
    measurement: the measurement operator ``M`` (a ``jsgp.operators.LinearOperator``): image
      ``measurement.in_shape`` -> measurements ``measurement.out_shape``.
    y: the measurements, shape ``measurement.out_shape``, finite; complex only for an operator
      with complex measurements (e.g. partial Fourier). Its real dtype is the problem's dtype
      (of ``lam``, ``lipschitz`` and the power iteration).
    lam: the regularisation weight, a finite scalar > 0.
    synthesis: the operator ``W^T`` from the unknown coefficient canvas to the image (its
      ``out_shape`` must be ``measurement.in_shape``); ``None`` (default):
      ``Identity(measurement.in_shape)``.
    lipschitz: an upper bound on ``||A||^2``, finite and > 0; ``None`` (default): the
      power-iteration estimate of ``||M o W^T||^2`` times ``LIPSCHITZ_MARGIN``.
    key: the PRNG key of the power iteration's random start (used only when ``lipschitz`` is
      ``None``); ``None`` (default): ``jax.random.PRNGKey(0)``.
    power_iterations: the number of power iterations (default 30; used only when
      ``lipschitz`` is ``None``).

  Returns:
    An unbatched ``L1Problem`` holding ``measurement``, ``synthesis`` (or the ``Identity``),
    ``y`` as a JAX array, and ``lam`` and ``lipschitz`` as scalar arrays in the real dtype of
    ``y``.

  Raises:
    ValueError: ``lam`` not a finite scalar > 0; NaN/Inf in ``y``; ``y`` not of shape
      ``measurement.out_shape``; ``synthesis.out_shape`` not ``measurement.in_shape``; a
      complex ``y`` for an operator whose measurements are real; ``lipschitz`` (given or
      estimated) not finite and > 0.
  """
  if synthesis is None:
    synthesis = Identity(tuple(measurement.in_shape))
  validation.check_positive("lam", lam)
  validation.check_shape("lam", jnp.shape(lam), ())
  validation.check_finite("y", y)
  validation.check_shape("y", jnp.shape(y), measurement.out_shape)
  validation.check_shape("synthesis output", synthesis.out_shape, measurement.in_shape)
  dtype = jnp.real(jnp.asarray(y)).dtype
  if jnp.iscomplexobj(y) and not jnp.iscomplexobj(jax.eval_shape(
      measurement.apply, jax.ShapeDtypeStruct(tuple(measurement.in_shape), dtype))):
    raise ValueError("y is complex, but the measurement operator makes real measurements: "
                     "pass the real measurements.")
  if lipschitz is None:
    key = jax.random.PRNGKey(0) if key is None else key
    lipschitz = LIPSCHITZ_MARGIN * operator_norm_squared(measurement @ synthesis, key,
                                                         power_iterations, dtype)
  validation.check_positive("lipschitz", lipschitz)
  return L1Problem(measurement=measurement, synthesis=synthesis, y=jnp.asarray(y),
                   lam=jnp.asarray(lam, dtype), lipschitz=jnp.asarray(lipschitz, dtype))


# ------------------------------------------------------------------------------------------------
# Measurement simulation.

TASKS = ("inpainting", "fourier", "deblur", "ct")
PAPER_LAM = {"inpainting": 0.1, "fourier": 0.1, "deblur": 1e-5, "ct": 5e-4}


@dataclasses.dataclass(frozen=True)
class Task:
  """Static description of a measurement setting (hashable; safe as a ``jit`` static argument).

  Attributes:
    name: one of ``TASKS``.
    image_shape: ``(H, W)``.
    rate: sampling rate in (0, 1] (inpainting: kept pixels; fourier: k-space samples).
    noise_sigma: std of additive Gaussian measurement noise on the 0-255 scale.
    lam: regularisation weight (defaults to the paper's value for the task).
    blur_sigma: Gaussian kernel std in pixels (deblur).
    n_views: projection angles in [0, pi) (ct).
    pattern: k-space sampling of ``fourier`` (``jsgp.operators.PATTERNS``): ``variable_density``
      (fully sampled centre, density decaying outwards; easy) or ``uniform`` (uniform random
      around a small centre: as hard as the paper's), ``lines``, ``radial``.
    wavelet, level: the sparsifying transform.
  """

  name: str
  image_shape: Tuple[int, int] = (256, 256)
  rate: float = 0.5
  noise_sigma: float = 0.0
  lam: Optional[float] = None
  blur_sigma: float = 2.0
  n_views: int = 144
  pattern: str = "variable_density"
  wavelet: str = "sym4"
  level: int = 3

  def __post_init__(self):
    if self.name not in TASKS:
      raise ValueError(f"unknown task {self.name!r}; expected one of {TASKS}.")
    validation.check_rate("rate", self.rate)
    validation.check_nonnegative("noise_sigma", self.noise_sigma)
    validation.check_positive("lam", self.regularization)
    validation.check_positive("blur_sigma", self.blur_sigma)
    validation.check_integer("n_views", self.n_views, 1)
    validation.check_integer("level", self.level, 1)
    if self.pattern not in PATTERNS:
      raise ValueError(f"unknown Fourier sampling pattern {self.pattern!r}; expected one of "
                       f"{PATTERNS}.")
    if len(self.image_shape) != 2 or min(self.image_shape) < 16:
      raise ValueError(f"image_shape must be (H, W) with H, W >= 16, got {self.image_shape}.")

  @property
  def regularization(self) -> float:
    return PAPER_LAM[self.name] if self.lam is None else self.lam

  @property
  def synthesis(self) -> WaveletSynthesis:
    return WaveletSynthesis(tuple(self.image_shape), self.wavelet, self.level)

  def replace(self, **changes) -> "Task":
    return dataclasses.replace(self, **changes)


class TaskNumbers(NamedTuple):
  """The numeric settings of a ``Task``, as (traceable) values: a jit over ``simulate`` compiles
  once per task *structure* (name, shape, views) rather than once per rate or lam."""

  rate: Any
  noise_sigma: Any
  lam: Any
  blur_sigma: Any

  @classmethod
  def of(cls, task: "Task") -> "TaskNumbers":
    return cls(task.rate, task.noise_sigma, task.regularization, task.blur_sigma)


def _structure(task: Task) -> Task:
  """``task`` with its numeric settings replaced by fixed placeholders (a static jit key)."""
  return task.replace(rate=1.0, noise_sigma=0.0, lam=1.0, blur_sigma=1.0)


def measurement_operator(task: Task, key: jax.Array, dtype=jnp.float32,
                         numbers: Optional[TaskNumbers] = None) -> LinearOperator:
  """The image-domain operator ``M`` of ``task``, random where the task is (mask, pattern)."""
  numbers = TaskNumbers.of(task) if numbers is None else numbers
  if task.name == "inpainting":
    return random_pixel_mask(key, task.image_shape, numbers.rate, dtype)
  if task.name == "fourier":
    return fourier_pattern(task.pattern, key, task.image_shape, numbers.rate, dtype)
  if task.name == "deblur":
    return gaussian_blur(task.image_shape, numbers.blur_sigma, dtype)
  from jsgp.operators.radon import parallel_beam  # pylint: disable=import-outside-toplevel
  return parallel_beam(task.image_shape, task.n_views, dtype=dtype)


# Tasks whose measurement operator does not depend on the random key (one operator per batch).
SHARED_OPERATOR_TASKS = ("deblur", "ct")


def _measure(meas: LinearOperator, image: jax.Array, key: jax.Array, noise_sigma) -> jax.Array:
  """``meas(image)`` plus white Gaussian noise of std ``noise_sigma`` on the measured entries."""
  dtype = image.dtype
  clean = meas.apply(image)
  if jnp.iscomplexobj(clean):
    nr, ni = jax.random.normal(key, (2,) + clean.shape, dtype)
    noise = (nr + 1j * ni) * (noise_sigma / jnp.sqrt(2.0))
  else:
    noise = noise_sigma * jax.random.normal(key, clean.shape, dtype)
  return clean + noise * meas.measured_entries()


def _lipschitz(meas: LinearOperator, synthesis: LinearOperator, key: jax.Array,
               power_iterations: int, dtype) -> jax.Array:
  return LIPSCHITZ_MARGIN * operator_norm_squared(meas @ synthesis, key, power_iterations, dtype)


def simulate(task: Task, image: jax.Array, key: jax.Array, power_iterations: int = 30,
             numbers: Optional[TaskNumbers] = None) -> L1Problem:
  """Measure ``image`` ``(H, W)`` (0-255 scale) under ``task``: a pure, jit- and vmap-able map.

  Noise: white Gaussian with std ``noise_sigma`` on each real measurement; for complex (Fourier)
  measurements the real and imaginary parts each get ``noise_sigma / sqrt(2)`` so that the noise
  power per sample equals that of image-domain noise of std ``noise_sigma`` (the DFT is
  orthonormal). Unsampled entries stay exactly zero.

  Args:
    task: the measurement setting, a ``Task`` (hashable, not a pytree: static under ``jit``).
      Its name, ``image_shape``, ``n_views``, ``pattern``, ``wavelet`` and ``level`` fix the
      problem's structure; its numeric settings are used unless ``numbers`` is given.
    image: the true image, shape ``task.image_shape`` ``(H, W)``, floating point on the 0-255
      scale; its dtype is the problem's.
    key: a PRNG key, split three ways: the operator draw (pixel mask, k-space pattern; unused
      for ``deblur`` and ``ct``), the noise, and the power iteration's random start.
    power_iterations: the number of power iterations estimating ``||A||^2`` (default 30).
    numbers: the numeric settings as values that may be traced (``TaskNumbers``: ``rate``,
      ``noise_sigma``, ``lam``, ``blur_sigma``); ``None`` (default): ``TaskNumbers.of(task)``.

  Returns:
    An unbatched ``L1Problem``: ``measurement``, the task's operator ``M``; ``synthesis``,
    ``task.synthesis`` (``WaveletSynthesis(image_shape, wavelet, level)``: the unknown is its
    coefficient canvas ``(Hc, Wc)``); ``y``, the noisy measurements ``measurement.out_shape``
    (complex for ``fourier``); ``lam``, the scalar weight; ``lipschitz``, ``LIPSCHITZ_MARGIN``
    times the power-iteration estimate of ``||A||^2``. The operator, ``lam`` and ``lipschitz``
    are in ``image``'s dtype, ``y`` in it or its complex counterpart.
  """
  numbers = TaskNumbers.of(task) if numbers is None else numbers
  dtype = image.dtype
  k_op, k_noise, k_power = jax.random.split(key, 3)
  meas = measurement_operator(task, k_op, dtype, numbers)
  synthesis = task.synthesis
  return L1Problem(measurement=meas, synthesis=synthesis,
                   y=_measure(meas, image, k_noise, numbers.noise_sigma),
                   lam=jnp.asarray(numbers.lam, dtype),
                   lipschitz=_lipschitz(meas, synthesis, k_power, power_iterations, dtype))


def simulate_batch(task: Task, images: jax.Array, key: jax.Array,
                   numbers: Optional[TaskNumbers] = None) -> L1Problem:
  """``simulate`` over ``images`` ``(B, H, W)``: one key (operator draw, noise) per image.

  ``numbers``: per-image settings (``TaskNumbers`` of ``(B,)`` arrays; e.g. mixed sampling rates
  for training), by default ``task``'s for all. Where the operator does not depend on the key
  (``SHARED_OPERATOR_TASKS``, with settings common to the batch) it is built, and its Lipschitz
  constant estimated, once for the batch rather than once per image.

  Args:
    task: the measurement setting, a ``Task``. Only its structure (name, ``image_shape``,
      ``n_views``, ``pattern``, ``wavelet``, ``level``) is a static key of the jitted
      simulation; its numeric settings are passed as values, so a new ``rate`` or ``lam`` does
      not recompile.
    images: the true images ``(B, H, W)``, ``(H, W) = task.image_shape``, floating point on the
      0-255 scale; their dtype is the problems'.
    key: one PRNG key, split into ``B`` keys (image ``i``'s key plays ``simulate``'s ``key``).
    numbers: a ``TaskNumbers`` of scalars (common to the batch) or of ``(B,)`` arrays (per
      image: if any field is an array, all must be ``(B,)``), cast to ``images``' dtype;
      ``None`` (default): ``task``'s settings.

  Returns:
    A batched ``L1Problem``: ``y`` ``(B,) + measurement.out_shape``, ``lam`` and ``lipschitz``
    ``(B,)`` (30 power iterations), the measurement operator's array leaves with a leading
    ``B`` axis (broadcast copies of one operator for ``SHARED_OPERATOR_TASKS`` with common
    settings); ``synthesis`` (``task.synthesis``, which has no array leaves) is shared.
  """
  keys = jax.random.split(key, images.shape[0])
  per_image = numbers is not None and any(np.ndim(v) for v in numbers)
  numbers = TaskNumbers.of(task) if numbers is None else numbers
  numbers = TaskNumbers(*(jnp.asarray(v, images.dtype) for v in numbers))
  shared = task.name in SHARED_OPERATOR_TASKS and not per_image
  return _simulate_batch(_structure(task), images, keys, numbers, per_image, shared)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _simulate_batch(structure: Task, images, keys, numbers, per_image: bool,
                    shared: bool) -> L1Problem:
  if not shared:
    axes = TaskNumbers(*([0] * 4)) if per_image else None
    return jax.vmap(lambda im, k, n: simulate(structure, im, k, numbers=n),
                    in_axes=(0, 0, axes))(images, keys, numbers)
  dtype = images.dtype
  k_op, _, k_power = jax.random.split(keys[0], 3)
  meas = measurement_operator(structure, k_op, dtype, numbers)
  synthesis = structure.synthesis
  lipschitz = _lipschitz(meas, synthesis, k_power, 30, dtype)
  y = jax.vmap(lambda im, k: _measure(meas, im, jax.random.split(k, 3)[1],
                                      numbers.noise_sigma))(images, keys)
  batch = images.shape[0]
  stack = lambda a: jnp.broadcast_to(a, (batch,) + jnp.shape(a))
  return L1Problem(measurement=jax.tree_util.tree_map(stack, meas), synthesis=synthesis, y=y,
                   lam=stack(jnp.asarray(numbers.lam, dtype)), lipschitz=stack(lipschitz))


def image_of(problems: L1Problem, x: jax.Array) -> jax.Array:
  """``W^T x`` for a batch: ``problems`` and ``x`` ``(B, Hc, Wc)`` -> ``(B, H, W)``; unbatched
  inputs give one image."""
  if x.ndim == 2:
    return problems.image(x)
  return jax.vmap(L1Problem.image)(problems, x)


def to_float64(tree):
  """``tree`` (e.g. an ``L1Problem``) with float32 leaves as float64 and complex64 as complex128."""

  def up(a):
    a = jnp.asarray(a)
    if jnp.iscomplexobj(a):
      return a.astype(jnp.complex128)
    return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a

  if not jax.config.jax_enable_x64:
    raise RuntimeError("to_float64 needs jax_enable_x64 (set it before any computation)")
  return jax.tree_util.tree_map(up, tree)
