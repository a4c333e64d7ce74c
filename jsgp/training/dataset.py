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
from jsgp.training import files


class Dataset(NamedTuple):
  """The training set, resident on the device."""

  problems: L1Problem      # batched over N
  x_star: jax.Array        # (N, Hc, Wc)
  images: jax.Array        # (N, H, W): the original images (the target of target="image")
  iterates: jax.Array      # (K, N, Hc, Wc): x^(0..K-1); rows >= num_iterates are not made yet
  num_iterates: jax.Array  # () int32: stages whose iterates exist, 1..K (training samples these)


@functools.partial(jax.jit, static_argnums=1)
def converged_solutions(problems: L1Problem, iters: int) -> jax.Array:
  """``x*`` for a batch of problems: FISTA with the constant step 1/L (drift-free: residuals
  formed fresh), ``iters`` iterations, one vmapped jit call."""
  return run_batch(FISTA(max_backtracks=0), problems, problems.zeros(), iters).x


# Bump when the solver that makes x* changes: caches written by an older one are not reused.
# 2: FISTA with residuals formed fresh each iteration; version 1 carried them incrementally, which
# drifts in float32 on long runs (measured in BUILD_NOTES.md).
SOLUTION_VERSION = 2


def _fingerprint(config, images: np.ndarray) -> str:
  digest = hashlib.sha256()
  digest.update(json.dumps(dataclasses.asdict(config.task), sort_keys=True).encode())
  digest.update(f"{config.seed}/{config.reference_iters}/v{SOLUTION_VERSION}".encode())
  digest.update(np.ascontiguousarray(images, np.float32).tobytes())
  return digest.hexdigest()[:16]


def _checksum(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _read_cache(path: str, key: str, shape) -> Optional[np.ndarray]:
  """The cached ``x*`` at ``path`` if it is there, whole and of this configuration; None (with a
  warning naming the file and what is wrong, when it exists) otherwise."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as cached:
      x_star, stored_key, stored_sum = cached["x_star"], str(cached["key"]), str(cached["sha256"])
  except Exception as err:  # pylint: disable=broad-except  (zip, pickle and OS errors)
    problem = f"unreadable ({type(err).__name__}: {err})"
  else:
    if stored_key != key:
      problem = f"written for another configuration (key {stored_key}, expected {key})"
    elif x_star.shape != tuple(shape):
      problem = f"of shape {x_star.shape}, expected {tuple(shape)}"
    elif _checksum(x_star) != stored_sum:
      problem = "corrupt (checksum mismatch)"
    else:
      return x_star
  logging.warning("x* cache %s is %s; recomputing it", path, problem)
  return None


def solutions(config, problems: L1Problem, images: np.ndarray,
              cache_dir: Optional[str]) -> jax.Array:
  """``x*`` of ``problems`` ``(N, Hc, Wc)``, from the cache in ``cache_dir`` when it holds them
  (keyed by the task, seed, ``reference_iters``, the images and ``SOLUTION_VERSION``; checked
  for shape and checksum, recomputed with a warning when bad), else computed and cached
  atomically. Two runs sharing the cache take turns (a lock on the file)."""
  shape = (len(images),) + tuple(problems.op.in_shape)
  if not cache_dir:
    return _compute(problems, config.reference_iters)
  key = _fingerprint(config, images)
  path = os.path.join(cache_dir, f"xstar_{key}.npz")
  with files.exclusive(os.path.join(cache_dir, f".xstar_{key}.lock"), f"x* cache {path}",
                       wait=True):
    x_star = _read_cache(path, key, shape)
    if x_star is not None:
      logging.info("loaded x* for %d problems from %s", shape[0], path)
      return jnp.asarray(x_star)
    x_star = _compute(problems, config.reference_iters)
    host = np.asarray(x_star)
    files.write_arrays(path, {"x_star": host, "key": np.asarray(key),
                              "sha256": np.asarray(_checksum(host))})
  return x_star


def _compute(problems: L1Problem, iters: int) -> jax.Array:
  start = time.time()
  x_star = jax.block_until_ready(converged_solutions(problems, iters))
  logging.info("computed x* (%d iterations) for %d problems in %.1fs", iters, x_star.shape[0],
               time.time() - start)
  return x_star


def check_images(images) -> None:
  """``images`` ``(N, H, W)`` with finite values, or a ``ValueError`` naming the first image
  that is not (NaN/Inf would make the measurements and x* non-finite)."""
  shape = np.shape(images)
  if len(shape) != 3 or 0 in shape:
    raise ValueError(f"images must be a non-empty (N, H, W) array, got shape {shape}")
  host = np.asarray(images)
  finite = np.isfinite(host).reshape(shape[0], -1)
  bad = np.flatnonzero(~finite.all(axis=1))
  if bad.size:
    i = int(bad[0])
    raise ValueError(f"images[{i}] holds {int((~finite[i]).sum())} NaN/Inf value(s) "
                     f"({bad.size} of the {shape[0]} images hold some); the training images "
                     "must be finite")


def make_dataset(config, images: np.ndarray, cache_dir: Optional[str],
                 num_stages: int = 1) -> Dataset:
  """Simulate one measurement per image (key = ``seed``) and load or compute ``x*``.

  ``config``: a ``GreedyConfig`` or ``UnrolledConfig`` (its task, seed and reference_iters).
  The iterate buffer holds ``num_stages`` stages (greedy training passes its K), ``x^(0) = 0``.
  ``images`` must be ``(N, H, W)`` and finite (``ValueError`` naming the first bad image).
  """
  check_images(images)
  problems = simulate_batch(config.task, jnp.asarray(images), jax.random.PRNGKey(config.seed))
  x_star = solutions(config, problems, images, cache_dir)
  iterates = jnp.zeros((num_stages,) + x_star.shape, x_star.dtype)
  return Dataset(problems=problems, x_star=x_star, images=jnp.asarray(images, x_star.dtype),
                 iterates=iterates, num_iterates=jnp.int32(1))
