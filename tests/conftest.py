"""Test configuration: float64 available everywhere; shared small fixtures."""
import os

import jax
import pytest

jax.config.update("jax_enable_x64", True)

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def shared_data_dir():
  """``../shared/data`` beside the checkout, or skip the test where it is absent."""
  path = os.path.abspath(SHARED_DATA)
  if not os.path.isdir(path):
    pytest.skip(f"shared data not found at {path}")
  return path



@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
  """Drop JAX's compiled executables after each test module. Each XLA:CPU executable keeps a few
  memory mappings; the whole suite in one process compiled enough of them to pass Linux's
  ``vm.max_map_count`` (65530), and the next compilation crashed with a segfault (in CI and
  locally, both in test_unrolled; ~4-9k mappings per module, ~900 after clearing)."""
  yield
  jax.clear_caches()
