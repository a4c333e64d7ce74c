"""Proximal operator of ``lam ||x||_1``: the soft threshold."""
import jax
import jax.numpy as jnp


def soft_threshold(v: jax.Array, threshold) -> jax.Array:
  """Elementwise ``sign(v) max(|v| - threshold, 0)``; complex ``v`` shrinks its magnitude.

  ``threshold`` is a scalar (``lam * t``) or an array broadcastable to ``v`` (``lam * t * d``,
  the prox in the diagonal metric ``D = diag(d)``).
  """
  if jnp.iscomplexobj(v):
    magnitude = jnp.abs(v)
    scale = jnp.maximum(magnitude - threshold, 0) / jnp.where(magnitude > 0, magnitude, 1)
    return scale * v
  return jnp.sign(v) * jnp.maximum(jnp.abs(v) - threshold, 0)
