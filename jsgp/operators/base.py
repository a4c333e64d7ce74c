"""Linear operators as JAX pytrees.

An operator's arrays (masks, transfer functions, angles) are pytree leaves and its static
configuration (shapes, wavelet name) is auxiliary data, so a batch of *different* operators of
one kind stacks into a single pytree that ``jax.vmap`` maps over.

Inner products are real: for complex outputs ``<u, v> = Re sum(conj(u) v)``, which makes the
adjoint of a real-to-complex map (e.g. partial Fourier of a real image) well defined.
"""
from __future__ import annotations

from typing import ClassVar, Tuple

import jax
import jax.numpy as jnp

from jsgp import struct


class LinearOperator:
  """Base class. Subclasses are ``jsgp.struct.dataclass``es that define ``apply`` and ``adjoint``.

  Attributes every subclass provides (static):
    in_shape: shape of one input, without batch axes.
    out_shape: shape of one output.
  """

  in_shape: Tuple[int, ...]
  out_shape: Tuple[int, ...]

  def apply(self, x: jax.Array) -> jax.Array:
    raise NotImplementedError

  def adjoint(self, y: jax.Array) -> jax.Array:
    raise NotImplementedError

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.apply(x)

  def __matmul__(self, inner: "LinearOperator") -> "Composed":
    return Composed(outer=self, inner=inner)

  def normal(self, x: jax.Array) -> jax.Array:
    """A^T A x."""
    return self.adjoint(self.apply(x))

  def measured_entries(self) -> jax.Array:
    """0/1 values (broadcastable to ``out_shape``) marking the outputs that hold a measurement.

    Sampling operators (masks, k-space patterns) keep unmeasured entries as zeros so that a
    batch of them stacks; noise is added only where this is 1. Default: every entry (``1.0``).
    """
    return 1.0

  def initial_estimate(self, y: jax.Array) -> jax.Array:
    """A non-iterative estimate of the input from measurements ``y``: ``A^T y`` by default
    (the zero-filled image, the blurred image); operators with a better direct inverse (CT:
    filtered back-projection) override it."""
    return self.adjoint(y)


class SameShapeOperator(LinearOperator):
  """An operator from an image to an array of the same shape: the last two axes of its array
  field ``shape_field`` (so that a stacked batch of operators reports the shape of one)."""

  shape_field: ClassVar[str]

  @property
  def in_shape(self) -> Tuple[int, ...]:
    return tuple(getattr(self, self.shape_field).shape[-2:])

  @property
  def out_shape(self) -> Tuple[int, ...]:
    return self.in_shape


@struct.dataclass
class Composed(LinearOperator):
  """``outer o inner``: apply ``inner`` first. Adjoint is ``inner^T o outer^T``."""

  outer: LinearOperator
  inner: LinearOperator

  @property
  def in_shape(self):
    return self.inner.in_shape

  @property
  def out_shape(self):
    return self.outer.out_shape

  def apply(self, x):
    return self.outer.apply(self.inner.apply(x))

  def adjoint(self, y):
    return self.inner.adjoint(self.outer.adjoint(y))


@struct.dataclass
class Identity(LinearOperator):
  """``x -> x`` on arrays of ``shape`` (e.g. the synthesis of a problem posed on the image)."""

  shape: Tuple[int, ...] = struct.field(pytree_node=False)

  @property
  def in_shape(self):
    return tuple(self.shape)

  @property
  def out_shape(self):
    return tuple(self.shape)

  def apply(self, x):
    return x

  def adjoint(self, y):
    return y


def vdot_real(u: jax.Array, v: jax.Array) -> jax.Array:
  """Real inner product ``Re sum(conj(u) v)`` over all axes: scalar."""
  return jnp.real(jnp.vdot(u, v))


def sum_squares(u: jax.Array) -> jax.Array:
  """``||u||^2`` for real or complex ``u``: scalar."""
  if jnp.iscomplexobj(u):  # u conj(u), not re^2 + im^2: XLA:CPU would materialise re and im
    return jnp.sum(jnp.real(u * jnp.conj(u)))
  return jnp.sum(u * u)


def operator_norm_squared(op: LinearOperator, key: jax.Array, num_iter: int = 50,
                          dtype=jnp.float32) -> jax.Array:
  """Estimate ``||A||^2`` (the Lipschitz constant of ``grad 1/2||Ax - y||^2``) by power iteration.

  Pure and vmappable over a batch of operators. Returns a scalar; the Rayleigh quotient of the
  last iterate, which approaches ``||A||^2`` from below, so callers add a small safety margin.
  """
  v = jax.random.normal(key, op.in_shape, dtype)
  v = v / jnp.sqrt(sum_squares(v))

  def body(_, v):
    w = op.normal(v)
    return w / jnp.maximum(jnp.sqrt(sum_squares(w)), jnp.finfo(dtype).tiny)

  v = jax.lax.fori_loop(0, num_iter, body, v)
  return vdot_real(v, op.normal(v))
