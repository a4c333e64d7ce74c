"""The command-line edge: absl flags generated from a configuration dataclass, parsed and
validated into it before any work.

A configuration field declares its flag in its metadata (:func:`option`): help text, and for a
list its item type (``item=float``), for an enum its ``choices``. Each entry point defines the
flags of its configuration class in its own process (``define_flags``), so two entry points with
flags of the same name never meet in one process; tests parse into a fresh ``FlagValues``
(:func:`parse`). ``config.validate()`` raises ``ValueError`` naming the flag; the entry point
turns it into ``app.UsageError`` (a clean message and exit code 1).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Type, TypeVar

from absl import app, flags

from jsgp import training

T = TypeVar("T")


def option(default, doc: str, *, item: Optional[Callable] = None,
           choices: Optional[Sequence[str]] = None, flag: bool = True):
  """A dataclass field that is also a command-line flag with help text ``doc`` (``flag=False``:
  a field only). A tuple default makes a list flag of ``item`` values."""
  if isinstance(default, (list, tuple)):
    default, item = tuple(default), item or str
  return dataclasses.field(default=default, metadata=dict(help=doc, item=item, choices=choices,
                                                          flag=flag))


def _flag_fields(cls):
  return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", False)]


def define_flags(cls: Type, fv: flags.FlagValues = flags.FLAGS) -> None:
  """Define a flag for every flag field of ``cls`` in ``fv`` (once; repeated calls do nothing)."""
  for f in _flag_fields(cls):
    if f.name in fv:
      continue
    meta, default = f.metadata, f.default
    if meta["choices"]:
      flags.DEFINE_enum(f.name, default, list(meta["choices"]), meta["help"], flag_values=fv)
    elif isinstance(default, tuple):
      flags.DEFINE_list(f.name, [str(v) for v in default], meta["help"], flag_values=fv)
    elif isinstance(default, bool):
      flags.DEFINE_bool(f.name, default, meta["help"], flag_values=fv)
    elif isinstance(default, int):
      flags.DEFINE_integer(f.name, default, meta["help"], flag_values=fv)
    elif isinstance(default, float):
      flags.DEFINE_float(f.name, default, meta["help"], flag_values=fv)
    else:
      flags.DEFINE_string(f.name, default, meta["help"], flag_values=fv)


def _converted(name: str, values, item: Callable) -> tuple:
  try:
    return tuple(item(v.strip() if isinstance(v, str) else v) for v in values)
  except ValueError as err:
    raise ValueError(f"--{name}: expected a comma-separated list of {item.__name__} values, "
                     f"got {','.join(map(str, values))!r} ({err})") from err


def from_flags(cls: Type[T], fv: flags.FlagValues = flags.FLAGS, **fixed: Any) -> T:
  """An instance of ``cls`` from the parsed flags (list items converted to their type) and the
  ``fixed`` field values, validated (``ValueError`` naming the flag)."""
  values = dict(fixed)
  for f in _flag_fields(cls):
    value = fv[f.name].value
    if isinstance(f.default, tuple):
      value = _converted(f.name, value or (), f.metadata["item"])
    values[f.name] = value
  config = cls(**values)
  config.validate()
  return config


def parse(cls: Type[T], argv: Sequence[str], **fixed: Any) -> T:
  """Parse ``argv`` (flags only, ``argv[0]`` a program name; ``--flagfile`` allowed) into a fresh
  set of flags and return the validated configuration: for tests and scripts."""
  fv = flags.FlagValues()
  define_flags(cls, fv)
  fv(list(argv))
  return from_flags(cls, fv, **fixed)


def config_or_usage_error(cls: Type[T], fv: flags.FlagValues = flags.FLAGS, **fixed: Any) -> T:
  """``from_flags``, with a bad value reported as ``app.UsageError`` (exit code 1)."""
  try:
    return from_flags(cls, fv, **fixed)
  except ValueError as err:
    raise app.UsageError(str(err)) from err


def main_of(cls: Type[T], run: Callable[[T], Any], **fixed: Any) -> Callable:
  """An ``app.run`` main: no positional arguments, then ``run(config)``."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = config_or_usage_error(cls, **fixed)
    try:
      run(config)
    except (training.CheckpointMismatch, training.PartialCheckpoint, training.DirectoryInUse,
            FileNotFoundError) as err:
      raise app.UsageError(str(err)) from err
    except (training.CorruptCheckpoint, training.CorruptFile, training.DiskFull) as err:
      raise SystemExit(f"Error: {err}") from None  # one message, exit status 1

  return main


def run_main(cls: Type[T], run: Callable[[T], Any], **fixed: Any) -> None:
  """The whole of an entry point: define ``cls``'s flags, parse, validate, ``run(config)``."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  define_flags(cls)
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  app.run(main_of(cls, run, **fixed))
