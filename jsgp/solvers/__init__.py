"""Solvers: each method is a pytree with pure ``init``/``step``; one driver runs them all."""
from jsgp.solvers.driver import History, Result, check_inputs, run, run_batch, solve, status_name
from jsgp.solvers.protocol import CONVERGED, MAX_ITER, NON_FINITE, Method
from jsgp.solvers.douglas_rachford import DouglasRachford, DouglasRachfordState
from jsgp.solvers.drs import DRS, DRSState
from jsgp.solvers.fista import FISTA, FISTAState
from jsgp.solvers.pgm import PGM, PGMState
from jsgp.solvers.sgp import SGP, SGPState
from jsgp.solvers.sparsa import SpaRSA, SpaRSAState

__all__ = ["History", "Result", "check_inputs", "run", "run_batch", "solve", "status_name",
           "CONVERGED", "MAX_ITER", "NON_FINITE", "Method", "DRS", "DRSState", "DouglasRachford",
           "DouglasRachfordState",
           "FISTA", "FISTAState", "PGM", "PGMState", "SGP", "SGPState", "SpaRSA",
           "SpaRSAState"]
