"""Matrix-free parallel-beam projector (2-D Radon transform) for sparse-view CT.

Geometry (chosen to line up with ``skimage.transform.radon(image, theta=degrees, circle=False)``,
whose sinogram is ``(n_detectors, n_views)``; ours is its transpose, ``(n_views, n_detectors)``):

* Unit pixel size = unit detector-bin width, so a sinogram entry is a line integral in pixel units
  (at ``theta = 0`` a view is exactly the column sums of the image).
* Rotation centre: pixel ``(H // 2, W // 2)``. A pixel at row ``r``, column ``c`` has coordinates
  ``x = c - W // 2`` (right) and ``y = H // 2 - r`` (up).
* Detector coordinate ``p = x cos(theta) + y sin(theta) + n_detectors // 2``; bin ``i`` is centred
  at ``p = i``. ``theta = 0`` views along the columns, angles turn counter-clockwise.
  With the centre on a pixel and on a bin, pixel centres fall on bin centres at 0 and 90 degrees
  for any image/detector parity, so no parity fix is needed.

Discretisation (pixel-driven, box footprint; see ``_bins_and_weights``): each pixel's projection
is modelled as a box of width ``w = max(|cos|, |sin|) <= 1`` centred at ``p``, so it overlaps two
bins ``k, k + 1``; it puts ``(1 - f) * value`` into bin ``k`` and ``f * value`` into bin ``k + 1``,
with ``(1 - f, f)`` the box's overlaps over ``w`` (contributions outside ``[0, n_detectors)`` are
dropped). At 0 and 90 degrees this is linear interpolation. Bins and weights are computed in int32
fixed point (the direction ``(cos, sin)`` is rounded to a multiple of ``2^-bits``, ``bits = 19`` at
512 x 512, a geometric error below 1e-3 pixel) so that they are bit-identical wherever XLA
recomputes them.

Both directions are gathers (no scatter-add anywhere: scatter-add is slow on CPU and, with atomics,
very slow on GPU), one view at a time (``lax.map`` / ``lax.scan``):

* ``adjoint`` (back-projection) is pixel-driven: every pixel gathers bins ``k, k + 1`` of the view.
  Per view ``O(H W)`` work and memory, nothing stored.
* ``apply`` (projection) is bin-driven. Lines are the image rows when ``|cos| >= |sin|``, else its
  columns; along a line pixel centres project ``w >= 1/sqrt(2)`` bin apart, so each bin receives
  from at most two consecutive pixels of a line as their first bin ``k`` (and from at most two as
  ``k + 1``). For every (line, bin) the first such pixel follows exactly from one integer division
  per line and one per bin (``_line_tables``); the two candidates are gathered and weighted with
  the same integers as the back-projection (``_project_view``), so the two directions use the same
  weights and are exact transposes up to float rounding (dot-tested in float64, ~1e-15). Per view
  ``O(max(H, W) (n_detectors + 1))`` work and a temporary of that many complex numbers (3 MB at
  512 x 512, float32); the image is kept as its padded rows and columns (``2 S (S + 4)`` values,
  ``S = max(H, W)``) and the integer tables of all views take ``4 (4 S + 3 n_detectors)`` bytes
  per view (2.5 MB at 512 x 512 x 144). No per-view table is stored between calls.

The projection costs more than the back-projection (timings in BUILD_NOTES.md), though far less
than the scatter-add it replaces: it visits ``sqrt(2)`` times more (line, bin) pairs than there
are pixels, with two gathers each.

Differentiation: ``apply`` and ``adjoint`` are a ``jax.custom_vjp`` pair (``_projection``,
``_backprojection``) whose reverse-mode derivative is the other one, so ``grad`` / ``vjp`` of
``apply`` run ``adjoint`` (and vice versa) instead of JAX's transposes of the gathers (which would
be scatter-adds); reverse mode keeps only the angles as residuals, and vmap works as for any
function. Forward mode (``jvp``) and ``jax.linear_transpose`` are not available (custom_vjp
functions have neither); nothing in jsgp needs them, as ``adjoint`` is explicit.
"""
from __future__ import annotations

import functools
import math
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jsgp import struct, validation
from jsgp.operators.base import LinearOperator


def default_n_detectors(image_shape: Tuple[int, int]) -> int:
  """``ceil(sqrt(2) * max(H, W))``, skimage's ``circle=False`` width.

  The image's diagonal fits: pixel centres project inside the detector (at some sizes, e.g.
  128 x 128, a corner pixel's centre is up to 0.01 bin past the end and a sliver of it is dropped).
  """
  return int(math.ceil(math.sqrt(2.0) * max(image_shape)))


def _fraction_bits(image_shape: Tuple[int, int], n_detectors: int) -> int:
  """Fixed-point fraction bits ``S`` with ``|p| * 2^(S + 1) < 2^30`` for every pixel and view."""
  h, w = image_shape
  reach = (w - w // 2) + (h - h // 2) + n_detectors // 2 + 2  # > |x| + |y| + centre
  bits = 29 - int(math.ceil(math.log2(reach)))
  if bits < 12:
    raise ValueError(f"image {image_shape} / {n_detectors} detectors too large for int32 bins")
  return bits


def _directions(angles: jax.Array, bits: int) -> jax.Array:
  """``(n_views,) -> (n_views, 2)`` int32: ``round(2^bits * (cos, sin))`` of each angle."""
  scale = float(2 ** bits)
  return jnp.round(jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1) * scale).astype(jnp.int32)


def _edge_terms(direction: jax.Array, image_shape: Tuple[int, int], n_detectors: int,
                bits: int) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Integer parts of the box's left edge: ``edge[r, c] = rows[r] + cols[c]``, and its width.

  ``rows`` ``(H,)``, ``cols`` ``(W,)`` and ``width`` (scalar) are int32 in units
  ``2^-(bits + 1)`` of a bin (see ``_bins_and_weights``); ``edge`` is ``e + 1/2``, so bin
  ``k = edge >> (bits + 1)``. Consecutive columns step ``edge`` by ``2 cos``, consecutive rows by
  ``-2 sin`` (both exact integers).
  """
  h, w = image_shape
  one = 1 << (bits + 1)  # one bin
  x = jnp.arange(w, dtype=jnp.int32) - w // 2
  y = h // 2 - jnp.arange(h, dtype=jnp.int32)
  width = 2 * jnp.maximum(jnp.abs(direction[0]), jnp.abs(direction[1]))  # w, in units of 1/one
  rows = 2 * y * direction[1] + (n_detectors // 2) * one + one // 2 - width // 2
  return rows, 2 * x * direction[0], width


def _bins_and_weights(direction: jax.Array, image_shape: Tuple[int, int], n_detectors: int,
                      bits: int, dtype) -> Tuple[jax.Array, jax.Array]:
  """One view's footprints: first bin ``k`` (int32), share ``f`` of bin ``k + 1``; both ``(H, W)``.

  A pixel's footprint is a box of width ``w = max(|cos|, |sin|)`` (the mean of its projected
  diagonals, ``<= 1``) centred at ``p``; bin ``i`` covers ``[i - 1/2, i + 1/2)``. With the box's
  left edge ``e = p - w / 2`` in bin ``k``, bin ``k`` gets the share ``min(k + 1/2 - e, w) / w``
  and bin ``k + 1`` the rest. Boxes of width ``w`` tile each image row (or column) projected at
  spacing ``w``, so a constant image gives flat views at every angle (linear interpolation, the
  ``w = 1`` case, ripples by about 10 % at 45 degrees). At 0 and 90 degrees the two coincide.

  Everything is computed exactly in int32 fixed point (units ``2^-(bits + 1)`` of a bin) from the
  fixed-point ``direction`` ``(2,)``. Exactness matters: XLA freely recomputes these values in the
  fusion that makes the bin index and again in the one that makes the weight, and in floating
  point the two may round differently (FMA contraction), so a pixel on a bin boundary got its bin
  from one rounding and its weight from the other and moved its whole value to the neighbouring
  bin. In integers every recomputation agrees bit for bit, in every program (the forward
  projection recomputes bins from the same integers too, see ``_project_view``).
  """
  one = 1 << (bits + 1)
  rows, cols, width = _edge_terms(direction, image_shape, n_detectors, bits)
  edge = rows[:, None] + cols[None, :]  # e + 1/2: bin k covers [k, k + 1)
  k = jnp.right_shift(edge, bits + 1)  # arithmetic shift: floor division
  lower = jnp.minimum(one - jnp.bitwise_and(edge, one - 1), width)
  f = (width - lower).astype(dtype) / width.astype(dtype)
  return k, f


def _slots(k: jax.Array, n_detectors: int) -> jax.Array:
  """Index ``k + 2`` of bin ``k`` in a detector padded by two bins below and one above, ``(H, W)``.

  Indices are clipped to ``[0, n_detectors + 2]``, so a pixel whose bins ``k``, ``k + 1`` lie
  outside the detector lands on padding (zeros for the gather): exactly the contributions that the
  forward projection drops (bins ``< 0`` or ``>= n_detectors``).
  """
  return jnp.clip(k + 2, 0, n_detectors + 2)


def _line_tables(direction: jax.Array, image_shape: Tuple[int, int], n_detectors: int,
                 bits: int) -> dict:
  """Integer tables of one view for ``_project_view``: per line ``(S,)``, per bin ``(n_detectors
  + 1,)`` (bins ``-1 ... n_detectors - 1``) and scalars; ``S = max(H, W)``.

  Lines are the image rows if ``|cos| >= |sin|``, else its columns (transposed image), so that
  along a line the left box edge ``edge`` (``_edge_terms``) moves by ``step = w`` (in
  ``2^-(bits + 1)`` bins, ``1/sqrt(2) <= w <= 1`` bin) per pixel. With ``sigma`` the sign of that
  move, ``u(m) = sigma * edge(l, m) = B_l + step * m`` increases along the line; pixel ``m`` has
  first bin ``>= j`` (``<= j`` if ``sigma < 0``) iff ``u(m) >= thr_j``. Writing
  ``B_l = step Q_l + R_l`` and ``thr_j = step P_j + T_j`` (floor division, ``0 <= R, T < step``),
  the first such pixel is ``P_j - Q_l + [T_j > R_l]`` and lies ``u - thr = R_l - T_j + step [T_j >
  R_l]`` past ``thr_j``: exact integers from one division per line and per bin, none per pixel.
  As ``step <= 1`` bin, that pixel is in bin ``j`` whenever it is on the line (bins are never
  skipped), and so is the next pixel iff ``u - thr < one - step``.
  """
  h, w = image_shape
  size = max(h, w)
  one = 1 << (bits + 1)
  rows, cols, width = _edge_terms(direction, image_shape, n_detectors, bits)
  by_rows = jnp.abs(direction[0]) >= jnp.abs(direction[1])
  # edge(l, m) = corner + across * l + step_signed * m (exact int32, as rows[r] + cols[c]).
  corner = rows[0] + cols[0]
  across = jnp.where(by_rows, -2 * direction[1], 2 * direction[0])
  along = jnp.where(by_rows, 2 * direction[0], -2 * direction[1])
  rising = along > 0
  sigma = jnp.where(rising, 1, -1)
  step = jnp.abs(along)
  line = jnp.arange(size, dtype=jnp.int32)
  bins = jnp.arange(-1, n_detectors, dtype=jnp.int32)
  start = sigma * (corner + across * line)  # B_l = u(l, 0)
  # rising: k(m) >= j <=> edge >= j one; falling: k(m) <= j <=> -edge >= -(j + 1) one + 1.
  threshold = jnp.where(rising, bins * one, -(bins + 1) * one + 1)
  q = jnp.floor_divide(start, step)
  p = jnp.floor_divide(threshold, step)
  r, t = start - q * step, threshold - p * step
  # Share of bin j + 1 (``_bins_and_weights``' width - lower) of a pixel in bin j lying
  # e = edge - j one past the bin's start: max(e - (one - width), 0), with e = d for the first
  # pixel and d + step for the second (rising), e = one - 1 - d and one - 1 - d - step (falling),
  # d = u - thr. Hence numerator_i = max(offset_i + sigma d, 0).
  offset0 = jnp.where(rising, width - one, width - 1)
  row_length = size + 4  # each line padded by two zero pixels on either side
  line_start = jnp.where(by_rows, 0, size * row_length) + line * row_length + 2
  return dict(line_start=line_start, q=q, r=r, sigma_r=sigma * r, p=p, t=t, sigma_t=sigma * t,
              step=step, sigma_step=sigma * step, offset0=offset0,
              offset1=offset0 + sigma * step, second_limit=one - step, width=width)


def _project_view(lines: jax.Array, tables: dict, size: int) -> jax.Array:
  """One view by gather: ``lines`` from ``_padded_lines``, ``tables`` from ``_line_tables``.

  For every line ``l`` and bin ``j`` in ``-1 ... n_detectors - 1``, the (at most two, as the
  pixel spacing along a line is ``>= 1/sqrt(2)`` bin) pixels of the line whose first bin is ``j``
  are gathered with their shares ``(1 - f)`` of bin ``j`` and ``f`` of bin ``j + 1``, recomputed
  from the same integers as ``_bins_and_weights`` (so the weights are the back-projection's, up to
  float rounding of ``f``); bin ``j`` of the view sums over lines the ``(1 - f)`` parts for ``j``
  and the ``f`` parts for ``j - 1``. ``(n_detectors,)``.
  """
  dtype = lines.dtype
  q, r, sigma_r, line_start = (tables[k][:, None] for k in ("q", "r", "sigma_r", "line_start"))
  p, t, sigma_t = (tables[k][None, :] for k in ("p", "t", "sigma_t"))
  later = t > r
  # First pixel of the line with first bin j; off the line it lands on zero padding (the gather
  # index stays inside the line's own padded row whatever the integers, e.g. for the zero lines
  # that pad a non-square image).
  first = jnp.clip(p + later.astype(jnp.int32) - q, -2, size)
  index = (line_start + first).astype(jnp.uint32)  # unsigned: no negative-index wrapping
  sigma_d = sigma_r - sigma_t + jnp.where(later, tables["sigma_step"], 0)
  second = r - t + jnp.where(later, tables["step"], 0) < tables["second_limit"]
  width = tables["width"].astype(dtype)
  f0 = jnp.maximum(tables["offset0"] + sigma_d, 0).astype(dtype) / width
  f1 = jnp.maximum(tables["offset1"] + sigma_d, 0).astype(dtype) / width
  v0 = lines.at[index].get(mode="promise_in_bounds")
  v1 = jnp.where(second, lines.at[index + 1].get(mode="promise_in_bounds"), 0)
  upper = f0 * v0 + f1 * v1  # to bin j + 1
  # One complex sum over lines (a real pair would be two fusions recomputing the indices).
  total = jnp.sum(lax.complex(v0 + v1 - upper, upper), axis=0)
  return total.real[1:] + total.imag[:-1]


def _padded_lines(image: jax.Array) -> jax.Array:
  """Rows of the image, then rows of its transpose (its columns), zero-padded to ``S x S`` and by
  two zero pixels at both ends of every line, flattened: ``(2 S (S + 4),)``."""
  h, w = image.shape
  size = max(h, w)
  square = jnp.pad(image, ((0, size - h), (0, size - w)))  # centre pixel (H // 2, W // 2) kept
  pad = ((0, 0), (2, 2))
  return jnp.concatenate([jnp.pad(square, pad).ravel(), jnp.pad(square.T, pad).ravel()])


def _backproject_view(view: jax.Array, direction: jax.Array,
                      image_shape: Tuple[int, int]) -> jax.Array:
  """Adjoint of ``_project_view``: ``(n_detectors,) -> (H, W)`` by gather."""
  n_detectors = view.shape[0]
  bits = _fraction_bits(image_shape, n_detectors)
  k, f = _bins_and_weights(direction, image_shape, n_detectors, bits, view.dtype)
  padded = jnp.pad(view, 2)
  slots = _slots(k, n_detectors).ravel()  # flat indices gather faster than (H, W) ones
  return ((1 - f).ravel() * padded[slots] + f.ravel() * padded[slots + 1]).reshape(image_shape)


def _project(directions: jax.Array, image: jax.Array, n_detectors: int) -> jax.Array:
  """``(H, W) -> (n_views, n_detectors)``, one view at a time."""
  bits = _fraction_bits(image.shape, n_detectors)
  # All views' tables first (tiny): computed inside the loop, XLA would fuse the per-bin and
  # per-line divisions into the gather and redo them for every (line, bin).
  tables = jax.vmap(lambda d: _line_tables(d, image.shape, n_detectors, bits))(directions)
  lines = _padded_lines(image)
  return lax.map(lambda t: _project_view(lines, t, max(image.shape)), tables)


def _backproject(directions: jax.Array, sinogram: jax.Array,
                 image_shape: Tuple[int, int]) -> jax.Array:
  """``(n_views, n_detectors) -> (H, W)``, accumulating one view at a time."""
  def body(acc, view_direction):
    view, direction = view_direction
    return acc + _backproject_view(view, direction, image_shape), None

  init = jnp.zeros(image_shape, sinogram.dtype)
  return lax.scan(body, init, (sinogram, directions))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _projection(angles: jax.Array, image: jax.Array, image_shape: Tuple[int, int],
                n_detectors: int) -> jax.Array:
  """``A image``; its reverse-mode derivative is ``_backprojection`` (a gather), not JAX's
  transpose of the projection's gathers (scatter-adds)."""
  directions = _directions(angles, _fraction_bits(image_shape, n_detectors))
  return _project(directions, image, n_detectors)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _backprojection(angles: jax.Array, sinogram: jax.Array, image_shape: Tuple[int, int],
                    n_detectors: int) -> jax.Array:
  """``A^T sinogram``; its reverse-mode derivative is ``_projection``."""
  directions = _directions(angles, _fraction_bits(image_shape, n_detectors))
  return _backproject(directions, sinogram, image_shape)


def _projection_fwd(angles, image, image_shape, n_detectors):
  return _projection(angles, image, image_shape, n_detectors), angles


def _projection_bwd(image_shape, n_detectors, angles, cotangent):
  return (jnp.zeros_like(angles),
          _backprojection(angles, cotangent, image_shape, n_detectors))


def _backprojection_fwd(angles, sinogram, image_shape, n_detectors):
  return _backprojection(angles, sinogram, image_shape, n_detectors), angles


def _backprojection_bwd(image_shape, n_detectors, angles, cotangent):
  return (jnp.zeros_like(angles),
          _projection(angles, cotangent, image_shape, n_detectors))


_projection.defvjp(_projection_fwd, _projection_bwd)
_backprojection.defvjp(_backprojection_fwd, _backprojection_bwd)
# Jitted (inlined into a caller's jit): an eager call would trace and compile its view loop anew.
_project_jit = jax.jit(_projection, static_argnums=(2, 3))
_backproject_jit = jax.jit(_backprojection, static_argnums=(2, 3))


@struct.dataclass
class ParallelBeamProjector(LinearOperator):
  """Parallel-beam projector ``A: (H, W) image -> (n_views, n_detectors) sinogram``.

  See the module docstring for the geometry and the discretisation. ``angles`` is a leaf, so a
  batch of projectors with different angle sets (same ``n_views``) stacks and vmaps.
  Computation dtype: the promotion of the input's and the angles' dtypes.
  """

  angles: jax.Array  # (n_views,) radians, in [0, pi)
  image_shape: Tuple[int, int] = struct.field(pytree_node=False)
  n_detectors: int = struct.field(pytree_node=False)

  @property
  def in_shape(self) -> Tuple[int, ...]:
    return tuple(self.image_shape)

  @property
  def out_shape(self) -> Tuple[int, ...]:
    return (self.angles.shape[-1], self.n_detectors)

  def apply(self, image):
    """``(H, W) -> (n_views, n_detectors)``: line integrals, pixel units."""
    dtype = jnp.result_type(image, self.angles)
    return _project_jit(self.angles.astype(dtype), jnp.asarray(image, dtype),
                        tuple(self.image_shape), self.n_detectors)

  def adjoint(self, sinogram):
    """``(n_views, n_detectors) -> (H, W)``: exact back-projection (the transpose of ``apply``)."""
    dtype = jnp.result_type(sinogram, self.angles)
    return _backproject_jit(self.angles.astype(dtype), jnp.asarray(sinogram, dtype),
                            tuple(self.image_shape), self.n_detectors)

  def initial_estimate(self, sinogram):
    """Filtered back-projection (``filtered_back_projection``), the usual CT starting image."""
    return filtered_back_projection(self, sinogram)


def parallel_beam(image_shape: Tuple[int, int], n_views: int, dtype=jnp.float32,
                  n_detectors: int | None = None) -> ParallelBeamProjector:
  """Projector with ``n_views`` equispaced angles ``pi * arange(n_views) / n_views`` (radians).

  ``n_detectors`` defaults to ``ceil(sqrt(2) * max(H, W))``, skimage's ``circle=False`` width.
  """
  validation.check_integer("n_views", n_views, 1)
  image_shape = tuple(int(s) for s in image_shape)
  if n_detectors is None:
    n_detectors = default_n_detectors(image_shape)
  angles = jnp.pi * jnp.arange(n_views, dtype=dtype) / n_views
  return ParallelBeamProjector(angles=angles, image_shape=image_shape,
                               n_detectors=int(n_detectors))


def ramp_filter(n_detectors: int) -> np.ndarray:
  """Real frequency response ``(n_pad // 2 + 1,)`` (``rfft`` layout) of the band-limited ramp
  ``|nu|``, ``nu`` in cycles per bin, for views zero-padded to ``n_pad = max(64, next power of two
  >= 2 n_detectors)`` (so the circular convolution does not wrap).

  Built as the DFT of the sampled spatial ramp kernel (Kak & Slaney, eq. 3.61: ``h[0] = 1/4``,
  ``h[n odd] = -1 / (pi n)^2``, else 0), which avoids the DC bias of sampling ``|nu|`` directly.
  This is skimage's ``iradon`` ramp filter (which folds a factor 2 into it).
  """
  n_pad = max(64, 1 << int(math.ceil(math.log2(2 * n_detectors))))
  distance = np.minimum(np.arange(n_pad), n_pad - np.arange(n_pad))  # circular |n|
  kernel = np.where(distance % 2 == 1, -1.0 / (np.pi * np.maximum(distance, 1)) ** 2, 0.0)
  kernel[0] = 0.25
  return np.fft.rfft(kernel).real


def filtered_back_projection(op: ParallelBeamProjector, sinogram: jax.Array) -> jax.Array:
  """Ramp-filtered back-projection ``(n_views, n_detectors) -> (H, W)``.

  Each view is zero-padded, ramp-filtered by FFT along the detector axis and back-projected with
  ``op.adjoint``; the result is scaled by ``pi / n_views`` (the ``d theta`` of the angle integral),
  so for a full, equispaced set of views over ``[0, pi)`` it approximates the image itself. On the
  same sinogram it agrees with ``skimage.transform.iradon(..., circle=False)`` (same ramp filter and
  scaling) to ~1 %, the difference being the back-projector (box footprint vs interpolation).
  """
  n_views, n_detectors = op.out_shape
  dtype = jnp.result_type(sinogram, op.angles)
  response = ramp_filter(n_detectors)
  n_pad = 2 * (response.shape[0] - 1)
  spectrum = jnp.fft.rfft(jnp.asarray(sinogram, dtype), n=n_pad, axis=-1)
  filtered = jnp.fft.irfft(spectrum * jnp.asarray(response, dtype), n=n_pad, axis=-1)
  return op.adjoint(filtered[..., :n_detectors].astype(dtype)) * (jnp.pi / n_views)
