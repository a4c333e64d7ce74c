"""Training configurations: everything that determines a run, and must match to resume it.

Two kinds, recorded by name in every checkpoint's metadata (``KINDS``): ``"greedy"``, the
paper's cumulative greedy training (``jsgp.training.greedy``), and ``"unrolled"``, training
through ``T`` solver iterations (``jsgp.training.unrolled``).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict

from jsgp import nets
from jsgp.problems import Task

TARGETS = ("solution", "image")


def check_target(target: str) -> None:
  """Raise ``ValueError`` unless ``target`` names a training target: ``"solution"`` (x*) or
  ``"image"`` (the original image)."""
  if target not in TARGETS:
    raise ValueError(f"training target must be 'solution' (x*) or 'image', got {target!r}")


class _JsonConfig:
  """``to_dict``: the dataclass as plain JSON types (what checkpoints record and compare)."""

  def to_dict(self) -> Dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class GreedyConfig(_JsonConfig):
  """A greedy cumulative training run (the paper's Algorithm 2, eq. 6-9)."""

  task: Task
  net: nets.UNetConfig
  num_stages: int = 20          # K: learned iterations
  steps_per_stage: int = 200
  batch_size: int = 8
  learning_rate: float = 1e-3
  grad_clip: float = 1.0
  seed: int = 0
  reference_iters: int = 1200   # solver iterations for x*
  target: str = "solution"      # what eq. 7 measures x~ against: x* (the paper) or the image

  def __post_init__(self):
    check_target(self.target)

  @property
  def total_steps(self) -> int:
    return self.num_stages * self.steps_per_stage


@dataclasses.dataclass(frozen=True)
class UnrolledConfig(_JsonConfig):
  """An unrolled training run: the network trained through ``unroll_steps`` iterations of the
  DRS solver. ``warm_start`` is the checkpoint directory of a greedy run with the same network to
  start from (``""``: from scratch)."""

  task: Task
  net: nets.UNetConfig
  unroll_steps: int = 10        # T: solver iterations in the loss
  num_steps: int = 300          # Adam steps
  batch_size: int = 4
  learning_rate: float = 1e-4
  grad_clip: float = 1.0
  seed: int = 0
  reference_iters: int = 1200   # solver iterations for x*
  remat: bool = True            # jax.checkpoint each unrolled iteration
  warm_start: str = ""
  descent_penalty: float = 0.0  # weight of the no-descent hinge (jsgp.training.unrolled)
  target: str = "solution"      # what the loss measures iterates against: x* or the image

  def __post_init__(self):
    check_target(self.target)

  @property
  def total_steps(self) -> int:
    return self.num_steps


def _policy_config():
  from jsgp.training.policy import PolicyTrainingConfig  # pylint: disable=import-outside-toplevel
  return PolicyTrainingConfig


KINDS = {"greedy": GreedyConfig, "unrolled": UnrolledConfig}
LAZY_KINDS = {"policy": _policy_config}  # kinds whose module imports this one


def _all_kinds():
  return {**KINDS, **{kind: load() for kind, load in LAZY_KINDS.items()}}


def net_to_dict(net) -> Dict[str, Any]:
  """A network configuration as JSON-able settings plus its ``kind``."""
  out = json.loads(json.dumps(dataclasses.asdict(net)))
  out["kind"] = net.kind
  return out


def net_from_dict(saved: Dict[str, Any]):
  """A network configuration from its ``to_dict`` form (``kind`` names the architecture; absent:
  the U-Net, as recorded before other architectures existed)."""
  from jsgp import policy_nets  # pylint: disable=import-outside-toplevel
  saved = dict(saved)
  kind = saved.pop("kind", "unet")
  if kind not in policy_nets.ARCHITECTURES:
    raise ValueError(f"unknown network architecture {kind!r}; expected one of "
                     f"{sorted(policy_nets.ARCHITECTURES)}")
  return policy_nets.ARCHITECTURES[kind](**saved)


def kind_of(config) -> str:
  """The checkpoint kind of a configuration object."""
  for kind, cls in _all_kinds().items():
    if isinstance(config, cls):
      return kind
  raise TypeError(f"not a training configuration: {type(config).__name__}")


def from_dict(kind: str, saved: Dict[str, Any]):
  """The configuration of ``kind`` from its ``to_dict`` form; ``ValueError`` for an unknown kind
  or setting (a checkpoint written by a newer jsgp)."""
  kinds = _all_kinds()
  if kind not in kinds:
    raise ValueError(f"unknown training kind {kind!r}; expected one of {sorted(kinds)}")
  cls = kinds[kind]
  saved = dict(saved)
  task = dict(saved.pop("task"))
  task["image_shape"] = tuple(task["image_shape"])
  unknown = set(saved) - {f.name for f in dataclasses.fields(cls)}
  if unknown:
    raise ValueError(f"settings this version of jsgp does not know: {sorted(unknown)}")
  tuples = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, tuple)}
  saved = {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in saved.items()}
  return cls(task=Task(**task), net=net_from_dict(saved.pop("net")), **saved)
