"""The configuration of the paper's protocol (``ProtocolConfig``): every setting of a run, its
command-line flag (``experiments.cli``), its validation, and what follows from it (the training
task, the test cases, the training configurations, the checkpoint directories)."""
from __future__ import annotations

import dataclasses
import os
from typing import List, NamedTuple, Tuple

from experiments import methods
from experiments.cli import option
from jsgp import nets, training
from jsgp.operators import PATTERNS
from jsgp.problems import TASKS, Task


class Case(NamedTuple):
  name: str
  task: Task


POSITIVE_INTS = ("image_size", "num_stages", "steps_per_stage", "batch_size", "learned_iters",
                 "fista_iters", "converged_iters", "checkpoint_every", "unroll_steps",
                 "unrolled_batch_size", "direct_steps", "reference_iters", "net_features")


@dataclasses.dataclass(frozen=True)
class ProtocolConfig:
  """Settings of one run of the paper's protocol (section 6) for ``task``."""

  task: str = option("fourier", "Measurement setting.", choices=TASKS, flag=False)
  data_dir: str = option("", "Image folder: BSDS500 layout (train/ val/ test/) or, for ct, the "
                         "CT PNG folder. Empty: the embedded scikit-image sample set.")
  image_size: int = option(128, "Images are size x size.")
  n_train: int = option(0, "Training images (0: all of the split).")
  n_test: int = option(0, "Test images (0: all of the split).")
  train_rate: float = option(0.5, "Sampling rate for training (inpainting, fourier).")
  test_rates: Tuple[float, ...] = option((0.3, 0.5, 0.7), "Sampling rates of the test cases.",
                                         item=float)
  noise_sigma: float = option(0.0, "Training measurement noise (0-255 scale).")
  test_noise_sigmas: Tuple[float, ...] = option((), "Extra test cases at train_rate with this "
                                                "noise.", item=float)
  lam: float = option(0.0, "Regularisation weight (0: the paper's value for the task).")
  lam_multipliers: Tuple[float, ...] = option((0.5, 2.0), "Extra test cases with lam times "
                                              "these.", item=float)
  blur_sigma: float = option(2.0, "Gaussian blur std in pixels (deblur).")
  n_views: int = option(144, "CT projection angles for training (ct).")
  pattern: str = option("variable_density", "k-space sampling (fourier): variable_density "
                        "(fully sampled centre; easy) or uniform (small centre; as hard as the "
                        "paper's: FISTA-b@100 at 50 % on BSDS500 256 px -24.73 dB vs the paper's "
                        "-24.84), lines, radial.", choices=PATTERNS)
  test_n_views: Tuple[int, ...] = option((144, 45), "CT test cases (ct).", item=int)
  num_stages: int = option(20, "K: learned iterations (cumulative training stages).")
  steps_per_stage: int = option(150, "Optimiser steps per stage.")
  batch_size: int = option(8, "Training minibatch size.")
  learning_rate: float = option(1e-3, "Adam learning rate.")
  net_features: int = option(8, "U-Net channels at the top level (64: paper size).")
  net_depth: int = option(3, "U-Net poolings.")
  max_log_scale: float = option(7.0, "Bound on the network's log stepsize multiplier.")
  direct_steps: int = option(1000, "Training steps of the direct-mapping U-Net.")
  reference_iters: int = option(1200, "FISTA iterations for the training targets x*.")
  train_target: str = option(
      "solution", "What the training losses (greedy eq. 7 and unrolled) measure iterates "
      "against: x*, the converged solution (the paper), or the original image, the quantity the "
      "tables report (beyond the paper; networks go to <head>_image directories). DRS keeps its "
      "monotone convergence to x* either way.", choices=training.configs.TARGETS)
  seed: int = option(0, "Seed of measurements, initialisation and minibatches.")
  policy: str = option("", "Evaluate DRS with a policy file instead of training: 'pretrained' "
                       "(the shipped jsgp.pretrained policy of the task) or a folder of "
                       "<task>.msgpack/<task>.json files (experiments.train_policy). Its row "
                       "(drs_policy) replaces the learned methods, which are not trained.")
  methods: Tuple[str, ...] = option(methods.PROTOCOL_METHODS, "Methods to run, from "
                                    f"{methods.PROTOCOL_METHODS}.")
  learned_iters: int = option(20, "Iterations reported for the learned methods.")
  fista_iters: int = option(100, "Iterations reported for FISTA-b and SGP-BB.")
  converged_iters: int = option(1200, "Iterations of the converged FISTA reference.")
  out_dir: str = option("out/experiment", "Where results and figures go.")
  checkpoint_dir: str = option("", "Checkpoints (default: <out_dir>/checkpoints).")
  checkpoint_every: int = option(100, "Greedy training saves a checkpoint (the training state) "
                                 "every this many steps and at the end of each stage.")
  reuse_checkpoint: bool = option(False, "Load trained networks from --checkpoint_dir instead of "
                                  "training (error if none matches, or if its training did not "
                                  "finish).")
  allow_partial_checkpoint: bool = option(False, "With --reuse_checkpoint, accept the checkpoint "
                                          "of an unfinished training run.")
  # Unrolled refinement (jsgp.training.unrolled, beyond the paper): after greedy training, train
  # each network further through --unroll_steps DRS iterations. 0 steps: the greedy networks.
  unrolled_train_steps: int = option(0, "Adam steps of unrolled training after the greedy "
                                     "stages (0: greedy only, as the paper).")
  unroll_steps: int = option(10, "T: DRS iterations inside the unrolled loss.")
  unrolled_batch_size: int = option(4, "Minibatch of unrolled training.")
  unrolled_learning_rate: float = option(1e-4, "Adam learning rate of unrolled training.")
  warm_start: bool = option(True, "Start unrolled training from the greedy network (false: from "
                            "scratch).")
  remat: bool = option(True, "jax.checkpoint each unrolled iteration.")
  descent_penalty: float = option(0.0, "Weight of the unrolled loss's hinge on policy directions "
                                  "that are no descent direction.")
  dtype: str = option("float32", "Floating point precision.", choices=("float32", "float64"))
  # Devices: data-parallel training over the devices of one or several hosts (jsgp.distributed).
  num_devices: int = option(1, "Devices to train on, data-parallel (0: every visible device, of "
                            "every host; 1: a single device). --batch_size must be a multiple of "
                            "the device count.")
  coordinator_address: str = option("", "Multi-host: host:port of process 0 (the same on every "
                                    "host).")
  num_processes: int = option(1, "Multi-host: number of hosts (processes); every host runs the "
                              "same command.")
  process_id: int = option(0, "Multi-host: this host's index in [0, num_processes).")

  # --- validation: every value, list entries included, before any work -------------------------
  def validate(self) -> None:
    """``ValueError`` naming the first bad setting's flag."""
    if not 0.0 < self.train_rate <= 1.0:
      raise ValueError(f"--train_rate must be in (0, 1], got {self.train_rate}")
    for rate in self.test_rates:
      if not 0.0 < rate <= 1.0:
        raise ValueError(f"--test_rates must be in (0, 1], got {rate}")
    for sigma in (self.noise_sigma,) + self.test_noise_sigmas:
      if not sigma >= 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    if not self.lam >= 0 or not all(m > 0 for m in self.lam_multipliers):
      raise ValueError("--lam must be >= 0 (0: paper value) and --lam_multipliers > 0")
    if not self.blur_sigma > 0:
      raise ValueError(f"--blur_sigma must be > 0, got {self.blur_sigma}")
    for views in (self.n_views,) + self.test_n_views:
      if views < 1:
        raise ValueError(f"--n_views and --test_n_views must be >= 1, got {views}")
    methods.check_names("methods", self.methods, methods.PROTOCOL_METHODS)
    if self.policy:
      from jsgp import pretrained  # pylint: disable=import-outside-toplevel
      if pretrained.find(self.policy, self.task) is None:
        raise ValueError(f"--policy={self.policy} has no {self.task} policy")
    for name in POSITIVE_INTS:
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.n_train < 0 or self.n_test < 0 or self.net_depth < 0:
      raise ValueError("--n_train, --n_test and --net_depth must be >= 0")
    if (self.unrolled_train_steps < 0 or not self.unrolled_learning_rate > 0
        or not self.descent_penalty >= 0 or not self.learning_rate > 0):
      raise ValueError("--unrolled_train_steps and --descent_penalty must be >= 0 and "
                       "--learning_rate, --unrolled_learning_rate > 0")
    if self.image_size % (2 ** self.net_depth):
      raise ValueError(f"--image_size must be divisible by 2**net_depth = "
                       f"{2 ** self.net_depth}, got {self.image_size}")
    if self.data_dir and not os.path.isdir(self.data_dir):
      raise ValueError(f"--data_dir {self.data_dir} does not exist or is not a directory")
    self.base_task()  # the Task's own checks (name, shape)

  # --- what follows from the settings ----------------------------------------------------------
  def base_task(self) -> Task:
    """The training task."""
    size = (self.image_size, self.image_size)
    lam = self.lam or None  # None: the paper's value (Task.regularization)
    return Task(self.task, size, rate=self.train_rate, noise_sigma=self.noise_sigma, lam=lam,
                blur_sigma=self.blur_sigma, n_views=self.n_views, pattern=self.pattern)

  def test_cases(self) -> List[Case]:
    """The paper's test cases: other rates, noise, lam/2 and 2 lam (or CT view counts)."""
    task = self.base_task()
    cases = []
    if task.name in ("inpainting", "fourier"):
      cases += [Case(f"test-{round(100 * r)}%", task.replace(rate=r)) for r in self.test_rates]
      cases += [Case(f"test-{round(100 * task.rate)}%-noise{s:g}", task.replace(noise_sigma=s))
                for s in self.test_noise_sigmas]
    elif task.name == "ct":
      cases += [Case(f"views-{v}", task.replace(n_views=v)) for v in self.test_n_views]
    else:
      cases.append(Case(f"blur-sigma{task.blur_sigma:g}", task))
    cases += [Case(f"lam-x{m:g}", task.replace(lam=task.regularization * m))
              for m in self.lam_multipliers]
    return cases

  def net(self, head: str) -> nets.UNetConfig:
    return nets.UNetConfig(features=self.net_features, depth=self.net_depth, head=head,
                           max_log_scale=self.max_log_scale)

  def greedy_config(self, head: str) -> training.GreedyConfig:
    return training.GreedyConfig(
        task=self.base_task(), net=self.net(head), num_stages=self.num_stages,
        steps_per_stage=self.steps_per_stage, batch_size=self.batch_size,
        learning_rate=self.learning_rate, seed=self.seed, reference_iters=self.reference_iters,
        target=self.train_target)

  def unrolled_config(self, head: str) -> training.UnrolledConfig:
    warm_start = os.path.abspath(self.greedy_dir(head)) if self.warm_start else ""
    return training.UnrolledConfig(
        task=self.base_task(), net=self.net(head), unroll_steps=self.unroll_steps,
        num_steps=self.unrolled_train_steps, batch_size=self.unrolled_batch_size,
        learning_rate=self.unrolled_learning_rate, seed=self.seed,
        reference_iters=self.reference_iters, remat=self.remat, warm_start=warm_start,
        descent_penalty=self.descent_penalty, target=self.train_target)

  @property
  def checkpoint_root(self) -> str:
    return self.checkpoint_dir or os.path.join(self.out_dir, "checkpoints")

  @property
  def cache_dir(self) -> str:
    return os.path.join(self.checkpoint_root, "cache")

  def greedy_dir(self, head: str) -> str:
    """``<checkpoint_dir>/<head>[_image]``: one directory per greedy loss."""
    suffix = "_image" if self.train_target == "image" else ""
    return os.path.join(self.checkpoint_root, head + suffix)

  def unrolled_dir(self, head: str) -> str:
    """``<checkpoint_dir>/unrolled_<head>[_p<hinge>][_image]``: one directory per loss."""
    suffix = f"_p{self.descent_penalty:g}" if self.descent_penalty else ""
    suffix += "_image" if self.train_target == "image" else ""
    return os.path.join(self.checkpoint_root, f"unrolled_{head}{suffix}")
