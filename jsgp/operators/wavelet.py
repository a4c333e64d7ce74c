"""Wavelet synthesis ``W^T`` (jaxwt, 3-level sym4 by default) on a 2-D coefficient canvas.

jaxwt 0.1.1 has no periodization mode, so the decomposition of an ``n x n`` image is redundant
(about 1.09 N coefficients at 256 x 256) and ``waverec2`` is not the adjoint of ``wavedec2``. We
therefore define the unknown ``x`` as the coefficients, the forward map as the synthesis
``waverec2``, and take its exact adjoint from ``jax.linear_transpose``.

Canvas layout (the only place coefficients are packed): the coefficient list
``[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]`` is laid out like ``pywt.coeffs_to_array``:
``cA_J`` in the top-left corner; at each level, with ``(bh, bw)`` the size of the block placed so
far, ``cH`` goes right of it (rows ``0:sh``), ``cV`` below it (columns ``0:sw``) and ``cD``
diagonally. The canvas is zero-padded to a multiple of ``canvas_multiple`` on each side (8 by
default, so a 3-pooling U-Net sees it exactly). Positions that hold no coefficient ("gaps") are
ignored by the synthesis, so their gradient is 0 and an iterate started at 0 keeps them at 0.
"""
from __future__ import annotations

import functools
from typing import List, Tuple

import jax
import jax.numpy as jnp
import jaxwt
import numpy as np

from jsgp import struct
from jsgp.operators.base import LinearOperator

Slot = Tuple[int, int, int, int]  # (row0, col0, rows, cols) of one sub-band on the canvas


@functools.lru_cache(maxsize=None)
def _layout(image_shape: Tuple[int, int], wavelet: str, level: int,
            multiple: int) -> Tuple[Tuple[Slot, ...], Tuple[int, int]]:
  """Sub-band slots in jaxwt order and the canvas shape. Static (numpy/python only)."""
  coeffs = jax.eval_shape(lambda x: jaxwt.wavedec2(x, wavelet, level=level),
                          jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32))
  ah, aw = coeffs[0].shape[-2:]
  slots = [(0, 0, ah, aw)]
  bh, bw = ah, aw
  for details in coeffs[1:]:
    sh, sw = details[0].shape[-2:]
    slots += [(0, bw, sh, sw), (bh, 0, sh, sw), (bh, bw, sh, sw)]
    bh, bw = max(bh + sh, sh), max(bw + sw, sw)
  canvas = tuple(-(-s // multiple) * multiple for s in (bh, bw))
  return tuple(slots), canvas


@struct.dataclass
class WaveletSynthesis(LinearOperator):
  """``x (canvas) -> image``: inverse wavelet transform. No array leaves; all static."""

  image_shape: Tuple[int, int] = struct.field(pytree_node=False)
  wavelet: str = struct.field(pytree_node=False, default="sym4")
  level: int = struct.field(pytree_node=False, default=3)
  canvas_multiple: int = struct.field(pytree_node=False, default=8)

  @property
  def _slots(self):
    return _layout(tuple(self.image_shape), self.wavelet, self.level, self.canvas_multiple)[0]

  @property
  def in_shape(self) -> Tuple[int, int]:
    return _layout(tuple(self.image_shape), self.wavelet, self.level, self.canvas_multiple)[1]

  @property
  def out_shape(self) -> Tuple[int, int]:
    return tuple(self.image_shape)

  # --- packing: canvas (..., Hc, Wc) <-> jaxwt coefficient list -------------------------------
  def unpack(self, canvas: jax.Array) -> List:
    """Canvas ``(Hc, Wc)`` -> jaxwt coefficient list with a leading axis of 1."""
    bands = [canvas[None, r:r + h, c:c + w] for r, c, h, w in self._slots]
    return [bands[0]] + [tuple(bands[i:i + 3]) for i in range(1, len(bands), 3)]

  def pack(self, coeffs: List) -> jax.Array:
    """jaxwt coefficient list (leading axis of 1) -> canvas ``(Hc, Wc)``."""
    bands = [coeffs[0]] + [b for details in coeffs[1:] for b in details]
    canvas = jnp.zeros(self.in_shape, bands[0].dtype)
    for (r, c, h, w), band in zip(self._slots, bands):
      canvas = canvas.at[r:r + h, c:c + w].set(band[0])
    return canvas

  @property
  def num_subbands(self) -> int:
    """``3 level + 1``: the approximation and three detail sub-bands per level."""
    return len(self._slots)

  def subband_index(self) -> np.ndarray:
    """``(Hc, Wc)`` int32: the sub-band of each canvas position in jaxwt order (0: the coarsest
    approximation; then (H, V, D) from the coarsest level to the finest), -1 in gaps."""
    index = np.full(self.in_shape, -1, np.int32)
    for band, (r, c, h, w) in enumerate(self._slots):
      index[r:r + h, c:c + w] = band
    return index

  def coefficient_mask(self) -> np.ndarray:
    """``(Hc, Wc)`` bool: True where the canvas holds a coefficient, False in gaps."""
    mask = np.zeros(self.in_shape, bool)
    for r, c, h, w in self._slots:
      mask[r:r + h, c:c + w] = True
    return mask

  # --- the operator -------------------------------------------------------------------------
  def apply(self, x):
    image = jaxwt.waverec2(self.unpack(x), self.wavelet)[0]
    return image[: self.image_shape[0], : self.image_shape[1]]

  def adjoint(self, y):
    (x,) = jax.linear_transpose(self.apply, jax.ShapeDtypeStruct(self.in_shape, y.dtype))(y)
    return x

  def analysis(self, image: jax.Array) -> jax.Array:
    """Canvas of ``wavedec2(image)``: a right inverse, ``apply(analysis(u)) == u``.

    Not the adjoint (the frame is not tight); used for warm starts and direct-mapping baselines.
    """
    return self.pack(jaxwt.wavedec2(image[None], self.wavelet, level=self.level))
