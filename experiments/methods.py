"""The one vocabulary of methods for the experiments, the benchmark and the unrolled study:
name -> label, colour, kind and how to build the solver."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from jsgp import policies
from jsgp.solvers import DRS, FISTA, PGM, SGP, DouglasRachford, SpaRSA

KINDS = ("classical", "reference", "learned", "policy", "oracle", "direct")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """One method of the tables and plots.

  Attributes:
    name: registry key (``--methods`` value).
    label: row label in tables and legends.
    color: matplotlib colour of its curves.
    kind: ``classical`` (a solver needing nothing), ``reference`` (a classical solver run to
      convergence), ``learned`` (DRS, in its default safeguarded mode, with a policy the run
      trains), ``policy`` (DRS with a policy file: ``--policy=pretrained`` or a folder, nothing
      trained; the DRS mode and budget the file was trained for), ``oracle`` (DRS with the
      greedy oracle, which needs ``x*``) or ``direct`` (the direct-mapping U-Net, not a solver).
    head: ``"step"`` or ``"diag"`` for learned and oracle methods.
    training: ``"greedy"`` or ``"unrolled"`` for learned methods.
    make: classical and reference methods: ``() -> solver``.
  """

  name: str
  label: str
  color: str
  kind: str
  head: Optional[str] = None
  training: Optional[str] = None
  make: Optional[Callable[[], Any]] = None

  @property
  def iterative(self) -> bool:
    return self.kind != "direct"

  def solver(self, policy=None, x_star=None, grid=None):
    """The solver: ``make()`` (classical), ``DRS(policy)`` (learned), or DRS driven by the
    greedy oracle of ``x_star`` on the log-stepsize ``grid`` (oracle)."""
    if self.kind in ("classical", "reference"):
      return self.make()
    if self.kind in ("learned", "policy"):
      if policy is None:
        raise ValueError(f"{self.name} needs a trained policy")
      return DRS(policy)
    if self.kind == "oracle":
      return DRS(policies.GreedyOraclePolicy(x_star, grid, diagonal=self.head == "diag"),
                 branchless=True)
    raise ValueError(f"{self.name} ({self.kind}) is not a solver")


def backtracking_fista() -> FISTA:
  """The paper's FISTA-b: Beck-Teboulle backtracking from ``L0 = L / 10`` (``L`` doubles until
  the quadratic upper bound holds; it never exceeds the problem's estimate). Starting at the
  estimate itself would make the test pass at once, i.e. FISTA with step 1/L under another name."""
  return FISTA(lipschitz0_factor=0.1)


def constant_fista() -> FISTA:
  """FISTA with the constant step 1/L (no backtracking test): the fastest classical method
  measured here, and the solver of every converged reference."""
  return FISTA(max_backtracks=0)


REGISTRY: Dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("pgm", "PGM", "tab:brown", "classical", make=PGM),
    MethodSpec("fista_b", "FISTA-b", "tab:blue", "classical", make=backtracking_fista),
    MethodSpec("fista", "FISTA (step 1/L)", "navy", "classical", make=constant_fista),
    MethodSpec("fista_restart", "FISTA, gradient restart", "tab:gray", "classical",
               make=lambda: FISTA(max_backtracks=0, restart="gradient")),
    MethodSpec("mfista", "Monotone FISTA", "darkgreen", "classical",
               make=lambda: FISTA(max_backtracks=0, monotone=True)),
    MethodSpec("fista_converged", "FISTA (converged)", "gray", "reference", make=constant_fista),
    MethodSpec("sgp_bb", "SGP-BB", "tab:orange", "classical", make=SGP),
    MethodSpec("sgp_bb1", "SGP-BB1", "gold", "classical",
               make=lambda: SGP(policies.BarzilaiBorwein("bb1"))),
    MethodSpec("sparsa", "SpaRSA (non-monotone BB)", "teal", "classical", make=SpaRSA),
    MethodSpec("douglas_rachford", "Douglas-Rachford", "darkorange", "classical",
               make=DouglasRachford),
    MethodSpec("step_learned", "Step-learned DRS (safeguarded)", "tab:green", "learned", "step",
               "greedy"),
    MethodSpec("diag_learned", "Diag-learned DRS (safeguarded)", "tab:red", "learned", "diag",
               "greedy"),
    MethodSpec("step_unrolled", "Step-learned DRS (safeguarded), unrolled", "tab:olive",
               "learned", "step", "unrolled"),
    MethodSpec("diag_unrolled", "Diag-learned DRS (safeguarded), unrolled", "tab:pink",
               "learned", "diag", "unrolled"),
    MethodSpec("drs_policy", "DRS + policy file (--policy; its trained mode)", "crimson", "policy"),
    MethodSpec("step_oracle", "Greedy oracle, step", "tab:cyan", "oracle", "step"),
    MethodSpec("diag_oracle", "Greedy oracle, diagonal", "black", "oracle", "diag"),
    MethodSpec("unet_direct", "U-Net (direct)", "tab:purple", "direct"),
)}

PROTOCOL_METHODS = ("fista_b", "fista_converged", "sgp_bb", "step_learned", "diag_learned",
                    "unet_direct")
BENCH_METHODS = ("pgm", "fista", "fista_b", "mfista", "sgp_bb", "step_learned", "diag_learned")
SPEED_METHODS = BENCH_METHODS + ("fista_restart", "sgp_bb1", "sparsa", "douglas_rachford")
"""The speed benchmark's default methods, and every method it can time."""
ACCURACY_METHODS = ("pgm", "fista_b", "fista", "fista_restart", "mfista", "sgp_bb", "sgp_bb1",
                    "sparsa", "douglas_rachford")
NEEDS_NORMAL_SOLVE = ("douglas_rachford",)
"""Methods that need ``(I + t A^T A)^{-1}`` (``L1Problem.normal_solve``)."""
NO_NORMAL_SOLVE_TASKS = ("ct",)
"""Tasks whose measurement has no ``normal_solve`` (CT's projector)."""
STUDY_METHODS = ("fista_b", "sgp_bb", "step_learned", "diag_learned", "step_unrolled",
                 "diag_unrolled", "step_oracle", "diag_oracle")


def runnable_on(task: str, names: Sequence[str]) -> Tuple[List[str], List[str]]:
  """``(runnable, skipped)``: ``names`` split by whether ``task``'s operator has what each
  method needs (``NEEDS_NORMAL_SOLVE`` methods skip ``NO_NORMAL_SOLVE_TASKS``)."""
  skipped = [m for m in names if task in NO_NORMAL_SOLVE_TASKS and m in NEEDS_NORMAL_SOLVE]
  return [m for m in names if m not in skipped], skipped


def check_names(flag: str, names: Sequence[str], allowed: Sequence[str]) -> None:
  """``ValueError`` naming ``--flag`` unless ``names`` is a non-empty subset of ``allowed``."""
  unknown = sorted(set(names) - set(allowed))
  if unknown or not names:
    raise ValueError(f"unknown --{flag} {unknown or '(empty)'}; choose from {tuple(allowed)}")


def label(name: str) -> str:
  return REGISTRY[name].label


def color(name: str) -> str:
  return REGISTRY[name].color
