"""Douglas-Rachford splitting for problems whose ``(I + t A^T A)^{-1}`` is cheap: inpainting,
partial Fourier and (circular) deblurring, where the measurement is diagonal in pixels or in the
DFT and the wavelet synthesis is a Parseval frame."""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from jsgp import struct, validation


class DouglasRachfordState(NamedTuple):
  x: jax.Array               # x_k = prox_{t g}(z_{k-1}), canvas; sparse (a soft-threshold's output)
  residual: jax.Array        # A x_k - y, computed from x_k (never accumulated)
  objective: jax.Array       # F(x_k), from the fresh residual: the true objective
  stepsize: jax.Array        # t, DR's parameter (constant)
  backtracks: jax.Array      # always 0
  z: jax.Array               # the governing sequence z_k (canvas); x_{k+1} = prox_{t g}(z_k)
  offset: jax.Array          # (I + t A^T A)^{-1} t A^T y (constant; see ``measured_offset``)
  held: jax.Array            # bool: x did not change in the last step while z moved (see step)
  z_image: jax.Array         # W^T z_k (H, W), updated with z (see DouglasRachford)
  offset_image: jax.Array    # W^T offset (constant)
  relaxation: jax.Array      # rho (constant)


def sampled_fraction(problem) -> jax.Array:
  """The fraction of the measurement's outputs that hold data (``mean(measured_entries)``): the
  sampling rate of a pixel mask or a k-space pattern; ``1`` for a blur."""
  return jnp.mean(jnp.asarray(problem.measurement.measured_entries(), problem.lipschitz.dtype))


def default_gamma(problem, scale: float, largest: float) -> jax.Array:
  """``t = min(scale * max|x_0| / (rate lam), largest) / L`` with ``x_0`` the measurement's direct
  image estimate (zero-filled, blurred) and ``rate`` its ``sampled_fraction``. ``t lam``, the soft
  threshold, is then a fixed fraction of the image's range over the rate, whatever the scaling of
  ``y`` and ``lam`` (iterations to a 1e-5 gap measured best at ``t lam`` ~ 8 % of the range at
  30 % sampling, ~5 % at 50 %, ~3.5 % at 70 %, on training images); ``t L`` stays below
  ``largest``: with a tiny ``lam`` (the paper's deblurring, 1e-5) the first term is ~1e6, and
  ``t L`` = 300 ... 1e4 all reach a normalised 1e-5 gap in 10 iterations there (rho = 1.5;
  BUILD_NOTES.md, "Douglas-Rachford")."""
  peak = jnp.max(jnp.abs(problem.initial_image()))
  first = scale * peak / (sampled_fraction(problem) * problem.lam)
  return jnp.minimum(first, largest) / problem.lipschitz


def default_relaxation(problem) -> jax.Array:
  """``rho``: 1.7 where the measurement samples (``sampled_fraction < 1``: masks, k-space
  patterns), 1 where it measures everything (a blur). Chosen on training images: of 1.3 / 1.5 /
  1.7 / 1.85, 1.7 took the fewest iterations to 1e-3 (or tied) on all 18 inpainting and partial
  Fourier problems (30 / 50 / 70 %) and fewer than 1.5 to 1e-5 on all 18 (1.85 is a few % fewer
  to 1e-5 on some, and slower to 1e-3); on deblurring (``t L`` = 300) over-relaxation only slows
  the iteration down (1 / 1.5 / 1.7: 3 / 10 / 17 iterations to a normalised 1e-5 gap)."""
  return jnp.where(sampled_fraction(problem) < 1.0, 1.7, 1.0)


def measured_offset(problem, t) -> Tuple[jax.Array, jax.Array]:
  """``c = (I + t A^T A)^{-1} t A^T y`` ``(Hc, Wc)`` to working precision, and its image ``W^T c``.

  DR's second step ``(I + t A^T A)^{-1}(w + t A^T y)`` is ``N w + c`` with ``N = (I + t A^T A)^{-1}``.
  Formed as one solve, its argument is ~``t L`` times larger than its result (``t A^T y`` against
  ``|x|``, ``t L`` = 100-300 by default), so float32 loses ~2.5 of its 7 digits there on every
  iteration: DR then stalls at a relative objective gap of ~5e-5 (BUILD_NOTES.md, "Douglas-Rachford
  in float32"). ``N t A^T y`` has the same cancellation once; one step of iterative refinement, on
  the system's residual ``t A^T y - (I + t A^T A) c = -t A^T (A c - y) - c`` (both terms of the
  size of ``c``), removes it. Images come from the solves (``W^T W = I``: the image of
  ``t A^T y`` is ``t M^T y``), so no synthesis: two solves, two ``M^T``, one ``M``, four analyses.
  """
  back_projection = problem.measurement.adjoint(problem.y)         # M^T y, an image
  offset, image = problem.normal_solve_imaged(t * problem.synthesis.adjoint(back_projection),
                                              t * back_projection, t)
  residual_back = problem.measurement.adjoint(problem.measurement.apply(image) - problem.y)
  correction, correction_image = problem.normal_solve_imaged(
      -t * problem.synthesis.adjoint(residual_back) - offset, -t * residual_back - image, t)
  return offset + correction, image + correction_image


@struct.dataclass
class DouglasRachford:
  """Douglas-Rachford splitting of ``F = f + g`` (Lions and Mercier 1979), with parameter ``t``::

      x_{k+1} = prox_{t g}(z_k)                                    (soft threshold at t lam)
      u_{k+1} = prox_{t f}(2 x_{k+1} - z_k) = (I + t A^T A)^{-1} (2 x_{k+1} - z_k) + c
      z_{k+1} = z_k + rho (u_{k+1} - x_{k+1})

  ``rho = relaxation`` in (0, 2) (``1``: plain DR; over-relaxed, the Krasnosel'skii-Mann iteration
  of the averaged DR operator). ``z_k`` converges to a point whose prox is a minimiser and
  ``x_k -> x*`` for every ``t > 0`` and ``rho`` in (0, 2) (f and g convex, proper, closed;
  Lions-Mercier 1979, Eckstein-Bertsekas 1992, Svaiter 2011); the objective is not monotone.
  ``c = (I + t A^T A)^{-1} t A^T y`` is computed once (``measured_offset``), so that no iteration
  forms the ``t L``-times larger ``t A^T y``: float32 then follows the float64 iterates.
  ``relaxation``: given, or ``default_relaxation``: 1.7 for a sampling measurement (a mask or a
  k-space pattern: the fewest iterations of 1.3 / 1.5 / 1.7 / 1.85 on inpainting and partial
  Fourier to 1e-3), 1 for one that measures everything (a blur: 3 iterations to a normalised 1e-5 gap
  where 1.5 takes 10 and 1.7 17; BUILD_NOTES.md).
  ``t``: ``gamma`` if given, else ``default_gamma(problem, gamma_scale, gamma_max)``. ``init``
  starts at ``z_0 = prox_{t f}(x_0)`` (``c`` from ``x_0 = 0``), ``warm_start`` / ``restart`` at
  ``z_0 = x_0``. A step that leaves ``x`` unchanged while ``z`` moves (the first one from
  ``z_0 = x_0 = 0``) is ``held``.

  Needs ``problem.normal_solve`` (``jsgp.problems.L1Problem``): a measurement with
  ``normal_solve`` (pixel mask, partial Fourier, circular blur; not CT) and a Parseval synthesis.
  Cost per iteration: one synthesis (``W^T x_{k+1}``, for its fresh residual and for the solve),
  the measurement, its solve (elementwise, or one FFT pair) and one analysis: a FISTA iteration's
  work (0.99-1.04x monotone FISTA's time per iteration at 128 px: ``python -m experiments.bench
  --tasks=inpainting,fourier,deblur --methods=mfista,douglas_rachford --size=128 --repeats=15``),
  for several times fewer iterations on these problems. The solve's input image ``W^T(2 x - z) = 2 W^T x - W^T z`` uses the image of
  ``z``, carried alongside it (``W^T z_{k+1} = W^T z_k + rho (W^T u - W^T x)``, the image of ``u``
  being the solve's output): the two are updated by the same step, each rounded on its own (float32
  after 20000 iterations: true gap 6e-9 against 1e-9 recomputing it; BUILD_NOTES.md); the residual
  and the objective are always recomputed from ``x``.
  Its tail depends on ``t`` (BUILD_NOTES.md, "Douglas-Rachford"). (The stalls measured before
  ``measured_offset`` were float32 cancellation, not the method.)
  """

  gamma: Optional[float] = struct.field(pytree_node=False, default=None)
  gamma_scale: float = struct.field(pytree_node=False, default=0.025)
  gamma_max: float = struct.field(pytree_node=False, default=300.0)
  relaxation: Optional[float] = struct.field(pytree_node=False, default=None)

  def __post_init__(self):
    if self.gamma is not None:
      validation.check_setting("DouglasRachford", "gamma", self.gamma, low=0)
    validation.check_setting("DouglasRachford", "gamma_scale", self.gamma_scale, low=0)
    validation.check_setting("DouglasRachford", "gamma_max", self.gamma_max, low=0)
    if self.relaxation is not None:
      validation.check_setting("DouglasRachford", "relaxation", self.relaxation, low=0, high=2)

  def parameter(self, problem, dtype) -> jax.Array:
    if self.gamma is not None:
      return jnp.asarray(self.gamma, dtype)
    return default_gamma(problem, self.gamma_scale, self.gamma_max).astype(dtype)

  def init(self, problem, x0) -> DouglasRachfordState:
    """The cold start at ``x0``: ``z_0 = prox_{t f}(x_0) = (I + t A^T A)^{-1} x_0 + c``, so that
    the first iteration thresholds a data-consistent point, ``x_1 = prox_{t g}(prox_{t f}(x_0))``.
    From ``x_0 = 0`` (no solve then) ``z_0 = c``, the regularised least-squares estimate; with
    ``z_0 = x_0 = 0`` the first iteration would return ``x_1 = 0`` again. Measured on held-out
    128 px problems: 0-2 iterations fewer to 1e-3 on inpainting and partial Fourier (-4 ... +3 to
    1e-5, mostly -1), 2 / 3 -> 1 / 2 on deblurring (BUILD_NOTES.md). ``warm_start``
    and ``restart`` keep ``z_0 = x_0`` (a hand-off continues from the point it is handed)."""
    x0_image = problem.image(x0)
    residual = problem.measurement.apply(x0_image) - problem.y
    objective = problem.f_from_residual(residual) + problem.g(x0)
    state = self._start(problem, x0, x0_image, residual, objective)
    t = state.stepsize.astype(x0.dtype)
    solved, solved_image = jax.lax.cond(
        jnp.any(x0 != 0), lambda: problem.normal_solve_imaged(x0, x0_image, t),
        lambda: (jnp.zeros_like(x0), jnp.zeros_like(x0_image)))
    return state._replace(z=solved + state.offset, z_image=solved_image + state.offset_image)

  def warm_start(self, problem, x0, residual, grad, objective) -> DouglasRachfordState:
    """The state at ``x0`` from its residual and objective (``z_0 = x_0``): one synthesis and
    ``measured_offset``'s solves."""
    del grad
    return self._start(problem, x0, problem.image(x0), residual, objective)

  def restart(self, problem, state: DouglasRachfordState, x0, residual, grad,
              objective) -> DouglasRachfordState:
    """``warm_start`` at ``x0`` keeping ``state``'s ``t``, ``rho`` and offset (``state`` is a
    state on the same problem): one synthesis, no solve. ``DRS`` hands off to
    Douglas-Rachford this way."""
    del grad
    return state._replace(x=x0, residual=residual, objective=objective, z=x0,
                          z_image=problem.image(x0), held=jnp.bool_(False),
                          backtracks=jnp.int32(0))

  def _start(self, problem, x0, x0_image, residual, objective) -> DouglasRachfordState:
    dtype = jnp.real(objective).dtype
    t = self.parameter(problem, dtype)
    offset, offset_image = measured_offset(problem, t.astype(x0.dtype))
    rho = default_relaxation(problem) if self.relaxation is None else self.relaxation
    return DouglasRachfordState(x0, residual, objective, t, jnp.int32(0), x0,
                                offset.astype(x0.dtype), jnp.bool_(False), x0_image,
                                offset_image.astype(x0_image.dtype), jnp.asarray(rho, dtype))

  def step(self, problem, state: DouglasRachfordState) -> DouglasRachfordState:
    t = state.stepsize
    x = problem.prox(state.z, t.astype(state.z.dtype))
    x_image = problem.image(x)
    residual = problem.measurement.apply(x_image) - problem.y
    objective = problem.f_from_residual(residual) + problem.g(x)
    u, u_image = problem.normal_solve_imaged(2.0 * x - state.z, 2.0 * x_image - state.z_image, t)
    u, u_image = u + state.offset, u_image + state.offset_image
    rho = state.relaxation.astype(x.dtype)
    # x can stay put while z moves (from z_0 = 0 the first x is 0 again): such a step is
    # ``held``, so that the driver's objective-change rule does not take it for convergence.
    return state._replace(x=x, residual=residual, objective=objective, z=state.z + rho * (u - x),
                          z_image=state.z_image + rho * (u_image - x_image),
                          held=objective == state.objective)
