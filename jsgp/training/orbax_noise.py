"""Orbax's noise around jsgp's checkpoint calls: one error of jsgp's own instead of orbax's
worker-thread tracebacks, asyncio's orphaned-future reports and tensorstore's refused callbacks
(``quiet_orbax``; see the comment below)."""
from __future__ import annotations

import contextlib
import logging as pylogging
import re
import sys
import threading
import time
from typing import Any, List

from absl import logging

# Orbax's noise. When an orbax call fails, orbax's worker threads log the error with its
# traceback (some of them after the call has returned), the asyncio futures it abandoned report
# "Future exception was never retrieved", and tensorstore, finishing the reads and writes still in
# flight, posts their results to the event loop orbax has already closed: Python prints each
# refused callback ("Event loop is closed") as an unraisable exception, hundreds of them, for
# seconds after the call returned. jsgp raises one error of its own instead. Filters installed the
# first time jsgp calls orbax (``install_noise_filters``) therefore
# - hold orbax's error logs during a jsgp call into orbax (replayed as one-line warnings if the
#   call succeeds, dropped if it fails: the caller's error says what went wrong), and drop them
#   for ``_AFTERMATH_S`` seconds after a failed call (workers still finishing);
# - drop asyncio's unretrieved-exception reports of orbax or tensorstore work;
# - drop unraisable "Event loop is closed" errors of callbacks posted to a closed loop.
# The last two are reports nobody can act on; the filters match nothing else.

_AFTERMATH_S = 10.0
_noise = {"calls": 0, "failed_at": float("-inf"), "held": []}  # jsgp calls into orbax


def _frames(traceback) -> List[Any]:
  out = []
  while traceback is not None:
    out.append(traceback.tb_frame.f_code)
    traceback = traceback.tb_next
  return out


def _refused_by_closed_loop(unraisable) -> bool:
  """An unraisable ``RuntimeError('Event loop is closed')`` from ``call_soon_threadsafe``: a
  result posted from another thread to a loop that no longer runs."""
  exc = unraisable.exc_value
  return (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
          and any(code.co_name == "call_soon_threadsafe"
                  for code in _frames(unraisable.exc_traceback)))


# How tensorstore words its errors (a ValueError whose text starts with an absl status code).
_TENSORSTORE_ERROR = re.compile(
    r"(CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS|"
    r"PERMISSION_DENIED|RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|"
    r"UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS|UNAUTHENTICATED): ")


class _OrphanedOrbaxFutures(pylogging.Filter):
  """On the ``asyncio`` logger: drops "Future exception was never retrieved" for orbax or
  tensorstore work (an exception raised through orbax's code, or a tensorstore error, set on the
  future from C++ without a traceback), and any during a jsgp call into orbax."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if "exception was never retrieved" not in str(record.msg):
      return True
    exc = record.exc_info[1] if record.exc_info else None
    through_orbax = exc is not None and any(
        "orbax" in code.co_filename or "tensorstore" in code.co_filename
        for code in _frames(exc.__traceback__))
    from_tensorstore = isinstance(exc, ValueError) and bool(_TENSORSTORE_ERROR.match(str(exc)))
    return not (through_orbax or from_tensorstore or _noise["calls"] > 0)


class _OrbaxErrorLogs(pylogging.Filter):
  """On the ``absl`` logger: orbax's error records are held during a jsgp call into orbax and
  dropped for ``_AFTERMATH_S`` seconds after a failed one; passed through otherwise."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if record.levelno < pylogging.ERROR or "orbax" not in (record.pathname or ""):
      return True
    if _noise["calls"] > 0:
      _noise["held"].append(record)
      return False
    return time.monotonic() - _noise["failed_at"] > _AFTERMATH_S


def install_noise_filters() -> None:
  """Install the filters (idempotent; again if someone replaced ``sys.unraisablehook``)."""
  if not getattr(sys.unraisablehook, "jsgp_quiet", False):
    previous = sys.unraisablehook

    def quiet(unraisable):
      if not _refused_by_closed_loop(unraisable):
        previous(unraisable)

    quiet.jsgp_quiet = True
    sys.unraisablehook = quiet
  for name, kind in (("asyncio", _OrphanedOrbaxFutures), ("absl", _OrbaxErrorLogs)):
    logger = pylogging.getLogger(name)
    if not any(isinstance(f, kind) for f in logger.filters):
      logger.addFilter(kind())


def _join_orbax_threads(before, timeout: float = 10.0) -> None:
  """Wait (at most ``timeout`` s in all) for the worker threads orbax started since ``before``
  and still runs after a failure, so that they are done before the caller reports."""
  try:
    from orbax.checkpoint._src.futures import future as orbax_future  # pylint: disable=import-outside-toplevel
    worker = orbax_future._SignalingThread  # pylint: disable=protected-access
  except (ImportError, AttributeError):  # another orbax version: nothing to wait for
    return
  deadline = time.monotonic() + timeout
  for thread in set(threading.enumerate()) - before:
    if isinstance(thread, worker) and thread is not threading.current_thread():
      threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))  # never raises


@contextlib.contextmanager
def quiet_orbax():
  """Around every jsgp call into orbax (see "Orbax's noise" above)."""
  install_noise_filters()
  if _noise["calls"] == 0:
    _noise["held"] = []
  _noise["calls"] += 1
  before = set(threading.enumerate())
  try:
    yield
  except BaseException:
    _join_orbax_threads(before)
    _noise["failed_at"] = time.monotonic()
    raise
  finally:
    _noise["calls"] -= 1
  if _noise["calls"] == 0:  # the call succeeded: orbax's non-fatal errors, one line each
    held, _noise["held"] = _noise["held"], []
    for record in held:
      logging.warning("orbax reported: %s", record.getMessage().splitlines()[0][:300])


def summary(err: BaseException) -> str:
  """The first line of an orbax/tensorstore error, without tensorstore's spec dump."""
  text = str(err).split(" [tensorstore_spec")[0].strip()
  text = text.splitlines()[0] if text else ""
  return f"{type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"
