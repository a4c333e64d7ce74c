"""The paper's experimental protocol (section 6), shared by the four task entry points.

Train the step- and diag-learned networks (greedy, cumulative) and the direct-mapping U-Net on
noiseless measurements at ``--train_rate``; then, on held-out images, run every method on each
test case and write ``results.json``, ``results.md``, ``nmse_vs_iteration_<case>.png`` and
``recovered_<case>.png`` to ``--out_dir``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from jsgp import baselines, data, nets, policies as policies_lib, train
from jsgp.metrics import nmse_db
from jsgp.problems import Task, image_of, simulate_batch
from jsgp.solvers import DRS, FISTA, SGP, solve

METHODS = ("fista_b", "fista_converged", "sgp_bb", "step_learned", "diag_learned", "unet_direct")
LABELS = {"fista_b": "FISTA-b", "fista_converged": "FISTA (converged)", "sgp_bb": "SGP-BB",
          "step_learned": "Step-learned SGP", "diag_learned": "Diag-learned SGP",
          "unet_direct": "U-Net (direct)"}

flags.DEFINE_string("data_dir", "", "Image folder: BSDS500 layout (train/ val/ test/) or, for ct, "
                    "the CT PNG folder. Empty: the embedded scikit-image sample set.")
flags.DEFINE_integer("image_size", 128, "Images are size x size.")
flags.DEFINE_integer("n_train", 0, "Training images (0: all of the split).")
flags.DEFINE_integer("n_test", 0, "Test images (0: all of the split).")
flags.DEFINE_float("train_rate", 0.5, "Sampling rate for training (inpainting, fourier).")
flags.DEFINE_list("test_rates", ["0.3", "0.5", "0.7"], "Sampling rates of the test cases.")
flags.DEFINE_float("noise_sigma", 0.0, "Training measurement noise (0-255 scale).")
flags.DEFINE_list("test_noise_sigmas", [], "Extra test cases at train_rate with this noise.")
flags.DEFINE_float("lam", 0.0, "Regularisation weight (0: the paper's value for the task).")
flags.DEFINE_list("lam_multipliers", ["0.5", "2"], "Extra test cases with lam times these.")
flags.DEFINE_float("blur_sigma", 2.0, "Gaussian blur std in pixels (deblur).")
flags.DEFINE_integer("n_views", 144, "CT projection angles for training (ct).")
flags.DEFINE_list("test_n_views", ["144", "45"], "CT test cases (ct).")
flags.DEFINE_integer("num_stages", 20, "K: learned iterations (cumulative training stages).")
flags.DEFINE_integer("steps_per_stage", 150, "Optimiser steps per stage.")
flags.DEFINE_integer("batch_size", 8, "Training minibatch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("net_features", 8, "U-Net channels at the top level (64: paper size).")
flags.DEFINE_integer("net_depth", 3, "U-Net poolings.")
flags.DEFINE_float("max_log_scale", 7.0, "Bound on the network's log stepsize multiplier.")
flags.DEFINE_integer("direct_steps", 1000, "Training steps of the direct-mapping U-Net.")
flags.DEFINE_integer("reference_iters", 1200, "FISTA iterations for the training targets x*.")
flags.DEFINE_enum("train_target", "solution", ["solution", "image"], "What the training losses "
                  "(greedy eq. 7 and unrolled) measure iterates against: x*, the converged "
                  "solution (the paper), or the original image, the quantity the tables report "
                  "(beyond the paper; networks go to <head>_image directories). DRS keeps its "
                  "monotone convergence to x* either way.")
flags.DEFINE_integer("seed", 0, "Seed of measurements, initialisation and minibatches.")
flags.DEFINE_list("methods", list(METHODS), f"Methods to run, from {METHODS}.")
flags.DEFINE_integer("learned_iters", 20, "Iterations reported for the learned methods.")
flags.DEFINE_integer("fista_iters", 100, "Iterations reported for FISTA-b and SGP-BB.")
flags.DEFINE_integer("converged_iters", 1200, "Iterations of the converged FISTA reference.")
flags.DEFINE_string("out_dir", "out/experiment", "Where results and figures go.")
flags.DEFINE_string("checkpoint_dir", "", "Checkpoints (default: <out_dir>/checkpoints).")
flags.DEFINE_integer("checkpoint_every", 100, "Greedy training saves a checkpoint (the "
                     "training state) every this many steps and at the end of each stage.")
flags.DEFINE_bool("reuse_checkpoint", False, "Load trained networks from --checkpoint_dir "
                  "instead of training (error if none matches).")
# --- Unrolled refinement (jsgp.unrolled, beyond the paper): after greedy training, train each
# network further through --unroll_steps DRS iterations. 0 steps: the paper's greedy networks.
flags.DEFINE_integer("unrolled_train_steps", 0, "Adam steps of unrolled training after the "
                     "greedy stages (0: greedy only, as the paper).")
flags.DEFINE_integer("unroll_steps", 10, "T: DRS iterations inside the unrolled loss.")
flags.DEFINE_integer("unrolled_batch_size", 4, "Minibatch of unrolled training.")
flags.DEFINE_float("unrolled_learning_rate", 1e-4, "Adam learning rate of unrolled training.")
flags.DEFINE_bool("warm_start", True, "Start unrolled training from the greedy network "
                  "(false: from scratch).")
flags.DEFINE_bool("remat", True, "jax.checkpoint each unrolled iteration.")
flags.DEFINE_float("descent_penalty", 0.0, "Weight of the unrolled loss's hinge on policy "
                   "directions that are no descent direction (jsgp.unrolled.unrolled_loss).")
# --- end of the unrolled flags.
flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "Floating point precision.")

# --- Devices: data-parallel training over the devices of one or several hosts (jsgp.distributed).
flags.DEFINE_integer("num_devices", 1, "Devices to train on, data-parallel (0: every visible "
                     "device, of every host; 1: a single device, as without these flags). "
                     "--batch_size must be a multiple of the device count.")
flags.DEFINE_string("coordinator_address", "", "Multi-host: host:port of process 0 (the same "
                    "on every host).")
flags.DEFINE_integer("num_processes", 1, "Multi-host: number of hosts (processes); every host "
                     "runs the same command.")
flags.DEFINE_integer("process_id", 0, "Multi-host: this host's index in [0, num_processes).")
# --- end of the device flags.

FLAGS = flags.FLAGS


class Case(NamedTuple):
  name: str
  task: Task


def _floats(values) -> List[float]:
  try:
    return [float(v) for v in values]
  except ValueError as err:
    raise app.UsageError(f"expected a list of numbers: {err}") from err


def validate_flags(task_name: str) -> None:
  """Clear messages (and exit code 1 through app.UsageError) for bad values."""
  for name in ("train_rate",):
    if not 0.0 < FLAGS[name].value <= 1.0:
      raise app.UsageError(f"--{name} must be in (0, 1], got {FLAGS[name].value}")
  for rate in _floats(FLAGS.test_rates):
    if not 0.0 < rate <= 1.0:
      raise app.UsageError(f"--test_rates must be in (0, 1], got {rate}")
  for sigma in [FLAGS.noise_sigma] + _floats(FLAGS.test_noise_sigmas):
    if sigma < 0:
      raise app.UsageError(f"noise sigma must be >= 0, got {sigma}")
  if FLAGS.lam < 0 or any(m <= 0 for m in _floats(FLAGS.lam_multipliers)):
    raise app.UsageError("--lam must be >= 0 (0: paper value) and --lam_multipliers > 0")
  unknown = set(FLAGS.methods) - set(METHODS)
  if unknown:
    raise app.UsageError(f"unknown --methods {sorted(unknown)}; choose from {METHODS}")
  for name in ("num_stages", "steps_per_stage", "batch_size", "learned_iters", "fista_iters",
               "converged_iters", "image_size", "checkpoint_every", "unroll_steps",
               "unrolled_batch_size"):
    if FLAGS[name].value < 1:
      raise app.UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}")
  if (FLAGS.unrolled_train_steps < 0 or FLAGS.unrolled_learning_rate <= 0
      or FLAGS.descent_penalty < 0):
    raise app.UsageError("--unrolled_train_steps and --descent_penalty must be >= 0 and "
                         "--unrolled_learning_rate > 0")
  if FLAGS.image_size % (2 ** FLAGS.net_depth):
    raise app.UsageError(f"--image_size must be divisible by 2**net_depth = "
                         f"{2 ** FLAGS.net_depth}, got {FLAGS.image_size}")
  if FLAGS.data_dir and not os.path.isdir(FLAGS.data_dir):
    raise app.UsageError(f"--data_dir {FLAGS.data_dir} does not exist or is not a directory")
  if task_name != "ct" and any(d in FLAGS.data_dir for d in ("/ct", "png16")):
    logging.warning("--data_dir looks like CT data for task %s", task_name)


def base_task(task_name: str) -> Task:
  size = (FLAGS.image_size, FLAGS.image_size)
  lam = FLAGS.lam or None  # None: the paper's value (Task.regularization)
  return Task(task_name, size, rate=FLAGS.train_rate, noise_sigma=FLAGS.noise_sigma, lam=lam,
              blur_sigma=FLAGS.blur_sigma, n_views=FLAGS.n_views)


def test_cases(task: Task) -> List[Case]:
  """The paper's test cases: other rates, noise, lam/2 and 2 lam (or CT view counts)."""
  cases = []
  if task.name in ("inpainting", "fourier"):
    cases += [Case(f"test-{round(100 * r)}%", task.replace(rate=r))
              for r in _floats(FLAGS.test_rates)]
    cases += [Case(f"test-{round(100 * task.rate)}%-noise{s:g}", task.replace(noise_sigma=s))
              for s in _floats(FLAGS.test_noise_sigmas)]
  elif task.name == "ct":
    cases += [Case(f"views-{int(v)}", task.replace(n_views=int(v)))
              for v in _floats(FLAGS.test_n_views)]
  else:
    cases.append(Case(f"blur-sigma{task.blur_sigma:g}", task))
  cases += [Case(f"lam-x{m:g}", task.replace(lam=task.regularization * m))
            for m in _floats(FLAGS.lam_multipliers)]
  return cases


def load_split(task_name: str, split: str, n: int) -> np.ndarray:
  n = n or None
  dtype = np.dtype(FLAGS.dtype)
  if task_name == "ct" and FLAGS.data_dir:
    slices = data.load_ct_slices(FLAGS.data_dir, size=FLAGS.image_size, dtype=dtype)
    n_test = min(len(slices) // 4, 5) or 1  # the last quarter (at most 5) are held out
    chosen = slices[:-n_test] if split == "train" else slices[-n_test:]
    return chosen[:n] if n else chosen
  return data.load_images(FLAGS.data_dir or None, split, FLAGS.image_size, n=n, dtype=dtype)


def train_config(task: Task, head: str) -> train.TrainConfig:
  net = nets.UNetConfig(features=FLAGS.net_features, depth=FLAGS.net_depth, head=head,
                        max_log_scale=FLAGS.max_log_scale)
  return train.TrainConfig(task=task, net=net, num_stages=FLAGS.num_stages,
                           steps_per_stage=FLAGS.steps_per_stage, batch_size=FLAGS.batch_size,
                           learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
                           reference_iters=FLAGS.reference_iters, target=FLAGS.train_target)


def greedy_checkpoint_dir(checkpoint_dir: str, head: str) -> str:
  """``<checkpoint_dir>/<head>[_image]``: one directory per greedy loss."""
  return os.path.join(checkpoint_dir, head + ("_image" if FLAGS.train_target == "image" else ""))


def _train_or_load(config, directory: str, train_fn) -> policies_lib.LearnedPolicy:
  """The policy of ``config`` (a ``TrainConfig`` or ``UnrolledConfig``): with
  --reuse_checkpoint loaded from ``directory``, else trained there by ``train_fn(directory)``
  (which resumes from a checkpoint it finds there)."""
  if FLAGS.reuse_checkpoint:
    return train.load_policy(directory, config, config.task.synthesis.in_shape)
  return policies_lib.LearnedPolicy(train_fn(directory).variables, config.net)


def learned_policies(task: Task, train_images: np.ndarray, checkpoint_dir: str,
                     methods: List[str],
                     mesh=None) -> Tuple[Dict[str, object], Dict[str, float]]:
  """Train (or, with --reuse_checkpoint, load) one policy per learned method."""
  out, seconds = {}, {}
  for method, head in (("step_learned", "step"), ("diag_learned", "diag")):
    if method not in methods:
      continue
    config = train_config(task, head)
    start = time.time()
    out[method] = _train_or_load(
        config, greedy_checkpoint_dir(checkpoint_dir, head),
        lambda directory, config=config: train.train(
            config, train_images, checkpoint_dir=directory,
            checkpoint_every=FLAGS.checkpoint_every,
            cache_dir=os.path.join(checkpoint_dir, "cache"), mesh=mesh))
    seconds[method] = time.time() - start
    logging.info("%s ready in %.0fs", LABELS[method], seconds[method])
  return out, seconds


def unrolled_config(task: Task, head: str, warm_start_dir: str) -> train.UnrolledConfig:
  net = nets.UNetConfig(features=FLAGS.net_features, depth=FLAGS.net_depth, head=head,
                        max_log_scale=FLAGS.max_log_scale)
  return train.UnrolledConfig(
      task=task, net=net, unroll_steps=FLAGS.unroll_steps, num_steps=FLAGS.unrolled_train_steps,
      batch_size=FLAGS.unrolled_batch_size, learning_rate=FLAGS.unrolled_learning_rate,
      seed=FLAGS.seed, reference_iters=FLAGS.reference_iters, remat=FLAGS.remat,
      warm_start=os.path.abspath(warm_start_dir) if FLAGS.warm_start else "",
      descent_penalty=FLAGS.descent_penalty, target=FLAGS.train_target)


def unrolled_checkpoint_dir(checkpoint_dir: str, head: str) -> str:
  """``<checkpoint_dir>/unrolled_<head>[_p<hinge>][_image]``: one directory per loss."""
  suffix = f"_p{FLAGS.descent_penalty:g}" if FLAGS.descent_penalty else ""
  suffix += "_image" if FLAGS.train_target == "image" else ""
  return os.path.join(checkpoint_dir, f"unrolled_{head}{suffix}")


def unrolled_policies(task: Task, images: np.ndarray, checkpoint_dir: str,
                      heads=("step", "diag")) -> Tuple[Dict[str, object], Dict[str, float]]:
  """Train (or, with --reuse_checkpoint, load) the unrolled network of each head, warm-started
  from the greedy checkpoint in ``greedy_checkpoint_dir``. Returns policies and seconds."""
  from jsgp import unrolled  # pylint: disable=import-outside-toplevel
  out, seconds = {}, {}
  for head in heads:
    config = unrolled_config(task, head, greedy_checkpoint_dir(checkpoint_dir, head))
    start = time.time()
    out[head] = _train_or_load(
        config, unrolled_checkpoint_dir(checkpoint_dir, head),
        lambda directory, config=config: unrolled.train_unrolled(
            config, images, checkpoint_dir=directory,
            cache_dir=os.path.join(checkpoint_dir, "cache")))
    seconds[head] = time.time() - start
    logging.info("unrolled %s network (T=%d, target %s) ready in %.0fs", head,
                 config.unroll_steps, config.target, seconds[head])
  return out, seconds


class MethodRun(NamedTuple):
  nmse_curve: np.ndarray   # (B, iters + 1)
  x: np.ndarray            # (B, Hc, Wc) at the reported iteration
  seconds: float           # warm wall-clock of the reported solve (whole batch, one jit call)
  compile_seconds: float
  iters: int


def timed_solve(method, problems, max_iter: int):
  """Solve the batch twice through the cached jit: the first call compiles (its extra time is
  reported as compile time), the second is timed warm. Returns (result, run s, compile s)."""
  x0 = jnp.zeros(problems.y.shape[:1] + tuple(problems.op.in_shape), problems.lipschitz.dtype)
  start = time.time()
  jax.block_until_ready(solve(method, problems, x0, max_iter=max_iter))
  first = time.time() - start
  start = time.time()
  result = jax.block_until_ready(solve(method, problems, x0, max_iter=max_iter))
  seconds = time.time() - start
  return result, seconds, max(first - seconds, 0.0)


def filled_curve(nmse: jax.Array) -> np.ndarray:
  """History NMSE ``(B, T)`` with the NaN padding after each instance's stop replaced by its last
  recorded value (the iterate no longer changes once the driver stops)."""
  curve = np.array(nmse, dtype=np.float64)
  for row in curve:
    last = np.flatnonzero(np.isfinite(row))
    if last.size:
      row[last[-1] + 1:] = row[last[-1]]
  return curve


def run_method(method_name: str, solver, problems, images, curve_iters: int,
               report_iters: int) -> MethodRun:
  curve = filled_curve(solve(solver, problems, max_iter=curve_iters, reference=images).history.nmse)
  result, seconds, compile_s = timed_solve(solver, problems, report_iters)
  logging.info("  %-18s NMSE@%d %.2f dB  (%.2fs for the batch, compile %.1fs)",
               LABELS[method_name], report_iters,
               float(np.mean(np.asarray(curve)[:, report_iters])), seconds, compile_s)
  return MethodRun(np.asarray(curve), np.asarray(result.x), seconds, compile_s, report_iters)


def evaluate_case(case: Case, test_images: np.ndarray, solvers: Dict[str, object],
                  direct, key) -> Tuple[Any, Dict[str, "MethodRun"]]:
  images = jnp.asarray(test_images)
  problems = simulate_batch(case.task, images, key)
  curve_iters = max(FLAGS.fista_iters, FLAGS.learned_iters)
  runs: Dict[str, MethodRun] = {}
  for name in FLAGS.methods:
    if name == "fista_converged":  # only its final NMSE matters: one run, compile included
      start = time.time()
      result = jax.block_until_ready(solve(FISTA(), problems, max_iter=FLAGS.converged_iters,
                                           reference=images))
      runs[name] = MethodRun(filled_curve(result.history.nmse), np.asarray(result.x),
                             time.time() - start, float("nan"), FLAGS.converged_iters)
      logging.info("  %-18s NMSE@%d %.2f dB", LABELS[name], FLAGS.converged_iters,
                   float(np.mean(runs[name].nmse_curve[:, -1])))
    elif name == "unet_direct" and direct is not None:
      config, variables = direct
      predict = jax.jit(lambda p: baselines.apply_direct(
          config, variables, jax.vmap(baselines.initial_estimate)(p)))
      jax.block_until_ready(predict(problems))  # compile
      start = time.time()
      predicted = np.asarray(jax.block_until_ready(predict(problems)))
      nmse = np.asarray(nmse_db(jnp.asarray(predicted), images))
      runs[name] = MethodRun(np.repeat(nmse[:, None], curve_iters + 1, axis=1), predicted,
                             time.time() - start, 0.0, 0)
      logging.info("  %-18s NMSE %.2f dB", LABELS[name], float(nmse.mean()))
    elif name in solvers:
      # Learned curves stop at their reported iteration: under vmap the policy's lax.cond is a
      # select, so the network runs every iteration even after DRS has switched it off.
      report = FLAGS.learned_iters if name.endswith("learned") else FLAGS.fista_iters
      curve = report if name.endswith("learned") else curve_iters
      runs[name] = run_method(name, solvers[name], problems, images, curve, report)
  return problems, runs


def summarize(runs: Dict[str, MethodRun]) -> Dict[str, dict]:
  out = {}
  for name, r in runs.items():
    final = r.nmse_curve[:, r.iters] if name != "unet_direct" else r.nmse_curve[:, 0]
    out[name] = {"label": LABELS[name], "iters": r.iters, "nmse_mean": float(final.mean()),
                 "nmse_std": float(final.std()), "seconds": r.seconds,
                 "compile_seconds": None if np.isnan(r.compile_seconds) else r.compile_seconds,
                 "nmse_curve_mean": [float(v) for v in r.nmse_curve.mean(axis=0)]}
  return out


def plot_curves(path: str, case: str, runs: Dict[str, MethodRun]) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, r in runs.items():
    mean = r.nmse_curve.mean(axis=0)
    if name in ("unet_direct", "fista_converged"):
      value = mean[0] if name == "unet_direct" else mean[-1]
      ax.axhline(value, ls="--", lw=1, label=f"{LABELS[name]} ({value:.2f} dB)",
                 color="gray" if name == "fista_converged" else "tab:purple")
    else:
      ax.plot(np.arange(len(mean)), mean, label=LABELS[name])
  ax.set_xlabel("iteration")
  ax.set_ylabel("NMSE (dB)")
  ax.set_title(f"NMSE vs iteration, {case}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_recovered(path: str, case: str, problems, test_images, runs) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  first = jax.tree_util.tree_map(lambda a: a[0], problems)
  panels = [("original", np.asarray(test_images[0])),
            ("input estimate", np.asarray(baselines.initial_estimate(first)))]
  for name, r in runs.items():
    image = r.x[0] if name == "unet_direct" else np.asarray(first.image(jnp.asarray(r.x[0])))
    nmse = float(nmse_db(jnp.asarray(image), jnp.asarray(test_images[0])))
    suffix = "" if name == "unet_direct" else f"@{r.iters}"
    panels.append((f"{LABELS[name]}{suffix}\n{nmse:.2f} dB", image))
  fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3))
  for ax, (title, image) in zip(np.atleast_1d(axes), panels):
    ax.imshow(np.clip(image, 0, np.percentile(test_images[0], 99.9)), cmap="gray")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
  fig.suptitle(case)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_tables(out_dir: str, task: Task, results: Dict[str, Dict[str, dict]],
                 meta: dict) -> str:
  cases = list(results)
  methods = [m for m in FLAGS.methods if any(m in results[c] for c in cases)]
  lines = [f"# {task.name}: NMSE (dB), mean ± std over {meta['n_test']} test images",
           "", f"Trained at {meta['train_case']}; {meta['n_train']} training images, "
           f"{task.image_shape[0]}x{task.image_shape[1]}.", "",
           "| Method | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
  for m in methods:
    cells = []
    for c in cases:
      r = results[c].get(m)
      cells.append("" if r is None else f"{r['nmse_mean']:.2f} ± {r['nmse_std']:.2f}")
    suffix = "" if m == "unet_direct" else f"@{results[cases[0]][m]['iters']}"
    lines.append(f"| {LABELS[m]}{suffix} | " + " | ".join(cells) + " |")
  iterative = [m for m in methods if m not in ("unet_direct", "fista_converged")]
  ks = sorted({k for k in (10, FLAGS.learned_iters) if k <= FLAGS.learned_iters})
  lines += ["", "At equal iterations (the paper's figures compare methods at iteration 10): "
            "mean NMSE (dB) at k = " + ", ".join(map(str, ks)) + ":", "",
            "| Method | " + " | ".join(f"{c} @{k}" for c in cases for k in ks) + " |",
            "|---" * (len(cases) * len(ks) + 1) + "|"]
  for m in iterative:
    lines.append(f"| {LABELS[m]} | " + " | ".join(
        f"{results[c][m]['nmse_curve_mean'][k]:.2f}" if m in results[c] else ""
        for c in cases for k in ks) + " |")
  lines += ["", "Wall-clock (s) of one batched solve over all test images (warm, one jit call; "
            "FISTA (converged): one run including compilation and per-iteration NMSE):",
            "", "| Method | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
  for m in methods:
    lines.append(f"| {LABELS[m]} | " + " | ".join(
        f"{results[c][m]['seconds']:.3f}" if m in results[c] else "" for c in cases) + " |")
  if meta.get("train_seconds"):
    lines += ["", "Training time, or checkpoint loading with --reuse_checkpoint (s): " + ", ".join(
        f"{LABELS[k]} {v:.0f}" for k, v in meta["train_seconds"].items())]
  table = "\n".join(lines) + "\n"
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(table)
  return table


def device_mesh():
  """[devices] Join the other hosts (--num_processes > 1) and build the training mesh; None for
  the single-device default. Must run before anything touches a device."""
  from jsgp import distributed  # pylint: disable=import-outside-toplevel
  try:
    distributed.initialize_multihost(FLAGS.coordinator_address, FLAGS.num_processes,
                                     FLAGS.process_id)
    if FLAGS.num_devices == 1 and FLAGS.num_processes <= 1:
      return None
    mesh = distributed.make_mesh(FLAGS.num_devices)
    distributed.check_batch_divisible(FLAGS.batch_size, mesh)
  except ValueError as err:
    raise app.UsageError(str(err)) from err
  logging.info("data-parallel training on %d devices (%d processes)", mesh.size,
               jax.process_count())
  return mesh


def run_experiment(task_name: str) -> None:
  """The whole protocol for one task, driven by FLAGS."""
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  mesh = device_mesh()  # [devices]
  if FLAGS.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  validate_flags(task_name)
  task = base_task(task_name)
  out_dir = FLAGS.out_dir
  checkpoint_dir = FLAGS.checkpoint_dir or os.path.join(out_dir, "checkpoints")
  os.makedirs(out_dir, exist_ok=True)
  logging.info("jax %s on %s; task %s", jax.__version__, jax.devices()[0].platform, task)

  train_images = load_split(task_name, "train", FLAGS.n_train)
  test_images = load_split(task_name, "test", FLAGS.n_test)
  logging.info("%d training and %d test images of %dx%d", len(train_images), len(test_images),
               FLAGS.image_size, FLAGS.image_size)

  policies, train_seconds = learned_policies(task, train_images, checkpoint_dir, FLAGS.methods,
                                             mesh=mesh)
  if FLAGS.unrolled_train_steps:  # refine the greedy networks through unrolled DRS iterations
    heads = [head for method, head in (("step_learned", "step"), ("diag_learned", "diag"))
             if method in policies]
    refined, seconds = unrolled_policies(task, train_images, checkpoint_dir, heads)
    for head, policy in refined.items():
      policies[f"{head}_learned"] = policy
      train_seconds[f"{head}_learned"] += seconds[head]
  solvers = {"fista_b": FISTA(), "sgp_bb": SGP()}
  solvers.update({name: DRS(policy) for name, policy in policies.items()})

  direct = None
  if "unet_direct" in FLAGS.methods:
    start = time.time()
    dataset = train.make_dataset(train_config(task, "step"), train_images,
                                 os.path.join(checkpoint_dir, "cache"))
    estimates = jax.vmap(baselines.initial_estimate)(dataset.problems)
    targets = image_of(dataset.problems, dataset.x_star)
    config = nets.UNetConfig(features=FLAGS.net_features, depth=FLAGS.net_depth, head="image")
    variables = baselines.train_direct(config, estimates, targets, steps=FLAGS.direct_steps,
                                       batch_size=FLAGS.batch_size,
                                       learning_rate=FLAGS.learning_rate, seed=FLAGS.seed)
    direct = (config, variables)
    train_seconds["unet_direct"] = time.time() - start

  results = {}
  for i, case in enumerate(test_cases(task)):
    logging.info("case %s (%d/%d)", case.name, i + 1, len(test_cases(task)))
    problems, runs = evaluate_case(case, test_images, solvers, direct,
                                   jax.random.PRNGKey(10_000 + FLAGS.seed * 100 + i))
    results[case.name] = summarize(runs)
    safe = case.name.replace("%", "pct")
    plot_curves(os.path.join(out_dir, f"nmse_vs_iteration_{safe}.png"), case.name, runs)
    plot_recovered(os.path.join(out_dir, f"recovered_{safe}.png"), case.name, problems,
                   test_images, runs)

  meta = {"task": dataclasses.asdict(task), "n_train": len(train_images),
          "n_test": len(test_images), "train_case": f"rate {task.rate:g}, noise "
          f"{task.noise_sigma:g}, lam {task.regularization:g}", "train_seconds": train_seconds,
          "device": str(jax.devices()[0]), "jax": jax.__version__, "dtype": FLAGS.dtype,
          "flags": {f.name: f.value for f in FLAGS.flags_by_module_dict().get(__name__, [])}}
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({"meta": meta, "results": results}, f, indent=1)
  print(write_tables(out_dir, task, results, meta))
