"""Checkpoints: the training state in orbax, with the configuration and kind in its JSON
metadata; loading a trained policy.

A checkpoint directory holds orbax steps, each with ``state`` (a ``TrainState``) and ``meta``
(``{"kind": "greedy" | "unrolled", "config": config.to_dict(), ...}``). Resuming or loading
compares the recorded configuration with the requested one and refuses a different one, listing
every differing setting. Checkpoints written before the kind was recorded are greedy ones (the
unrolled kind always recorded itself).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jsgp import policies
from jsgp.training import configs, files
from jsgp.training.loop import TrainState, init_state


class CheckpointMismatch(ValueError):
  """A checkpoint written by a different configuration."""


class PartialCheckpoint(ValueError):
  """A checkpoint of a run that has not finished its training."""


LEGACY_KIND = "greedy"  # checkpoints that record no kind


def _manager(directory: str, max_to_keep: int = 2):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(directory: str, config, state, meta: Optional[Dict[str, Any]] = None) -> None:
  """Checkpoint ``state`` (a ``TrainState``) at its step, with ``config``, its kind and ``meta``
  in the JSON metadata. Orbax writes a temporary directory and renames it; if the write fails
  (a full disk: a clear ``OSError`` naming the directory and the space needed) the temporary
  directory is removed, so the previous checkpoints stay the latest."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  record = {"kind": configs.kind_of(config), "config": config.to_dict(), **(meta or {})}
  step = int(state.step)
  try:
    with _manager(directory) as mngr:
      mngr.save(step, force=True, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record)))
  except Exception as err:  # orbax wraps I/O errors in several types
    for leftover in glob.glob(os.path.join(os.path.abspath(directory), f"{step}.orbax-*tmp*")):
      shutil.rmtree(leftover, ignore_errors=True)
    nbytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(state))
    files.raise_if_disk_full(directory, err, nbytes)
    raise


def read_meta(directory: str) -> Optional[Dict[str, Any]]:
  """The metadata of the latest checkpoint in ``directory`` (with its ``step`` and ``kind``), or
  None if there is none. A clear ``ValueError`` for an unreadable one."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(directory):
    return None
  with _manager(directory) as mngr:
    step = mngr.latest_step()
    if step is None:
      return None
    try:
      meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as err:  # orbax raises many types for unreadable files
      raise ValueError(f"checkpoint at {directory} (step {step}) is unreadable or corrupt: "
                       f"{type(err).__name__}: {err}") from err
  if not isinstance(meta, dict) or "config" not in meta:
    raise ValueError(f"checkpoint at {directory} (step {step}) has no jsgp training metadata.")
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
  with _manager(directory) as mngr:
    try:
      restored = mngr.restore(meta["step"], args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_abstract(template, sharding)))).state
    except Exception as err:  # orbax raises many types for unreadable files
      raise ValueError(f"checkpoint at {directory} (step {meta['step']}) is unreadable, corrupt "
                       f"or does not match the network: {type(err).__name__}: {err}") from err
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
