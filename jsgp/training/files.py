"""Files a training run writes: atomic ``.npy`` / ``.npz`` writes with a clear error on a full
disk, checksums that catch a file changed after it was written, and exclusive locks so that two
runs never share a checkpoint directory or race on a cache file.

A single array written by ``write_array`` gets a ``<path>.sha256`` beside it (``sha256sum``
format), and ``read_array`` refuses a file that no longer matches it (``CorruptFile``); a file
without one (written before checksums existed) is read as it is. A full disk raises ``DiskFull``
(an ``OSError``) naming the path, about how much was needed and how much is free, whether the
error came from Python or from tensorstore (orbax's writer, which reports ``RESOURCE_EXHAUSTED``).

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
import re
import shutil
from typing import Dict, Iterator, Optional, Tuple

import jax
import numpy as np
from absl import logging

from jsgp.checksums import sha256_of_file  # re-exported: files.sha256_of_file


class DirectoryInUse(RuntimeError):
  """Another live process holds the lock of a checkpoint directory."""


class DiskFull(OSError):
  """Not enough disk space (or quota) to write a file or checkpoint; nothing was left behind."""


class CorruptFile(ValueError):
  """A file whose contents no longer match the checksum recorded when it was written."""


CHECKSUM_SUFFIX = ".sha256"
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# tensorstore (orbax's writer) reports a full disk as a ValueError with this text in it.
_DISK_FULL_TEXT = re.compile(
    "|".join([re.escape(os.strerror(e)) for e in _DISK_FULL_ERRNOS]
             + [rf"os_error_code='?{e}\b" for e in _DISK_FULL_ERRNOS]))


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


def format_bytes(nbytes: float) -> str:
  """``nbytes`` in the unit that fits: ``700 bytes``, ``51.0 KiB``, ``3.5 MiB``, ``5.0 GiB``."""
  if nbytes < 1024:
    return f"{int(nbytes)} bytes"
  for unit in ("KiB", "MiB", "GiB"):
    nbytes /= 1024
    if nbytes < 1024 or unit == "GiB":
      return f"{nbytes:.1f} {unit}"
  raise AssertionError("unreachable")


def free_bytes(path: str) -> Optional[int]:
  """Bytes free to this user on the file system of ``path`` (or of its nearest existing
  parent); None if that cannot be told."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None


def disk_full_error(path: str, nbytes: int, err: BaseException) -> DiskFull:
  """A ``DiskFull`` naming ``path`` (what could not be written), about ``nbytes`` needed and the
  space free, and what to do; ``err`` is the error the write raised."""
  free = free_bytes(path)
  space = f"about {format_bytes(nbytes)} needed" + (
      f", {format_bytes(free)} free" if free is not None else "")
  code = getattr(err, "errno", None) if getattr(err, "errno", None) in _DISK_FULL_ERRNOS \
      else errno.ENOSPC
  return DiskFull(code, f"not enough disk space to write {path} ({space}; nothing was left "
                  f"behind): {os.strerror(code)}; free some space or choose another directory")


def is_disk_full(err: BaseException) -> bool:
  """Whether ``err`` or any exception in its chain is a full disk or an exceeded quota: an
  ``OSError`` with ``ENOSPC`` / ``EDQUOT``, or tensorstore's ``RESOURCE_EXHAUSTED`` saying so."""
  seen, visited = err, set()
  while seen is not None and id(seen) not in visited:
    visited.add(id(seen))
    if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
      return True
    if _DISK_FULL_TEXT.search(str(seen)):
      return True
    seen = seen.__cause__ or seen.__context__
  return False




def _write_and_sync(path: str, write) -> None:
  with open(path, "wb") as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
  """Write ``text`` to ``path`` atomically (a temporary file, synced, renamed into place); a
  full disk leaves no file and raises ``DiskFull`` naming ``path``."""
  data = text.encode()
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    _write_and_sync(tmp, lambda f: f.write(data))
    os.replace(tmp, path)
  except OSError as err:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if is_disk_full(err):
      raise disk_full_error(path, len(data), err) from err
    raise


def write_arrays(path: str, arrays: Dict[str, np.ndarray]) -> None:
  """Write ``arrays`` to ``path`` atomically (a temporary file renamed into place): ``.npy`` for
  a single array named ``"array"`` (with its checksum in ``<path>.sha256``), else ``.npz``. A
  failed write (a full disk) leaves no file and raises ``DiskFull`` naming ``path`` and the
  space needed. Process 0 only."""
  if jax.process_index() != 0:  # [distributed] every host holds the same replicated values
    return
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  nbytes = sum(a.nbytes for a in arrays.values())
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  single = list(arrays) == ["array"]
  tmp, tmp_sum = f"{path}.tmp{os.getpid()}", f"{path}{CHECKSUM_SUFFIX}.tmp{os.getpid()}"
  try:
    if single:
      _write_and_sync(tmp, lambda f: np.save(f, arrays["array"]))
      line = f"{sha256_of_file(tmp)}  {os.path.basename(path)}\n".encode()
      _write_and_sync(tmp_sum, lambda f: f.write(line))
      # The old checksum goes first: a crash in between leaves an unchecked file, never a
      # good file with a stale checksum.
      with contextlib.suppress(FileNotFoundError):
        os.remove(path + CHECKSUM_SUFFIX)
      os.replace(tmp, path)
      os.replace(tmp_sum, path + CHECKSUM_SUFFIX)
    else:
      _write_and_sync(tmp, lambda f: np.savez(f, **arrays))
      os.replace(tmp, path)
  except OSError as err:
    for leftover in (tmp, tmp_sum):
      with contextlib.suppress(OSError):
        os.remove(leftover)
    if is_disk_full(err):
      raise disk_full_error(path, nbytes, err) from err
    raise


def write_array(path: str, array) -> None:
  """``write_arrays`` for one ``.npy`` array (and its ``.sha256``)."""
  write_arrays(path, {"array": array})


def read_array(path: str, shape: Tuple[int, ...], what: str) -> np.ndarray:
  """The ``.npy`` array at ``path``; a ``ValueError`` naming ``what`` and ``path`` if it is
  missing, unreadable or not of ``shape``, and ``CorruptFile`` if it does not match the
  checksum written beside it (a file without one is read unchecked)."""
  try:
    with open(path + CHECKSUM_SUFFIX) as f:
      recorded = f.read().split()[0]
  except FileNotFoundError:
    recorded = None
  except (OSError, IndexError, UnicodeDecodeError) as err:
    raise CorruptFile(f"{what}: its checksum file {path}{CHECKSUM_SUFFIX} is unreadable "
                      f"({type(err).__name__}: {err})") from None
  if recorded is not None and os.path.exists(path) and sha256_of_file(path) != recorded:
    raise CorruptFile(f"{what} ({path}) is corrupt: its contents no longer match the sha256 "
                      f"recorded in {path}{CHECKSUM_SUFFIX} when it was written")
  try:
    array = np.load(path)
  except (OSError, ValueError, EOFError) as err:
    raise ValueError(f"{what} ({path}) is missing or unreadable: {type(err).__name__}: "
                     f"{err}") from err
  if array.shape != tuple(shape):
    raise ValueError(f"{what} ({path}) has shape {array.shape}, expected {tuple(shape)}")
  return array


def raise_if_disk_full(directory: str, err: BaseException, nbytes: int) -> None:
  """Raise ``DiskFull`` (from a checkpoint write into ``directory``) if any exception in the
  chain of ``err`` is a full disk, whether Python's ``OSError`` or tensorstore's
  ``RESOURCE_EXHAUSTED``. The original error stays in ``__context__`` but is not printed."""
  if is_disk_full(err):
    raise disk_full_error(directory, nbytes, err) from None
