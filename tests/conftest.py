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
