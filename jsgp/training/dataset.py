"""The training set: one simulated measurement per image, the converged solutions ``x*`` (cached
on disk), and the buffer of the greedy stages' iterates, all resident on the device."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jsgp.problems import L1Problem, simulate_batch
from jsgp.solvers import FISTA, run_batch
from jsgp.training import checkpoint


class Dataset(NamedTuple):
  """The training set, resident on the device."""

  problems: L1Problem      # batched over N
  x_star: jax.Array        # (N, Hc, Wc)
  images: jax.Array        # (N, H, W): the original images (the target of target="image")
  iterates: jax.Array      # (K, N, Hc, Wc): x^(0..K-1); rows >= num_iterates are not made yet
  num_iterates: jax.Array  # () int32: stages whose iterates exist, 1..K (training samples these)


@functools.partial(jax.jit, static_argnums=1)
def converged_solutions(problems: L1Problem, iters: int) -> jax.Array:
  """``x*`` for a batch of problems: FISTA-b, ``iters`` iterations, one vmapped jit call."""
  return run_batch(FISTA(), problems, problems.zeros(), iters).x


def _fingerprint(config, images: np.ndarray) -> str:
  digest = hashlib.sha256()
  digest.update(json.dumps(dataclasses.asdict(config.task), sort_keys=True).encode())
  digest.update(f"{config.seed}/{config.reference_iters}".encode())
  digest.update(np.ascontiguousarray(images, np.float32).tobytes())
  return digest.hexdigest()[:16]


def make_dataset(config, images: np.ndarray, cache_dir: Optional[str],
                 num_stages: int = 1) -> Dataset:
  """Simulate one measurement per image (key = ``seed``) and load or compute ``x*``.

  ``config``: a ``GreedyConfig`` or ``UnrolledConfig`` (its task, seed and reference_iters).
  The iterate buffer holds ``num_stages`` stages (greedy training passes its K), ``x^(0) = 0``.
  """
  problems = simulate_batch(config.task, jnp.asarray(images), jax.random.PRNGKey(config.seed))
  path = None
  if cache_dir:
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"xstar_{_fingerprint(config, images)}.npy")
  if path and os.path.exists(path):
    x_star = jnp.asarray(np.load(path))
    logging.info("loaded x* for %d problems from %s", x_star.shape[0], path)
  else:
    start = time.time()
    x_star = jax.block_until_ready(converged_solutions(problems, config.reference_iters))
    logging.info("computed x* (%d FISTA iterations) for %d problems in %.1fs",
                 config.reference_iters, x_star.shape[0], time.time() - start)
    if path:
      checkpoint.write_array(path, x_star)
  iterates = jnp.zeros((num_stages,) + x_star.shape, x_star.dtype)
  return Dataset(problems=problems, x_star=x_star, images=jnp.asarray(images, x_star.dtype),
                 iterates=iterates, num_iterates=jnp.int32(1))
