"""Checkpoints: the training state in orbax, with the configuration and kind in its JSON
metadata; loading a trained policy.

A checkpoint directory holds orbax steps, each with ``state`` (a ``TrainState``) and ``meta``
(``{"kind": "greedy" | "unrolled", "config": config.to_dict(), ...}``). Resuming or loading
compares the recorded configuration with the requested one and refuses a different one, listing
every differing setting. Checkpoints written before the kind was recorded are greedy ones (the
unrolled kind always recorded itself).

Checksums: after orbax has finished a step, ``<step>/jsgp_sha256.json`` records the sha256 and
size of every file in it (written atomically; if it cannot be written the new step is removed,
so the previous one stays the latest). Every read verifies the latest step against it before
orbax opens a file, and a mismatch is refused (``CorruptCheckpoint``) naming the file and what
to do. A step without the manifest (written by a jsgp from before checksums) is read unverified
with a warning. A directory of orbax checkpoints that jsgp training did not write is refused
(``CheckpointMismatch``), a full disk while saving is ``files.DiskFull``; in each case one
message, without orbax's or asyncio's tracebacks (see ``jsgp.training.orbax_noise``).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jsgp import policies
from jsgp.training import configs, files
from jsgp.training.loop import TrainState, init_state
from jsgp.training.orbax_noise import quiet_orbax, summary


class CheckpointMismatch(ValueError):
  """A checkpoint written by a different configuration."""


class PartialCheckpoint(ValueError):
  """A checkpoint of a run that has not finished its training."""


class CorruptCheckpoint(ValueError):
  """A checkpoint whose files changed after they were written, or that orbax cannot read."""


LEGACY_KIND = "greedy"  # checkpoints that record no kind
MANIFEST = "jsgp_sha256.json"  # in each step directory: {"files": {relative path: {sha256, bytes}}}


# ------------------------------------------------------------------------------------------------
# Step directories and their checksum manifests.

def _step_dir(directory: str, step: int) -> str:
  return os.path.join(os.path.abspath(directory), str(step))


def _steps(directory: str) -> List[int]:
  """The finished steps in ``directory`` (orbax names them by number; unfinished ones carry a
  ``.orbax-checkpoint-tmp`` suffix)."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def _what_to_do(directory: str, step: int) -> str:
  earlier = [s for s in _steps(directory) if s < step]
  if earlier:
    return (f"delete {_step_dir(directory, step)} to resume from the previous checkpoint "
            f"(step {earlier[-1]}), or delete {os.path.abspath(directory)} to train afresh")
  return (f"delete {_step_dir(directory, step)} (the only checkpoint there) to train afresh, or "
          "use another checkpoint directory")


def _write_manifest(directory: str, step: int) -> None:
  step_dir = _step_dir(directory, step)
  entries = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, step_dir)
      if relative != MANIFEST and not relative.startswith(MANIFEST + ".tmp"):
        entries[relative] = {"sha256": files.sha256_of_file(path),
                             "bytes": os.path.getsize(path)}
  files.write_text(os.path.join(step_dir, MANIFEST),
                   json.dumps({"step": step, "files": entries}, indent=1, sort_keys=True))


_warned_unverified = set()


def verify(directory: str, step: int) -> None:
  """Check every file of ``step`` in ``directory`` against its manifest: ``CorruptCheckpoint``
  naming the first file that is missing or changed, and what to do; a step without a manifest
  (older jsgp) passes with a warning."""
  step_dir = _step_dir(directory, step)
  manifest_path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(manifest_path):
    if (step_dir, step) not in _warned_unverified:
      _warned_unverified.add((step_dir, step))
      logging.warning("checkpoint at %s (step %d) has no checksum manifest (written by an older "
                      "jsgp, or its save was interrupted just after orbax finished): it is read "
                      "unverified", directory, step)
    return
  try:
    with open(manifest_path) as f:
      entries = json.load(f)["files"]
    entries = {str(k): (str(v["sha256"]), int(v["bytes"])) for k, v in entries.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
    raise CorruptCheckpoint(
        f"checkpoint at {directory} (step {step}) is corrupt: its checksum manifest "
        f"{manifest_path} is unreadable ({type(err).__name__}: {err}); "
        f"{_what_to_do(directory, step)}") from None
  for relative, (sha256, nbytes) in sorted(entries.items()):
    path = os.path.join(step_dir, relative)
    if not os.path.isfile(path):
      problem = "is missing"
    elif os.path.getsize(path) != nbytes:
      problem = f"has {os.path.getsize(path)} bytes, {nbytes} when it was written"
    elif files.sha256_of_file(path) != sha256:
      problem = "no longer matches the checksum (sha256) recorded when it was written"
    else:
      continue
    raise CorruptCheckpoint(f"checkpoint at {directory} (step {step}) is corrupt: {path} "
                            f"{problem} (in {manifest_path}); {_what_to_do(directory, step)}")


def _latest_step(directory: str) -> Optional[int]:
  try:
    with quiet_orbax(), _manager(directory) as mngr:
      return mngr.latest_step()
  except Exception as err:  # pylint: disable=broad-except  (orbax raises many types)
    raise CorruptCheckpoint(f"cannot list the checkpoints in {directory}: {summary(err)}; "
                            "delete it or use another checkpoint directory") from None


def _restore_item(directory: str, step: int, args, what: str):
  """One orbax restore of ``step``, quietly; a ``CorruptCheckpoint`` saying ``what`` failed."""
  try:
    with quiet_orbax(), _manager(directory) as mngr:
      return mngr.restore(step, args=args)
  except Exception as err:  # pylint: disable=broad-except  (orbax raises many types)
    failure = err
  raise CorruptCheckpoint(f"checkpoint at {directory} (step {step}) is unreadable, corrupt or "
                          f"{what}: {summary(failure)}; {_what_to_do(directory, step)}")


def _manager(directory: str, max_to_keep: int = 2, *, writing: bool = False):
  """An orbax manager of ``directory``. ``writing`` (only under the directory's lock, i.e. in a
  training run): first remove unfinished steps left by an earlier failed save."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False,
                                         cleanup_tmp_directories=writing)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _size_estimate(directory: str, state) -> int:
  """About how many bytes a new step takes: the latest existing step's size, or (for the first)
  the arrays' size."""
  arrays = sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(state))
  steps = _steps(directory)
  if not steps:
    return arrays
  step_dir = _step_dir(directory, steps[-1])
  on_disk = sum(os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(step_dir) for name in names)
  return max(arrays, on_disk)


def _remove_unfinished(directory: str, step: int) -> None:
  """Remove orbax's temporary directory of ``step`` after a failed save. Tensorstore's writes
  still in flight when orbax gave up can create it again for a moment, so it is removed until
  it has stayed away for three checks 0.1 s apart (at most ~3 s; a later save removes any
  remnant, ``_manager(writing=True)``)."""
  pattern = os.path.join(directory, f"{step}.orbax-*tmp*")
  absent = 0
  for _ in range(30):
    found = glob.glob(pattern)
    for leftover in found:
      shutil.rmtree(leftover, ignore_errors=True)
    absent = 0 if found else absent + 1
    if absent == 3:
      return
    time.sleep(0.1)


def save(directory: str, config, state, meta: Optional[Dict[str, Any]] = None) -> None:
  """Checkpoint ``state`` (a ``TrainState``) at its step, with ``config``, its kind and ``meta``
  in the JSON metadata, and the checksums of its files. Orbax writes a temporary directory and
  renames it; if the write fails the temporary directory is removed, and if the checksums
  cannot be written the new step is removed, so the previous checkpoints stay the latest. A full
  disk raises ``files.DiskFull`` naming the directory and the space needed."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  record = {"kind": configs.kind_of(config), "config": config.to_dict(), **(meta or {})}
  step = int(state.step)
  root = os.path.abspath(directory)
  committed = False
  try:
    with quiet_orbax(), _manager(directory, writing=True) as mngr:
      mngr.save(step, force=True, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record)))
    committed = True
    if jax.process_index() == 0:  # [distributed] orbax has synchronised the hosts
      _write_manifest(root, step)
  except Exception as err:  # orbax wraps I/O errors in several types
    failure = err
  else:
    return
  _remove_unfinished(root, step)
  if committed and jax.process_index() == 0:  # a step that could never be verified
    shutil.rmtree(_step_dir(root, step), ignore_errors=True)
  files.raise_if_disk_full(directory, failure, _size_estimate(root, state))
  raise failure


def read_meta(directory: str) -> Optional[Dict[str, Any]]:
  """The metadata of the latest checkpoint in ``directory`` (with its ``step`` and ``kind``), or
  None if there is none, after verifying the step's files against their checksums.
  ``CorruptCheckpoint`` for a corrupt or unreadable one, ``CheckpointMismatch`` for orbax
  checkpoints that jsgp training did not write."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(directory):
    return None
  step = _latest_step(directory)
  if step is None:
    return None
  if not os.path.isdir(os.path.join(_step_dir(directory, step), "meta")):
    raise CheckpointMismatch(
        f"checkpoint at {directory} (step {step}) was not written by jsgp training (it has no "
        "'meta' item with a training configuration); use another checkpoint directory, or an "
        "empty one to train afresh")
  verify(directory, step)
  meta = _restore_item(directory, step, ocp.args.Composite(meta=ocp.args.JsonRestore()),
                       "not a jsgp training checkpoint").meta
  if not isinstance(meta, dict) or "config" not in meta:
    raise CheckpointMismatch(f"checkpoint at {directory} (step {step}) has no jsgp training "
                             "metadata; use another checkpoint directory")
  return dict(meta, step=step, kind=meta.get("kind", LEGACY_KIND))


def _diff(saved: Dict[str, Any], current: Dict[str, Any], prefix: str = "") -> list:
  out = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _diff(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: checkpoint {a!r} vs requested {b!r}")
  return out


def _with_defaults(saved: Dict[str, Any], config) -> Dict[str, Any]:
  """``saved`` plus the defaults of ``config``'s fields it lacks: a checkpoint written before a
  field was added matches a run that leaves that field at its default."""
  defaults = {f.name: f.default for f in dataclasses.fields(config)
              if f.default is not dataclasses.MISSING and f.name not in saved}
  nested = {f.name: _with_defaults(saved[f.name], getattr(config, f.name))
            for f in dataclasses.fields(config)
            if isinstance(saved.get(f.name), dict)
            and dataclasses.is_dataclass(getattr(config, f.name))}
  return {**json.loads(json.dumps(defaults)), **saved, **nested}


def check_compatible(directory: str, meta: Dict[str, Any], config) -> None:
  """Raise ``CheckpointMismatch`` if ``meta`` records another kind of run, or listing every
  setting in which it differs from ``config``."""
  kind = configs.kind_of(config)
  if meta["kind"] != kind:
    raise CheckpointMismatch(f"checkpoint at {directory} holds a {meta['kind']} training run, "
                             f"but a {kind} one was requested")
  differences = _diff(_with_defaults(meta["config"], config), config.to_dict())
  if differences:
    raise CheckpointMismatch(f"checkpoint at {directory} was written by a different "
                             "configuration:\n  " + "\n  ".join(differences))


def _abstract(tree, sharding=None):
  # [distributed] With a target sharding (default: where each leaf of ``tree`` lives) orbax
  # restores onto the current devices, whatever devices wrote the checkpoint.
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a),
                                     sharding=sharding or getattr(a, "sharding", None)), tree)


def restore(directory: str, config, template, sharding=None) -> Tuple[Any, Dict[str, Any]]:
  """``(state, meta)`` of the latest checkpoint in ``directory`` after checking that it was
  written with ``config``. ``template``: a state of the right structure (e.g. ``init_state``);
  ``sharding``: where the arrays go (default: where the template's leaves live)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  meta = read_meta(directory)
  if meta is None:
    raise FileNotFoundError(f"no checkpoint found in {directory}")
  check_compatible(directory, meta, config)
  restored = _restore_item(directory, meta["step"], ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(template, sharding))),
                           "does not match the network").state
  state = restored if isinstance(restored, TrainState) else TrainState(*restored)
  return state, meta


def config_of(directory: str):
  """The configuration (a ``GreedyConfig`` or ``UnrolledConfig``, by the recorded kind) of the
  latest checkpoint in ``directory``."""
  meta = read_meta(directory)
  if meta is None:
    raise FileNotFoundError(f"no checkpoint found in {directory}")
  try:
    return configs.from_dict(meta["kind"], meta["config"])
  except ValueError as err:
    raise CheckpointMismatch(f"checkpoint at {directory}: {err}") from err


def load_policy(directory: str, config=None, *,
                allow_partial: bool = False) -> policies.LearnedPolicy:
  """A ``LearnedPolicy`` from the latest checkpoint in ``directory`` (greedy or unrolled).

  ``config``: the run it must have been written by (``CheckpointMismatch`` otherwise); ``None``:
  whatever the checkpoint records. A checkpoint of an unfinished run (a latest step short of the
  configuration's total) is refused with how far it got, unless ``allow_partial``. The network is
  convolutional (the step head pools globally), so the policy applies to canvases of any size
  divisible by ``2**depth``, not only the training size.
  """
  config = config_of(directory) if config is None else config
  template = init_state(config, config.task.synthesis.in_shape)
  state, meta = restore(directory, config, template)
  if meta["step"] < config.total_steps and not allow_partial:
    raise PartialCheckpoint(
        f"checkpoint at {directory} is from an unfinished run: step {meta['step']} of "
        f"{config.total_steps}; finish the training (run again without reusing the "
        "checkpoint: it resumes there) or allow a partial checkpoint explicitly")
  return policies.LearnedPolicy({"params": state.params, "batch_stats": state.batch_stats},
                                config.net)
