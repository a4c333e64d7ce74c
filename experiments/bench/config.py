"""The benchmark's settings (``BenchConfig``): flags, validation and the ``--quick`` preset."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple

from experiments import methods
from experiments.cli import option
from jsgp.operators import PATTERNS
from jsgp.problems import PAPER_LAM, Task

ALL_TASKS = ("inpainting", "fourier", "deblur", "ct")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CT_DIR = os.path.join(REPO_ROOT, "..", "shared", "data", "ct")

QUICK = {  # what --quick changes (flags given explicitly on the command line win)
    "iters": 20, "ct_iters": 3, "repeats": 3, "batch_sizes": (1, 8), "batch_iters": 3,
    "ct_batch_sizes": (),
}
ACCURACY_TASKS = ("inpainting", "fourier", "deblur", "ct")
ACCURACY = {"tasks": ("inpainting", "fourier"), "size": 128,  # --mode=accuracy defaults
            "ct_size": 128}
POLICY_CHOICES = ("", "pretrained")
DEFAULT_ACCURACY_METHODS = tuple(getattr(methods, "ACCURACY_METHODS", ("pgm", "fista_b", "sgp_bb")))
SCICO_RULES = ("const", "bb", "abb", "ls")


def _quick_help() -> str:
  shown = ", ".join(f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in QUICK.items())
  return (f"Run in under ~10 minutes on a 2-core CPU: {shown} (so: 3 repeats, batch sizes 1 and "
          "8, CT timed but without its batch runs; sizes unchanged; speed mode only). "
          "Explicit flags win.")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """Every setting of one benchmark run."""

  mode: str = option("speed", "speed: cost per iteration, floor, parts, batches; accuracy: "
                     "iterations and wall time to relative gaps and to the converged NMSE "
                     "against float64 references (experiments.bench.accuracy).",
                     choices=("speed", "accuracy"))
  tasks: Tuple[str, ...] = option(ALL_TASKS, f"Tasks, from {ALL_TASKS} (accuracy mode: from "
                                  f"{ACCURACY_TASKS}, default {ACCURACY['tasks']}).")
  methods: Tuple[str, ...] = option(methods.BENCH_METHODS,
                                    f"Methods, from {methods.SPEED_METHODS}.")
  accuracy_methods: Tuple[str, ...] = option(
      DEFAULT_ACCURACY_METHODS, "Accuracy mode: jsgp methods (registry names of kind "
      "classical, or learned with --checkpoint_dir).")
  policy: str = option("", "Accuracy mode: also run DRS with learned policies, each with the mode "
                       "and budget its manifest records: comma-separated sources, each "
                       "'pretrained' (jsgp.pretrained, the shipped ones) or a folder of "
                       "<task>.msgpack/<task>.json policy files (experiments.train_policy), "
                       "optionally ':mode[:budget]' to run it another way (e.g. "
                       "'pretrained:relaxation', the paper's mode); the "
                       "first is 'the learned method' whose speedup is summarised and recorded "
                       "(experiments.record_tta), the others run beside it; empty: none.")
  lam_multiplier: float = option(1.0, "lam = the task's paper value x this.")
  rate: float = option(0.5, "Sampling rate (inpainting, fourier).")
  noise_sigma: float = option(0.0, "Measurement noise std (0-255 scale).")
  pattern: str = option("variable_density", "k-space sampling (fourier).",
                        choices=PATTERNS)
  size: int = option(256, "Image side of inpainting / fourier / deblur (accuracy mode default "
                     f"{ACCURACY['size']}).")
  ct_size: int = option(512, "Image side of CT.")
  ct_views: int = option(144, "CT projection angles.")
  iters: int = option(50, "Iterations of each timed solve (non-CT).")
  ct_iters: int = option(10, "Iterations of each timed CT solve.")
  repeats: int = option(5, "Timed warm repeats (>= 3); the median is reported.")
  batch_sizes: Tuple[int, ...] = option((1, 8, 32), "Batch sizes of the vmapped solves (non-CT); "
                                        "empty to skip.", item=int)
  ct_batch_sizes: Tuple[int, ...] = option((1, 8), "Batch sizes for CT; empty to skip.", item=int)
  batch_iters: int = option(20, "Iterations of each timed batched solve.")
  images: int = option(4, "Accuracy mode: images per task (problems), each its own draw.")
  gaps: Tuple[float, ...] = option((1e-3, 1e-5), "Accuracy mode: relative gap targets "
                                   "(F_k - F*) / F*.", item=float)
  tta_iters: int = option(3000, "Accuracy mode: iterations each method gets to reach a target "
                          "(the cap; a method missing a target within it gets '-').")
  tta_db: float = option(0.5, "Accuracy mode: NMSE target, dB above the NMSE of x*.")
  reference_tol: float = option(1e-10, "Accuracy mode: scaled fixed-point residual of the "
                                "float64 reference x*.")
  reference_max_iters: int = option(100_000, "Accuracy mode: iteration cap of the reference.")
  scico_python: str = option("", "Accuracy mode with --peers: a Python interpreter with scico "
                             "(e.g. /work/research/venv-scico/bin/python); empty: SCICO missing.")
  scico_rules: Tuple[str, ...] = option(SCICO_RULES, f"SCICO step rules, from {SCICO_RULES}.")
  scico_max_iters: int = option(3000, "Iteration cap of SCICO's instrumented runs.")
  scico_budget_s: float = option(300.0, "Wall-clock cap of each SCICO instrumented run (per "
                                 "image and rule); targets not reached by then get '-'.")
  data_dir: str = option("", "BSDS500 root (e.g. /work/shared/data/bsds500); empty: the embedded "
                         "scikit-image test images.")
  ct_data_dir: str = option(DEFAULT_CT_DIR, "CT slices (jsgp.data.load_ct_slices); a "
                            "Shepp-Logan phantom when absent.")
  checkpoint_dir: str = option("", "An experiment's checkpoint folder holding step/ and diag/ "
                               "(e.g. out/fourier_demo/checkpoints); empty: freshly initialised "
                               "networks.")
  net: str = option("small", "UNetConfig preset of the policies.", choices=("small", "paper"))
  dtype: str = option("float32", "Image / problem dtype.", choices=("float32", "float64"))
  peers: bool = option(False, "Also time peers: jaxopt.ProximalGradient (accelerated) if "
                       "installed; in accuracy mode also a textbook FISTA-bt and SCICO.")
  parts: bool = option(True, "Also time A, A^T, prox and the objective reductions alone.")
  seed: int = option(0, "PRNG seed (operators, network initialisation).")
  out_dir: str = option("out/bench", "Where bench.json and bench.md go.")
  quick: bool = option(False, _quick_help())

  def validate(self) -> None:
    # (accuracy mode: the speed default, ALL_TASKS, stands for ACCURACY["tasks"]; see with_mode)
    allowed = (ACCURACY_TASKS if self.mode == "accuracy" and self.tasks != ALL_TASKS
               else ALL_TASKS)
    bad = [t for t in self.tasks if t not in allowed]
    if bad or not self.tasks:
      raise ValueError(f"--tasks must be a non-empty subset of {allowed}, got {self.tasks}.")
    if self.mode == "accuracy":
      self._validate_accuracy()
    methods.check_names("methods", self.methods, methods.SPEED_METHODS)
    if self.repeats < 3:
      raise ValueError(f"--repeats must be >= 3 (median of warm runs), got {self.repeats}.")
    for name in ("iters", "ct_iters", "batch_iters", "tta_iters", "size", "ct_size", "ct_views",
                 "images", "reference_max_iters", "scico_max_iters"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
    if any(b < 1 for b in self.batch_sizes + self.ct_batch_sizes):
      raise ValueError("batch sizes must be >= 1.")
    if not self.tta_db > 0:
      raise ValueError(f"--tta_db must be > 0, got {self.tta_db}.")

  def _validate_accuracy(self) -> None:
    kinds = ("classical", "learned") if self.checkpoint_dir else ("classical",)
    methods.check_names("accuracy_methods", self.accuracy_methods, [
        n for n, spec in methods.REGISTRY.items() if spec.kind in kinds])
    from jsgp.pretrained import parse_spec  # pylint: disable=import-outside-toplevel
    for spec in self.policy_sources:
      source = parse_spec(spec)[0]
      if source != "pretrained" and not os.path.isdir(source):
        raise ValueError(f"--policy sources are 'pretrained' or folders of policy files; "
                         f"{source!r} is not a folder")
    if len(set(self.policy_sources)) < len(self.policy_sources):
      raise ValueError(f"--policy names a source twice: {self.policy!r}")
    if not self.lam_multiplier > 0:
      raise ValueError(f"--lam_multiplier must be > 0, got {self.lam_multiplier}.")
    if self.repeats < 5:
      raise ValueError(f"--repeats must be >= 5 in accuracy mode, got {self.repeats}.")
    if not self.gaps or not all(0 < g < 1 for g in self.gaps):
      raise ValueError(f"--gaps must be in (0, 1), got {self.gaps}.")
    if not self.reference_tol > 0:
      raise ValueError(f"--reference_tol must be > 0, got {self.reference_tol}.")
    methods.check_names("scico_rules", self.scico_rules, SCICO_RULES)

  def with_mode(self, explicit) -> "BenchConfig":
    """``--mode=accuracy``: the ``ACCURACY`` defaults for every setting not named in ``explicit``."""
    if self.mode != "accuracy":
      return self
    return dataclasses.replace(self, **{k: v for k, v in ACCURACY.items() if k not in explicit})

  def with_quick(self, explicit) -> "BenchConfig":
    """``--quick``: the ``QUICK`` values for every setting not named in ``explicit``."""
    if not self.quick:
      return self
    return dataclasses.replace(self, **{k: v for k, v in QUICK.items() if k not in explicit})

  @property
  def checkpoint(self) -> Optional[str]:
    return self.checkpoint_dir or None

  @property
  def policy_sources(self) -> Tuple[str, ...]:
    """The ``--policy`` sources, in order (empty: no learned contender)."""
    return tuple(source.strip() for source in self.policy.split(",") if source.strip())


def task_of(name: str, cfg) -> Task:
  """The benchmark's task (both modes): ``--size`` (CT: ``--ct_size``, ``--ct_views``),
  ``--rate``, ``--noise_sigma``, ``--pattern``, ``lam`` the paper's x ``--lam_multiplier``."""
  size = cfg.ct_size if name == "ct" else cfg.size
  return Task(name, (size, size), rate=cfg.rate, noise_sigma=cfg.noise_sigma,
              pattern=cfg.pattern, n_views=cfg.ct_views,
              lam=PAPER_LAM[name] * getattr(cfg, "lam_multiplier", 1.0))
