"""Image-quality metrics."""
import jax
import jax.numpy as jnp


def nmse_db(estimate: jax.Array, reference: jax.Array) -> jax.Array:
  """Paper's NMSE: ``10 log10(||est - ref||^2 / ||ref||^2)`` over the last two (image) axes.

  Both are images (``W^T x``). ``(..., H, W) -> (...)``.
  """
  err = jnp.sum((estimate - reference) ** 2, axis=(-2, -1))
  ref = jnp.sum(reference ** 2, axis=(-2, -1))
  return 10.0 * jnp.log10(err / ref)
