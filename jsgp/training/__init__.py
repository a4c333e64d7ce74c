"""Learning the stepsize / diagonal policy that drives ``jsgp.solvers.DRS``.

  configs     what determines a run (``GreedyConfig``, ``UnrolledConfig``; their kind by name)
  dataset     the training set: measurements, the cached converged solutions ``x*``, iterates
  loop        the training state, optimiser, minibatch sampling and the shared training loop
  checkpoint  orbax checkpoints (state + configuration + kind), loading a trained policy
  files       atomic array files (clear errors on a full disk), locks on directories and caches
  greedy      the paper's greedy cumulative training (eq. 6-9, Algorithm 2)
  unrolled    training through T iterations of the solver itself
"""
from jsgp.training.checkpoint import (CheckpointMismatch, CorruptCheckpoint, PartialCheckpoint,
                                      config_of, load_policy, read_meta)
from jsgp.training.configs import GreedyConfig, UnrolledConfig
from jsgp.training.dataset import Dataset, converged_solutions, make_dataset
from jsgp.training.files import CorruptFile, DirectoryInUse, DiskFull
from jsgp.training.greedy import TrainResult, train
from jsgp.training.loop import TrainState, init_state
from jsgp.training.unrolled import train_unrolled

__all__ = ["CheckpointMismatch", "CorruptCheckpoint", "PartialCheckpoint", "DirectoryInUse",
           "DiskFull", "CorruptFile", "config_of", "load_policy", "read_meta", "GreedyConfig",
           "UnrolledConfig", "Dataset", "converged_solutions", "make_dataset", "TrainResult",
           "train", "TrainState", "init_state", "train_unrolled"]
