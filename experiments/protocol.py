"""The paper's experimental protocol (section 6) for one task, driven by a ``ProtocolConfig``.

Train the step- and diag-learned networks (greedy, cumulative; optionally refined by unrolled
training) and the direct-mapping U-Net on noiseless measurements at the training rate, or load
them (``reuse_checkpoint``); then, on held-out images, run every method on each test case and
write ``results.json``, ``results.md``, ``nmse_vs_iteration_<case>.png`` and
``recovered_<case>.png`` to ``out_dir`` (``experiments.report``).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Dict, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, logging

from experiments import methods, report
from experiments.settings import Case, ProtocolConfig
from jsgp import baselines, data, distributed, training
from jsgp.metrics import nmse_db
from jsgp.policies import LearnedPolicy
from jsgp.problems import L1Problem, image_of, simulate_batch
from jsgp.solvers import solve


# ------------------------------------------------------------------------------------------------
# Data and devices.

def load_split(cfg: ProtocolConfig, split: str, n: int) -> np.ndarray:
  """``(N, size, size)`` images of ``split``: BSDS500 / the embedded set, or CT slices (the last
  quarter, at most 5, held out)."""
  n = n or None
  dtype = np.dtype(cfg.dtype)
  if cfg.task == "ct" and cfg.data_dir:
    slices = data.load_ct_slices(cfg.data_dir, size=cfg.image_size, dtype=dtype)
    n_test = min(len(slices) // 4, 5) or 1
    chosen = slices[:-n_test] if split == "train" else slices[-n_test:]
    return chosen[:n] if n else chosen
  return data.load_images(cfg.data_dir or None, split, cfg.image_size, n=n, dtype=dtype)


def device_mesh(cfg: ProtocolConfig):
  """[devices] Join the other hosts (``num_processes > 1``) and build the training mesh; None
  for the single-device default. Must run before anything touches a device."""
  try:
    distributed.initialize_multihost(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
    if cfg.num_devices == 1 and cfg.num_processes <= 1:
      return None
    mesh = distributed.make_mesh(cfg.num_devices)
    distributed.check_batch_divisible(cfg.batch_size, mesh)
  except ValueError as err:
    raise app.UsageError(str(err)) from err
  logging.info("data-parallel training on %d devices (%d processes)", mesh.size,
               jax.process_count())
  return mesh


# ------------------------------------------------------------------------------------------------
# Training, or loading what an earlier run trained.

def trained_policies(cfg: ProtocolConfig, train_images: np.ndarray, heads: Sequence[str],
                     kind: str = "greedy", mesh=None
                     ) -> Tuple[Dict[str, LearnedPolicy], Dict[str, float]]:
  """One policy per head, of ``kind``: ``"greedy"`` (the paper's training) or ``"unrolled"``
  (warm-started from the greedy checkpoint when ``cfg.warm_start``); trained, resuming from a
  checkpoint found in its directory, or with ``reuse_checkpoint`` loaded from there. Returns the
  policies and the seconds each took."""
  out, seconds = {}, {}
  for head in heads:
    start = time.time()
    if kind == "greedy":
      config, directory = cfg.greedy_config(head), cfg.greedy_dir(head)
      train_fn = functools.partial(training.train, checkpoint_every=cfg.checkpoint_every,
                                   mesh=mesh)
    else:
      config, directory = cfg.unrolled_config(head), cfg.unrolled_dir(head)
      train_fn = training.train_unrolled
    if cfg.reuse_checkpoint:
      out[head] = training.load_policy(directory, config,
                                       allow_partial=cfg.allow_partial_checkpoint)
    else:
      result = train_fn(config, train_images, checkpoint_dir=directory, cache_dir=cfg.cache_dir)
      out[head] = LearnedPolicy(result.variables, config.net)
    seconds[head] = time.time() - start
    logging.info("%s %s network ready in %.0fs", kind, head, seconds[head])
  return out, seconds


def train_direct(cfg: ProtocolConfig, train_images: np.ndarray):
  """The direct-mapping U-Net, trained to map each training problem's initial image to its
  converged solution's image: ``(config, variables)``."""
  dataset = training.make_dataset(cfg.greedy_config("step"), train_images, cfg.cache_dir)
  estimates = jax.vmap(L1Problem.initial_image)(dataset.problems)
  targets = image_of(dataset.problems, dataset.x_star)
  config = cfg.net("image")
  variables = baselines.train_direct(config, estimates, targets, steps=cfg.direct_steps,
                                     batch_size=cfg.batch_size,
                                     learning_rate=cfg.learning_rate, seed=cfg.seed)
  return config, variables


# ------------------------------------------------------------------------------------------------
# Evaluation.

class MethodRun(NamedTuple):
  nmse_curve: np.ndarray   # (B, iters + 1)
  x: np.ndarray            # (B, Hc, Wc) at the reported iteration (images for the direct U-Net)
  seconds: float           # warm wall-clock of the reported solve (whole batch, one jit call)
  compile_seconds: float
  iters: int


def timed_solve(method, problems, max_iter: int):
  """Solve the batch twice through the cached jit: the first call compiles (its extra time is
  reported as compile time), the second is timed warm. Returns (result, run s, compile s)."""
  x0 = problems.zeros()
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


def run_solver(name: str, solver, problems, images, curve_iters: int,
               report_iters: int) -> MethodRun:
  """The NMSE curve over ``curve_iters`` and a warm timed solve of ``report_iters``."""
  curve = filled_curve(solve(solver, problems, max_iter=curve_iters,
                             ground_truth=images).history.nmse)
  result, seconds, compile_s = timed_solve(solver, problems, report_iters)
  logging.info("  %-18s NMSE@%d %.2f dB  (%.2fs for the batch, compile %.1fs)",
               methods.label(name), report_iters, float(np.mean(curve[:, report_iters])),
               seconds, compile_s)
  return MethodRun(curve, np.asarray(result.x), seconds, compile_s, report_iters)


def run_converged(problems, images, iters: int) -> MethodRun:
  """The converged reference: only its final NMSE matters, so one run, compile included."""
  start = time.time()
  result = jax.block_until_ready(solve(methods.REGISTRY["fista_converged"].solver(), problems,
                                       max_iter=iters, ground_truth=images))
  run = MethodRun(filled_curve(result.history.nmse), np.asarray(result.x), time.time() - start,
                  float("nan"), iters)
  logging.info("  %-18s NMSE@%d %.2f dB", methods.label("fista_converged"), iters,
               float(np.mean(run.nmse_curve[:, -1])))
  return run


def run_direct(direct, problems, images, curve_iters: int) -> MethodRun:
  """The direct U-Net's prediction from each problem's initial image, timed warm."""
  config, variables = direct
  predict = jax.jit(lambda p: baselines.apply_direct(
      config, variables, jax.vmap(L1Problem.initial_image)(p)))
  jax.block_until_ready(predict(problems))  # compile
  start = time.time()
  predicted = np.asarray(jax.block_until_ready(predict(problems)))
  nmse = np.asarray(nmse_db(jnp.asarray(predicted), images))
  logging.info("  %-18s NMSE %.2f dB", methods.label("unet_direct"), float(nmse.mean()))
  return MethodRun(np.repeat(nmse[:, None], curve_iters + 1, axis=1), predicted,
                   time.time() - start, 0.0, 0)


def evaluate_case(cfg: ProtocolConfig, case: Case, test_images: np.ndarray,
                  solvers: Dict[str, Any], direct, key, run_methods: Sequence[str]
                  ) -> Tuple[Any, Dict[str, MethodRun]]:
  """Every method of ``run_methods`` on the test images measured under ``case``."""
  images = jnp.asarray(test_images)
  problems = simulate_batch(case.task, images, key)
  curve_iters = max(cfg.fista_iters, cfg.learned_iters)
  runs: Dict[str, MethodRun] = {}
  for name in run_methods:
    spec = methods.REGISTRY[name]
    if spec.kind == "reference":
      runs[name] = run_converged(problems, images, cfg.converged_iters)
    elif spec.kind == "direct":
      if direct is not None:
        runs[name] = run_direct(direct, problems, images, curve_iters)
    elif name in solvers:
      # Learned curves stop at their reported iteration: under vmap the policy's lax.cond is a
      # select, so the network runs every iteration even after DRS has switched it off.
      learned = spec.kind == "learned"
      report_iters = cfg.learned_iters if learned else cfg.fista_iters
      runs[name] = run_solver(name, solvers[name], problems, images,
                              report_iters if learned else curve_iters, report_iters)
  return problems, runs


# ------------------------------------------------------------------------------------------------
# The whole protocol.

def run(cfg: ProtocolConfig) -> Dict[str, Dict[str, dict]]:
  """Train (or load), evaluate every test case, write the results; returns them by case."""
  mesh = device_mesh(cfg)  # [devices] before anything touches a device
  if cfg.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  task = cfg.base_task()
  os.makedirs(cfg.out_dir, exist_ok=True)
  logging.info("jax %s on %s; task %s", jax.__version__, jax.devices()[0].platform, task)

  train_images = load_split(cfg, "train", cfg.n_train)
  test_images = load_split(cfg, "test", cfg.n_test)
  logging.info("%d training and %d test images of %dx%d", len(train_images), len(test_images),
               cfg.image_size, cfg.image_size)

  run_methods = list(cfg.methods)
  learned = [n for n in run_methods if methods.REGISTRY[n].kind == "learned"]
  if cfg.policy:  # a policy file replaces the learned methods: nothing is trained for them
    run_methods = [n for n in run_methods if n not in learned] + ["drs_policy"]
    learned = []
  heads = [methods.REGISTRY[n].head for n in learned]
  policies, seconds = trained_policies(cfg, train_images, heads, "greedy", mesh)
  if cfg.unrolled_train_steps and heads:  # refine the greedy networks through unrolled DRS
    refined, refine_seconds = trained_policies(cfg, train_images, heads, "unrolled")
    policies = refined
    seconds = {head: seconds[head] + refine_seconds[head] for head in heads}
  solvers = {n: methods.REGISTRY[n].solver(policies[methods.REGISTRY[n].head]) for n in learned}
  solvers.update({n: methods.REGISTRY[n].solver() for n in run_methods
                  if methods.REGISTRY[n].kind == "classical"})
  train_seconds = {n: seconds[methods.REGISTRY[n].head] for n in learned}
  if cfg.policy:
    from jsgp import pretrained  # pylint: disable=import-outside-toplevel
    policy_label, solvers["drs_policy"] = pretrained.solver_from(cfg.policy, cfg.task)
    logging.info("evaluating %s (no training)", policy_label)

  direct = None
  if "unet_direct" in run_methods:
    start = time.time()
    direct = train_direct(cfg, train_images)
    train_seconds["unet_direct"] = time.time() - start

  results = {}
  cases = cfg.test_cases()
  for i, case in enumerate(cases):
    logging.info("case %s (%d/%d)", case.name, i + 1, len(cases))
    problems, runs = evaluate_case(cfg, case, test_images, solvers, direct,
                                   jax.random.PRNGKey(10_000 + cfg.seed * 100 + i), run_methods)
    results[case.name] = report.summarize(runs)
    safe = case.name.replace("%", "pct")
    report.plot_curves(os.path.join(cfg.out_dir, f"nmse_vs_iteration_{safe}.png"), case.name,
                       runs)
    report.plot_recovered(os.path.join(cfg.out_dir, f"recovered_{safe}.png"), case.name,
                          problems, test_images, runs)

  meta = {"task": dataclasses.asdict(task), "n_train": len(train_images),
          "n_test": len(test_images), "train_case": f"rate {task.rate:g}, noise "
          f"{task.noise_sigma:g}, lam {task.regularization:g}", "train_seconds": train_seconds,
          "device": str(jax.devices()[0]), "jax": jax.__version__, "dtype": cfg.dtype,
          "config": dataclasses.asdict(cfg)}
  report.write_json(os.path.join(cfg.out_dir, "results.json"),
                    {"meta": meta, "results": results})
  print(report.write_tables(cfg.out_dir, task, results, meta, run_methods, cfg.learned_iters))
  return results
