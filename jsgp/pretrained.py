"""Pretrained stepsize policies shipped with jsgp, one per task.

  >>> from jsgp import pretrained, DRS  # doctest: +SKIP
  >>> method = DRS(pretrained.policy("inpainting"))
  >>> result = jsgp.solvers.solve(method, problem, problem.zeros(), 500)

A policy is two files in ``jsgp/pretrained_data``: ``<task>.msgpack`` (the network's variables,
``flax.serialization``) and ``<task>.json`` (the manifest: architecture, the training
configuration and data it was trained on, the image sizes it accepts, its held-out
time-to-accuracy and the sha256 of the msgpack file, which the loader verifies). The same
``save`` / ``load`` pair reads and writes policies anywhere on disk (``experiments.train_policy``
writes them).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from jsgp.checksums import sha256_of_file

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_data")
FORMAT = 1


class PolicyFileError(ValueError):
  """A policy file that is missing, corrupted or not a jsgp policy."""


def _paths(prefix: str) -> Tuple[str, str]:
  return prefix + ".msgpack", prefix + ".json"


def available() -> Tuple[str, ...]:
  """The tasks with a shipped policy, sorted.

  Returns:
    A tuple of task names (e.g. ``("ct", "deblur", "fourier", "inpainting")``): those with a
    ``<task>.json`` manifest in ``DATA_DIR``; ``()`` where that folder is absent.
  """
  if not os.path.isdir(DATA_DIR):
    return ()
  return tuple(sorted(name[:-5] for name in os.listdir(DATA_DIR) if name.endswith(".json")))


def save(prefix: str, variables: Dict[str, Any], net, manifest: Dict[str, Any]) -> str:
  """Write ``<prefix>.msgpack`` and ``<prefix>.json`` (``manifest`` plus the architecture and the
  checksum); returns the manifest path.

  Args:
    prefix: the path of both files without their extension; its folder is created if needed
      and existing files are replaced (each is written to ``<file>.tmp``, then renamed).
    variables: the network's variables, a dict of array pytrees (``"params"`` and, for a network
      with BatchNorm, ``"batch_stats"``: the only two that ``load`` reads back), stored as
      NumPy arrays in msgpack (``flax.serialization``).
    net: the network configuration (``jsgp.nets.UNetConfig`` or a ``jsgp.policy_nets``
      architecture, with its ``kind``), recorded as ``manifest["net"]`` (``net_to_dict``).
    manifest: JSON-serialisable fields to record; ``load`` requires ``"task"``. The shipped
      manifests also hold ``policy_steps`` (the budget ``solver`` uses), ``min_size`` and
      ``size_multiple`` (``check_shape``), the training configuration and held-out results.
      ``format``, ``net``, ``weights``, ``sha256`` and ``bytes`` are set here, over any given.

  Returns:
    The manifest path ``<prefix>.json``.
  """
  from flax import serialization  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  weights, meta = _paths(prefix)
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  state = jax.tree_util.tree_map(np.asarray, dict(variables))
  with open(weights + ".tmp", "wb") as stream:
    stream.write(serialization.msgpack_serialize(state))
  os.replace(weights + ".tmp", weights)
  from jsgp.training.configs import net_to_dict  # pylint: disable=import-outside-toplevel
  record = dict(manifest, format=FORMAT, net=net_to_dict(net), weights=os.path.basename(weights),
                sha256=sha256_of_file(weights), bytes=os.path.getsize(weights))
  with open(meta + ".tmp", "w", encoding="utf-8") as stream:
    json.dump(record, stream, indent=1, sort_keys=True)
  os.replace(meta + ".tmp", meta)
  return meta


def read_manifest(prefix: str) -> Dict[str, Any]:
  """The manifest ``<prefix>.json``; ``PolicyFileError`` naming the file if it is absent or not a
  jsgp policy manifest.

  Args:
    prefix: the policy's file prefix (the path without ``.json`` / ``.msgpack``).

  Returns:
    The manifest as a dict, with ``format`` (``FORMAT``), ``net``, ``sha256`` and ``task`` at
    least.

  Raises:
    PolicyFileError: the file is absent or unreadable (not JSON), is not a dict holding
      ``format``, ``net``, ``sha256`` and ``task``, or has another ``format`` than ``FORMAT``.
  """
  meta = _paths(prefix)[1]
  if not os.path.exists(meta):
    raise PolicyFileError(f"no policy manifest {meta}")
  try:
    with open(meta, encoding="utf-8") as stream:
      record = json.load(stream)
  except (OSError, ValueError) as err:
    raise PolicyFileError(f"policy manifest {meta} is unreadable ({err}); reinstall jsgp or "
                          "retrain the policy (python -m experiments.train_policy)") from err
  for key in ("format", "net", "sha256", "task"):
    if not isinstance(record, dict) or key not in record:
      raise PolicyFileError(f"{meta} is not a jsgp policy manifest (no {key!r})")
  if record["format"] != FORMAT:
    raise PolicyFileError(f"{meta} has format {record['format']}; this jsgp reads {FORMAT}")
  return record


def load(prefix: str):
  """``(policy, manifest)`` from ``<prefix>.msgpack`` / ``.json``; the weights' sha256 must match
  the manifest's (``PolicyFileError`` naming the file otherwise).

  Args:
    prefix: the policy's file prefix (the path without extension), e.g. from ``find`` or as
      given to ``save``.

  Returns:
    ``(policy, manifest)``: a ``jsgp.policies.LearnedPolicy`` (``variables``: ``"params"`` and
    ``"batch_stats"`` as JAX arrays, empty dicts where absent; ``config``: the network rebuilt
    from ``manifest["net"]``) and the manifest dict (``read_manifest``).

  Raises:
    PolicyFileError: (a ``ValueError``) the manifest is absent or invalid (``read_manifest``);
      the weights file is missing or its sha256 differs from the manifest's; the network
      configuration or the weights cannot be read.
  """
  from flax import serialization  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jsgp import policies  # pylint: disable=import-outside-toplevel
  from jsgp.training.configs import net_from_dict  # pylint: disable=import-outside-toplevel
  record = read_manifest(prefix)
  weights = _paths(prefix)[0]
  if not os.path.exists(weights):
    raise PolicyFileError(f"policy weights {weights} are missing")
  if sha256_of_file(weights) != record["sha256"]:
    raise PolicyFileError(f"policy weights {weights} are corrupted (sha256 does not match "
                          f"{_paths(prefix)[1]}); reinstall jsgp or retrain the policy")
  try:
    net = net_from_dict(record["net"])
    with open(weights, "rb") as stream:
      state = serialization.msgpack_restore(stream.read())
  except Exception as err:  # pylint: disable=broad-except
    raise PolicyFileError(f"policy {weights} cannot be read ({err})") from err
  variables = {"params": state.get("params", {}), "batch_stats": state.get("batch_stats", {})}
  variables = {k: _to_jax(v, jnp) for k, v in variables.items()}
  return policies.LearnedPolicy(variables, net), record


def _to_jax(tree, jnp):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree_util.tree_map(jnp.asarray, tree)


def manifest(task: str) -> Dict[str, Any]:
  """The shipped manifest of ``task``'s policy.

  Args:
    task: a task with a shipped policy (one of ``available()``).

  Returns:
    The manifest dict (``read_manifest``): among others the network (``"net"``), the policy
    budget, mode and hand-off ``solver`` runs it with (``"policy_steps"``, ``"mode"``,
    ``"handoff"``, chosen by measurement; the horizon and mode it was trained through are
    ``["training"]["policy_steps"]`` / ``["mode"]``), the image sizes it accepts (``"min_size"``,
    ``"size_multiple"``), the training configuration and data, the held-out time-to-accuracy
    (``"held_out"``) and the weights' ``"sha256"``.

  Raises:
    ValueError: no shipped policy for ``task``.
    PolicyFileError: the shipped manifest is absent, unreadable or invalid.
  """
  return read_manifest(_prefix(task))


def _prefix(task: str) -> str:
  tasks = available()
  if task not in tasks:
    raise ValueError(f"no pretrained policy for task {task!r}; available: {list(tasks)}")
  return os.path.join(DATA_DIR, task)


def check_shape(record: Dict[str, Any], image_shape) -> None:
  """Refuse an image shape the policy's network cannot take (``ValueError`` naming both).

  Args:
    record: a policy manifest (``manifest``, ``load``): its ``"min_size"`` (default 16) and
      ``"size_multiple"`` (default 1) bound each side; its ``"task"`` names it in the error.
    image_shape: the image shape ``(H, W)`` (any sequence of integers).

  Raises:
    ValueError: a side is below ``min_size`` or not a multiple of ``size_multiple``.
  """
  multiple = int(record.get("size_multiple", 1))
  minimum = int(record.get("min_size", 16))
  shape = tuple(int(s) for s in image_shape)
  if any(s < minimum or s % multiple for s in shape):
    raise ValueError(f"the {record['task']} policy takes images whose sides are multiples of "
                     f"{multiple} and at least {minimum}; got {shape}")


def policy(task: str):
  """The shipped policy of ``task`` (``"inpainting"``, ``"fourier"``, ``"deblur"``, ``"ct"``),
  a ``jsgp.policies.LearnedPolicy`` for ``jsgp.solvers.DRS``. It was trained for a DRS mode and
  budget; ``solver(task)`` runs it with the mode, budget and hand-off its manifest records
  (``manifest(task)["mode"]``, ``["policy_steps"]``, ``["handoff"]``: on inpainting 3
  safeguarded steps, then Douglas-Rachford; on partial Fourier and deblurring none); a DRS built
  by hand should pass the same ``mode``, ``max_policy_steps`` and ``handoff``
  (``handoff_method``).

  Args:
    task: a task with a shipped policy (one of ``available()``).

  Returns:
    The ``jsgp.policies.LearnedPolicy`` (``load``; its weights verified against the manifest's
    sha256).

  Raises:
    ValueError: no shipped policy for ``task``.
    PolicyFileError: the shipped files are missing, corrupted or unreadable.
  """
  return load(_prefix(task))[0]


def find(source: str, task: str) -> Optional[str]:
  """The file prefix of ``task``'s policy in ``source``: ``"pretrained"`` (the shipped ones) or a
  folder of ``<task>.msgpack`` / ``<task>.json`` files; None when ``source`` has none for ``task``.

  Args:
    source: ``"pretrained"``, or the path of a folder of policy files.
    task: the task name, the stem of the files.

  Returns:
    The prefix ``DATA_DIR/<task>`` or ``<source>/<task>`` (for ``load``) where its ``.json``
    manifest exists (the ``.msgpack`` is checked by ``load``), else ``None``.

  Raises:
    ValueError: ``source`` is neither ``"pretrained"`` nor an existing folder.
  """
  if source == "pretrained":
    return os.path.join(DATA_DIR, task) if task in available() else None
  if not os.path.isdir(source):
    raise ValueError(f"a policy source is 'pretrained' or a folder of policy files; "
                     f"{source!r} is not a folder")
  prefix = os.path.join(source, task)
  return prefix if os.path.exists(prefix + ".json") else None


HANDOFFS = ("mfista", "douglas_rachford")


def handoff_method(name: str):
  """The hand-off method a manifest or a spec names: ``"mfista"`` (monotone FISTA with step 1/L,
  ``DRS``'s default) or ``"douglas_rachford"`` (``DouglasRachford()``; needs a measurement with
  a cheap ``(I + t A^T A)^{-1}``: inpainting, partial Fourier, deblurring)."""
  from jsgp.solvers import FISTA, DouglasRachford  # pylint: disable=import-outside-toplevel
  if name == "mfista":
    return FISTA(max_backtracks=0, monotone=True)
  if name == "douglas_rachford":
    return DouglasRachford()
  raise ValueError(f"unknown hand-off {name!r}; one of {HANDOFFS}")


def parse_spec(spec: str) -> Tuple[str, Dict[str, Any]]:
  """``"source[:mode[:budget[:handoff]]]"`` -> ``(source, DRS settings)``: a policy source
  (``find``) with, optionally, the DRS mode, ``max_policy_steps`` and hand-off (``HANDOFFS``) to
  run it with instead of its manifest's (e.g. ``"pretrained:relaxation"``,
  ``"out/policies:accelerated:30"``, ``"pretrained:safeguarded:3:douglas_rachford"``).

  Raises:
    ValueError: an unknown mode or hand-off, a budget that is not a non-negative integer, or
      extra fields.
  """
  from jsgp.solvers.drs import MODES  # pylint: disable=import-outside-toplevel
  source, *fields = spec.split(":")
  if len(fields) > 3 or not source:
    raise ValueError(f"a policy spec is 'source[:mode[:budget[:handoff]]]'; got {spec!r}")
  kwargs: Dict[str, Any] = {}
  if fields and fields[0]:
    if fields[0] not in MODES:
      raise ValueError(f"policy spec {spec!r}: mode must be one of {MODES}, got {fields[0]!r}")
    kwargs["mode"] = fields[0]
  if len(fields) >= 2 and fields[1]:
    if not fields[1].isdigit():
      raise ValueError(f"policy spec {spec!r}: the budget must be a non-negative integer, got "
                       f"{fields[1]!r}")
    kwargs["max_policy_steps"] = int(fields[1])
  if len(fields) == 3:
    kwargs["handoff"] = handoff_method(fields[2])
  return source, kwargs


def _drs(prefix: str, kwargs) -> Tuple[Any, Dict[str, Any]]:
  """``(DRS, manifest)``: the policy at ``prefix`` with the budget, mode and hand-off its
  manifest records (``policy_steps``, ``mode``, ``handoff``), unless ``kwargs`` (passed to
  ``DRS``) set others. A mode other than the manifest's keeps ``DRS``'s default hand-off
  (monotone FISTA) unless ``kwargs`` name one."""
  from jsgp.solvers import DRS  # pylint: disable=import-outside-toplevel
  learned, record = load(prefix)
  kwargs = dict(kwargs)
  kwargs.setdefault("max_policy_steps", int(record.get("policy_steps", 5)))
  recorded_mode = record.get("mode", "safeguarded")
  kwargs.setdefault("mode", recorded_mode)
  if "handoff" not in kwargs and kwargs["mode"] == recorded_mode:
    kwargs["handoff"] = handoff_method(record.get("handoff", "mfista"))
  return DRS(learned, **kwargs), record


def handoff_label(method) -> str:
  """A short name of a ``DRS``'s hand-off for tables (``"DR"``, ``"MFISTA"``, the class name)."""
  from jsgp.solvers import FISTA, DouglasRachford  # pylint: disable=import-outside-toplevel
  tail = method.handoff
  if isinstance(tail, DouglasRachford):
    return "DR"
  if isinstance(tail, FISTA) and tail.monotone and tail.max_backtracks == 0:
    return "MFISTA"
  return type(tail).__name__


def solver_from(source: str, task: str, **kwargs):
  """``(label, DRS)`` with ``task``'s policy from ``source`` (see ``find``) and the policy budget
  it was trained for, or None when ``source`` has no policy for ``task``.

  Args:
    source: ``"pretrained"`` or a folder of policy files (``find``).
    task: the task name.
    **kwargs: settings of ``jsgp.solvers.DRS`` (``mode``, ``handoff``, ...);
      ``max_policy_steps`` defaults to the manifest's ``"policy_steps"`` (5 where it has none).

  Returns:
    ``(label, method)``: ``method``, the ``DRS`` over the loaded policy; ``label``, a
    description for tables and plots, ``"DRS <mode> + <net kind> (<source folder name>,
    H=<max_policy_steps> -> <hand-off>)"``. ``None`` when ``source`` has no policy for ``task``.

  Raises:
    ValueError: ``source`` is neither ``"pretrained"`` nor an existing folder, or ``kwargs``
      holds an invalid ``DRS`` setting.
    PolicyFileError: the policy's files are missing, corrupted or unreadable.
  """
  prefix = find(source, task)
  if prefix is None:
    return None
  method, record = _drs(prefix, kwargs)
  label = (f"DRS {method.mode} + {record['net']['kind']} "
           f"({os.path.basename(os.path.normpath(source))}, H={method.max_policy_steps}"
           f" -> {handoff_label(method)})")
  return label, method


def solver(task: str, **kwargs):
  """``DRS`` with the shipped policy of ``task`` and the mode, policy budget and hand-off its
  manifest records (``kwargs`` go to ``DRS``): inpainting 3 safeguarded steps, then
  Douglas-Rachford; partial Fourier and deblurring Douglas-Rachford from the start (budget 0: since
  its cold start no policy step pays for itself there; ``max_policy_steps=2`` / ``1`` runs the
  policy); CT 60 steps in the accelerated mode, then monotone FISTA.

  Args:
    task: a task with a shipped policy (one of ``available()``).
    **kwargs: settings of ``jsgp.solvers.DRS`` (``mode``, ``handoff``, ...);
      ``max_policy_steps`` defaults to the manifest's ``"policy_steps"`` (5 where it has none),
      ``mode`` to its ``"mode"``, and ``handoff`` to its ``"handoff"`` where the mode is the
      manifest's (else ``DRS``'s default, monotone FISTA).

  Returns:
    The ``DRS`` method over the shipped ``LearnedPolicy``.

  Raises:
    ValueError: no shipped policy for ``task``, or ``kwargs`` holds an invalid ``DRS`` setting.
    PolicyFileError: the shipped files are missing, corrupted or unreadable.
  """
  return _drs(_prefix(task), kwargs)[0]
