"""File checksums shared by the policy files and the training state (no heavy imports)."""
from __future__ import annotations

import hashlib


def sha256_of_file(path: str) -> str:
  """The hex sha256 of the file at ``path``, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as stream:
    for block in iter(lambda: stream.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
