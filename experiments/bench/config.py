"""The benchmark's settings (``BenchConfig``): flags, validation and the ``--quick`` preset."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple

from experiments import methods
from experiments.cli import option

ALL_TASKS = ("inpainting", "fourier", "deblur", "ct")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CT_DIR = os.path.join(REPO_ROOT, "..", "shared", "data", "ct")

QUICK = {  # what --quick changes (flags given explicitly on the command line win)
    "iters": 20, "ct_iters": 3, "repeats": 3, "batch_sizes": (1, 8), "batch_iters": 3,
    "ct_batch_sizes": (), "tta_iters": 300, "ct_tta": False,
}


def _quick_help() -> str:
  shown = ", ".join(f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in QUICK.items())
  return (f"Run in under ~10 minutes on a 2-core CPU: {shown} (so: 3 repeats, batch sizes 1 and "
          "8, CT timed but without its time-to-accuracy and batch runs; sizes unchanged). "
          "Explicit flags win.")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """Every setting of one benchmark run."""

  tasks: Tuple[str, ...] = option(ALL_TASKS, f"Tasks, from {ALL_TASKS}.")
  methods: Tuple[str, ...] = option(methods.BENCH_METHODS,
                                    f"Methods, from {methods.BENCH_METHODS}.")
  size: int = option(256, "Image side of inpainting / fourier / deblur.")
  ct_size: int = option(512, "Image side of CT.")
  ct_views: int = option(144, "CT projection angles.")
  iters: int = option(50, "Iterations of each timed solve (non-CT).")
  ct_iters: int = option(10, "Iterations of each timed CT solve.")
  repeats: int = option(5, "Timed warm repeats (>= 3); the median is reported.")
  batch_sizes: Tuple[int, ...] = option((1, 8, 32), "Batch sizes of the vmapped solves (non-CT); "
                                        "empty to skip.", item=int)
  ct_batch_sizes: Tuple[int, ...] = option((1, 8), "Batch sizes for CT; empty to skip.", item=int)
  batch_iters: int = option(20, "Iterations of each timed batched solve.")
  converged_iters: int = option(1200, "FISTA iterations defining the converged NMSE.")
  tta_iters: int = option(1200, "Iterations each method gets to reach the NMSE target.")
  tta_db: float = option(0.5, "Time-to-accuracy tolerance (dB) around the converged NMSE.")
  ct_tta: bool = option(True, "Run time-to-accuracy for CT as well (slow on CPU).")
  data_dir: str = option("", "BSDS500 root (e.g. /work/shared/data/bsds500); empty: the embedded "
                         "scikit-image test images.")
  ct_data_dir: str = option(DEFAULT_CT_DIR, "CT slices (jsgp.data.load_ct_slices); a "
                            "Shepp-Logan phantom when absent.")
  checkpoint_dir: str = option("", "An experiment's checkpoint folder holding step/ and diag/ "
                               "(e.g. out/fourier_demo/checkpoints); empty: freshly initialised "
                               "networks.")
  net: str = option("small", "UNetConfig preset of the policies.", choices=("small", "paper"))
  dtype: str = option("float32", "Image / problem dtype.", choices=("float32", "float64"))
  peers: bool = option(False, "Also time jaxopt.ProximalGradient (accelerated) if installed.")
  parts: bool = option(True, "Also time A, A^T, prox and the objective reductions alone.")
  seed: int = option(0, "PRNG seed (operators, network initialisation).")
  out_dir: str = option("out/bench", "Where bench.json and bench.md go.")
  quick: bool = option(False, _quick_help())

  def validate(self) -> None:
    bad = [t for t in self.tasks if t not in ALL_TASKS]
    if bad or not self.tasks:
      raise ValueError(f"--tasks must be a non-empty subset of {ALL_TASKS}, got {self.tasks}.")
    methods.check_names("methods", self.methods, methods.BENCH_METHODS)
    if self.repeats < 3:
      raise ValueError(f"--repeats must be >= 3 (median of warm runs), got {self.repeats}.")
    for name in ("iters", "ct_iters", "batch_iters", "converged_iters", "tta_iters", "size",
                 "ct_size", "ct_views"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
    if any(b < 1 for b in self.batch_sizes + self.ct_batch_sizes):
      raise ValueError("batch sizes must be >= 1.")
    if not self.tta_db > 0:
      raise ValueError(f"--tta_db must be > 0, got {self.tta_db}.")

  def with_quick(self, explicit) -> "BenchConfig":
    """``--quick``: the ``QUICK`` values for every setting not named in ``explicit``."""
    if not self.quick:
      return self
    return dataclasses.replace(self, **{k: v for k, v in QUICK.items() if k not in explicit})

  @property
  def checkpoint(self) -> Optional[str]:
    return self.checkpoint_dir or None
