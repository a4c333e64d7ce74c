"""Immutable dataclasses that are JAX pytrees: what jsgp's operators, problems, methods and
policies are made of, without the neural-network library.

  from jsgp import struct

  @struct.dataclass
  class Step:
    size: jax.Array                                               # a leaf: traced, vmapped
    variant: str = struct.field(pytree_node=False, default="bb1")  # static: in the treedef

The same API as ``flax.struct`` (``dataclass``, ``field(pytree_node=...)``, ``.replace``), built
on ``jax.tree_util.register_dataclass`` alone, so ``import jsgp.solvers`` does not import flax
(whose package import loads ``flax.linen``). A class is a frozen ``dataclasses.dataclass``: fields
are set once, ``==`` and ``hash`` compare the fields (a method or task whose fields are static is
a valid ``jax.jit`` static argument), instances pickle and ``dataclasses.fields`` /
``dataclasses.replace`` work. Fields are pytree leaves unless declared
``field(pytree_node=False)``; static fields must be hashable, and two pytrees whose static fields
differ have different treedefs (they do not stack, and each compiles once under ``jit``).

Unlike ``flax.struct.dataclass`` the class is not registered with ``flax.serialization``: jsgp
serialises only network variables (plain dicts, ``jsgp.pretrained``) and ``TrainState`` (a
``NamedTuple``), never a method, policy or operator.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, TypeVar

import jax

try:
  from typing import dataclass_transform
except ImportError:  # Python 3.10: only for type checkers, so nothing is lost without it
  def dataclass_transform(**_):
    return lambda decorator: decorator

__all__ = ["dataclass", "field"]

_T = TypeVar("_T")
_MARK = "_jsgp_struct_dataclass"


def field(pytree_node: bool = True, *, metadata: Optional[dict] = None, **kwargs) -> Any:
  """A ``dataclasses.field``; ``pytree_node=False`` makes it static (auxiliary data of the
  pytree, compared and hashed, not traced). Other keywords go to ``dataclasses.field``."""
  return dataclasses.field(metadata=dict(metadata or {}, pytree_node=pytree_node), **kwargs)


def _replace(self, **changes):
  """A copy with ``changes`` (field name -> value) applied (``dataclasses.replace``)."""
  return dataclasses.replace(self, **changes)


@dataclass_transform(field_specifiers=(field,), frozen_default=True)
def dataclass(cls: Optional[_T] = None, **kwargs) -> Any:
  """Make ``cls`` a frozen dataclass registered as a JAX pytree: its leaves are the fields with
  ``pytree_node=True`` (the default), in declaration order; the other fields are static.
  ``kwargs`` go to ``dataclasses.dataclass`` (``frozen`` defaults to True). Adds
  ``replace(**changes)``. Decorating a class twice is harmless; a subclass must be decorated
  itself to be a pytree of its own fields."""
  if cls is None:
    return functools.partial(dataclass, **kwargs)
  if _MARK in cls.__dict__:
    return cls
  kwargs.setdefault("frozen", True)
  data_cls = dataclasses.dataclass(**kwargs)(cls)
  data_fields, meta_fields = [], []
  for info in dataclasses.fields(data_cls):
    (data_fields if info.metadata.get("pytree_node", True) else meta_fields).append(info.name)
  data_cls.replace = _replace
  jax.tree_util.register_dataclass(data_cls, data_fields=data_fields, meta_fields=meta_fields)
  setattr(data_cls, _MARK, True)
  return data_cls

