"""``jsgp.struct``: the library's pytree dataclasses, without flax; the solvers import without the
neural-network library."""
import dataclasses
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsgp import struct
from jsgp.solvers import FISTA, SGP


def test_the_solvers_operators_and_problems_import_without_flax_linen():
  code = ("import sys, jsgp, jsgp.solvers, jsgp.operators, jsgp.problems, jsgp.policies\n"
          "from jsgp import pretrained, DRS, FISTA\n"
          "assert 'flax.linen' not in sys.modules, 'flax.linen was imported'\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]


@struct.dataclass
class Scaled:
  """A leaf ``scale`` and a static ``mode`` that the traced code branches on in Python."""

  scale: jax.Array
  mode: str = struct.field(pytree_node=False, default="double")

  def __call__(self, x):
    return self.scale * (2.0 * x if self.mode == "double" else x)


def test_a_struct_dataclass_is_a_pytree_whose_static_fields_stay_static():
  obj = Scaled(jnp.asarray(3.0))
  leaves, treedef = jax.tree_util.tree_flatten(obj)
  assert len(leaves) == 1 and float(leaves[0]) == 3.0
  assert treedef != jax.tree_util.tree_structure(Scaled(jnp.asarray(3.0), mode="plain"))

  traced_modes = []

  @jax.jit
  def apply(o, x):
    traced_modes.append(o.mode)          # a Python str inside the trace, not a tracer
    return o(x)

  assert float(apply(obj, 1.0)) == 6.0
  assert float(apply(obj.replace(mode="plain"), 1.0)) == 3.0
  assert traced_modes == ["double", "plain"]

  mapped = jax.tree_util.tree_map(lambda a: a + 1.0, obj)
  assert isinstance(mapped, Scaled) and mapped.mode == "double" and float(mapped.scale) == 4.0

  batch = jax.tree_util.tree_map(lambda *a: jnp.stack(a), obj, obj.replace(scale=jnp.asarray(5.0)))
  assert batch.mode == "double" and batch.scale.shape == (2,)
  out = jax.vmap(lambda o, x: o(x))(batch, jnp.ones(2))
  np.testing.assert_allclose(np.asarray(out), [6.0, 10.0])

  returned = jax.jit(lambda o: o.replace(scale=o.scale * 2))(obj)
  assert isinstance(returned, Scaled) and returned.mode == "double"
  assert float(returned.scale) == 6.0


def test_a_struct_dataclass_is_frozen_comparable_hashable_and_picklable():
  obj = Scaled(1.5, mode="plain")
  with pytest.raises(dataclasses.FrozenInstanceError):
    obj.mode = "double"
  assert [f.name for f in dataclasses.fields(Scaled)] == ["scale", "mode"]
  assert obj == Scaled(1.5, "plain") and hash(obj) == hash(Scaled(1.5, "plain"))
  assert pickle.loads(pickle.dumps(obj)) == obj
  assert struct.dataclass(Scaled) is Scaled        # decorating twice changes nothing

  # The library's methods: equal settings are equal and hash alike (jit static arguments).
  assert FISTA(max_backtracks=3) == FISTA(max_backtracks=3)
  assert hash(FISTA(max_backtracks=3)) == hash(FISTA(max_backtracks=3))
  assert pickle.loads(pickle.dumps(SGP())) == SGP()
  method = jax.jit(lambda m: m)(FISTA(max_backtracks=3))
  assert method == FISTA(max_backtracks=3)
