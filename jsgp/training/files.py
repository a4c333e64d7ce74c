"""Files a training run writes: atomic ``.npy`` / ``.npz`` writes with a clear error on a full
disk, and exclusive locks so that two runs never share a checkpoint directory or race on a
cache file.

Locks are ``fcntl.flock`` locks on a ``.lock`` file holding the owner's pid: the kernel releases
them when the owner exits or is killed, so a crashed run never leaves a stale lock behind. In a
multi-host run only process 0 takes them (every host runs the same training on the same shared
directory).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Dict, Iterator, Optional, Tuple

import jax
import numpy as np
from absl import logging


class DirectoryInUse(RuntimeError):
  """Another live process holds the lock of a checkpoint directory."""


def _holder(lock_path: str) -> str:
  try:
    with open(lock_path) as f:
      return f.read().strip() or "unknown"
  except OSError:
    return "unknown"


@contextlib.contextmanager
def exclusive(lock_path: str, what: str, *, wait: bool = False) -> Iterator[None]:
  """Hold an exclusive lock on the file ``lock_path`` for the ``with`` block; ``what`` names the
  thing it guards in messages.

  ``wait=False``: raise ``DirectoryInUse`` naming ``what`` and the holder's pid if another
  process holds it. ``wait=True``: block until it is released (logging who holds it).
  """
  if jax.process_index() != 0:
    yield
    return
  os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
  handle = open(lock_path, "a+")
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(lock_path)
      if not wait:
        raise DirectoryInUse(f"{what} is in use by another jsgp run (pid {holder}); wait for it "
                             "to finish, or use another directory") from None
      logging.info("waiting for pid %s, which holds %s", holder, lock_path)
      fcntl.flock(handle, fcntl.LOCK_EX)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    yield
  finally:
    handle.close()  # releases the lock


def exclusive_directory(directory: Optional[str]):
  """``exclusive`` on ``<directory>/.lock`` (created), refusing a second user at once; a no-op
  context for ``None``."""
  if not directory:
    return contextlib.nullcontext()
  os.makedirs(directory, exist_ok=True)
  return exclusive(os.path.join(directory, ".lock"), f"checkpoint directory {directory}")


def _disk_full_error(path: str, nbytes: int, err: OSError) -> OSError:
  return OSError(err.errno, f"not enough disk space to write {path} ({nbytes / 2**20:.1f} MiB "
                 f"needed; nothing was left behind): {os.strerror(err.errno)}")


def write_arrays(path: str, arrays: Dict[str, np.ndarray]) -> None:
  """Write ``arrays`` to ``path`` atomically (a temporary file renamed into place): ``.npy`` for
  a single array named ``"array"``, else ``.npz``. A failed write (a full disk) leaves no file
  and raises ``OSError`` naming ``path`` and the space needed. Process 0 only."""
  if jax.process_index() != 0:  # [distributed] every host holds the same replicated values
    return
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  nbytes = sum(a.nbytes for a in arrays.values())
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      if list(arrays) == ["array"]:
        np.save(f, arrays["array"])
      else:
        np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as err:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
      raise _disk_full_error(path, nbytes, err) from err
    raise


def write_array(path: str, array) -> None:
  """``write_arrays`` for one ``.npy`` array."""
  write_arrays(path, {"array": array})


def read_array(path: str, shape: Tuple[int, ...], what: str) -> np.ndarray:
  """The ``.npy`` array at ``path``; a ``ValueError`` naming ``what`` and ``path`` if it is
  missing, unreadable or not of ``shape``."""
  try:
    array = np.load(path)
  except (OSError, ValueError, EOFError) as err:
    raise ValueError(f"{what} ({path}) is missing or unreadable: {type(err).__name__}: "
                     f"{err}") from err
  if array.shape != tuple(shape):
    raise ValueError(f"{what} ({path}) has shape {array.shape}, expected {tuple(shape)}")
  return array


def raise_if_disk_full(directory: str, err: BaseException, nbytes: int) -> None:
  """Re-raise ``err`` (from a checkpoint write into ``directory``) as a clear ``OSError`` if any
  exception in its chain is a full disk."""
  seen = err
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
      raise _disk_full_error(directory, nbytes, seen) from err
    seen = seen.__cause__ or seen.__context__
