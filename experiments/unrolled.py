"""Greedy vs unrolled training of the stepsize / diagonal network, against the greedy oracle.

  python -m experiments.unrolled --flagfile=experiments/configs/unrolled_inpainting.flags

Trains the step and diag networks greedily (the paper's Algorithm 2; the protocol's settings),
then trains each again through ``--unroll_steps`` DRS iterations (``jsgp.training.unrolled``),
warm-started from the greedy network or from scratch (``--warm_start``). On the held-out images
at the training rate it reports NMSE (dB, vs the original image) and the distance to ``x*`` at
``--report_iters`` for FISTA-b, SGP-BB, greedy-learned, unrolled-learned and the greedy oracle
(the grid stepsize / diagonal landing closest to ``x*`` at every iteration: the ceiling of
greedy training), each learned method with its training cost; and the compiled peak memory of
one unrolled gradient for ``--memory_unroll_steps`` with and without remat. Writes
``results.json``, ``results.md`` and ``nmse_vs_iteration.png`` to ``--out_dir``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from experiments import cli, methods, protocol, report
from experiments.cli import option
from experiments.settings import ProtocolConfig
from jsgp import policies, training
from jsgp.metrics import nmse_db
from jsgp.problems import simulate_batch
from jsgp.solvers import run as run_solver
from jsgp.training import unrolled


@dataclasses.dataclass(frozen=True)
class StudyConfig(ProtocolConfig):
  """The protocol's settings plus the study's own; ``unrolled_train_steps`` must be >= 1."""

  task: str = option("inpainting", "Measurement setting.", choices=("inpainting", "fourier"))
  report_iters: Tuple[int, ...] = option((1, 2, 5, 10, 20), "Iterations to report.", item=int)
  memory_unroll_steps: Tuple[int, ...] = option((5, 10, 20), "T values for the memory table "
                                                "(empty: skip it).", item=int)
  oracle_grid: int = option(141, "Points of the oracle's log-stepsize grid over "
                            "[-max_log_scale, max_log_scale].")

  def validate(self) -> None:
    super().validate()
    if self.unrolled_train_steps < 1:
      raise ValueError("--unrolled_train_steps must be >= 1 for this comparison (e.g. "
                       "--flagfile=experiments/configs/unrolled_inpainting.flags sets 150)")
    if self.oracle_grid < 1:
      raise ValueError(f"--oracle_grid must be >= 1, got {self.oracle_grid}")
    if not self.report_iters or min(self.report_iters) < 1:
      raise ValueError("--report_iters must be positive integers")
    if any(t < 1 for t in self.memory_unroll_steps):
      raise ValueError("--memory_unroll_steps must be positive integers")


def curves(method_of, problems, images, x_star, iters: int) -> Dict[str, np.ndarray]:
  """NMSE to the image and distance to ``x*`` (dB) for ``k = 0..iters``: ``(B, iters + 1)``,
  both from one solve per instance, vmapped. ``method_of(x*)`` gives an instance's method (the
  oracle holds its own ``x*``), so the method is built inside the vmap (in its vmap form)."""

  def measures(problem, image, solution, x):
    estimate = problem.image(x)
    return jnp.stack([nmse_db(estimate, image), nmse_db(estimate, problem.image(solution))])

  def one(problem, image, solution):
    x0 = problem.zeros()
    later = run_solver(method_of(solution), problem, x0, iters, unroll=True, remat=False,
                record=lambda p, s: measures(p, image, solution, s.x)).trace   # (iters, 2)
    return jnp.concatenate([measures(problem, image, solution, x0)[None], later])

  both = np.asarray(jax.jit(jax.vmap(one))(problems, images, x_star), np.float64)
  return {"nmse": both[..., 0], "to_solution": both[..., 1]}


def memory_table(cfg: StudyConfig, policy, problems, x_star) -> List[dict]:
  rows = []
  batch = cfg.unrolled_batch_size
  sub = jax.tree_util.tree_map(lambda a: a[:batch], problems)
  for steps in cfg.memory_unroll_steps:
    for remat in (True, False):
      start = time.time()
      mem = unrolled.loss_memory(policy.config, policy.variables, sub, x_star[:batch], steps,
                                 remat)
      rows.append(dict(mem, unroll_steps=steps, remat=remat, head="diag", batch=batch,
                       compile_seconds=time.time() - start))
      logging.info("memory T=%d remat=%s: temp %.1f MiB", steps, remat, mem["temp"] / 2**20)
  return rows


def write_markdown(path: str, meta: dict, table: Dict[str, dict], iters: List[int],
                   memory: List[dict]) -> str:
  head = " | ".join(f"k={k}" for k in iters)
  lines = [f"# {meta['task']} {meta['rate']:g}: greedy vs unrolled training",
           "", f"{meta['n_test']} held-out images, {meta['size']}x{meta['size']}; trained on "
           f"{meta['n_train']}. Mean NMSE (dB) vs the original image:", "",
           f"| Method | {head} | training (s) |", "|---" * (len(iters) + 2) + "|"]
  for name, row in table.items():
    cost = row["train_seconds"]
    cost = "-" if cost is None else f"{cost:.0f}"
    lines.append(f"| {methods.label(name)} | " + " | ".join(f"{v:.2f}" for v in row["nmse"])
                 + f" | {cost} |")
  lines += ["", "Distance to x* (dB, 10 log10 ||x_k - x*||^2 / ||x*||^2, image domain):", "",
            f"| Method | {head} |", "|---" * (len(iters) + 1) + "|"]
  for name, row in table.items():
    lines.append(f"| {methods.label(name)} | "
                 + " | ".join(f"{v:.2f}" for v in row["to_solution"]) + " |")
  lines += ["", "Training column: wall seconds of training, or of loading the checkpoint with "
            "--reuse_checkpoint; an unrolled row counts its own steps only (its warm start's "
            "cost is the greedy row's).", ""]
  if memory:
    lines += [f"Compiled memory of one unrolled value-and-gradient (diag head, batch "
              f"{memory[0]['batch']}):", "", "| T | remat | temp (MiB) | compile (s) |",
              "|---|---|---|---|"]
    for m in memory:
      lines.append(f"| {m['unroll_steps']} | {'yes' if m['remat'] else 'no'} | "
                   f"{m['temp'] / 2**20:.1f} | {m['compile_seconds']:.1f} |")
  text = "\n".join(lines) + "\n"
  with open(path, "w") as f:
    f.write(text)
  return text


def plot(path: str, all_curves: Dict[str, Dict[str, np.ndarray]], title: str) -> None:
  with report.figure(path, 2, (11, 4), title) as axes:
    for name, c in all_curves.items():
      spec = methods.REGISTRY[name]
      style = ":" if spec.kind == "oracle" else "-" if spec.training == "unrolled" else "--"
      for ax, key in zip(axes, ("nmse", "to_solution")):
        ax.plot(c[key].mean(axis=0), style, label=spec.label, color=spec.color)
    axes[0].set_ylabel("NMSE vs original (dB)")
    axes[1].set_ylabel("distance to x* (dB)")
    for ax in axes:
      ax.set_xlabel("iteration")
      ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)


def run(cfg: StudyConfig) -> Dict[str, dict]:
  if cfg.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  task = cfg.base_task()
  iters = sorted(set(cfg.report_iters))
  os.makedirs(cfg.out_dir, exist_ok=True)
  train_images = protocol.load_split(cfg, "train", cfg.n_train)
  test_images = protocol.load_split(cfg, "test", cfg.n_test)
  logging.info("%s: %d training and %d test images of %dx%d on %s", task, len(train_images),
               len(test_images), cfg.image_size, cfg.image_size, jax.devices()[0].platform)

  greedy, greedy_seconds = protocol.trained_policies(cfg, train_images, ("step", "diag"))
  refined, refined_seconds = protocol.trained_policies(cfg, train_images, ("step", "diag"),
                                                       "unrolled")
  policy_of = {"learned": greedy, "unrolled": refined}
  cost = {"learned": greedy_seconds, "unrolled": refined_seconds}

  images = jnp.asarray(test_images)
  problems = simulate_batch(task, images, jax.random.PRNGKey(10_000 + cfg.seed))
  x_star = training.converged_solutions(problems, cfg.reference_iters)
  grid = policies.log_scale_grid(cfg.max_log_scale, cfg.oracle_grid)
  all_curves, table = {}, {}
  for name in methods.STUDY_METHODS:
    spec = methods.REGISTRY[name]
    kind = "unrolled" if spec.training == "unrolled" else "learned"
    if spec.kind == "learned":
      method = spec.solver(policy_of[kind][spec.head]).vmap_variant()
      method_of = lambda xs, method=method: method
    else:
      method_of = lambda xs, spec=spec: spec.solver(x_star=xs, grid=grid)
    start = time.time()
    all_curves[name] = curves(method_of, problems, images, x_star, max(iters))
    table[name] = {
        "nmse": [float(all_curves[name]["nmse"][:, k].mean()) for k in iters],
        "nmse_std": [float(all_curves[name]["nmse"][:, k].std()) for k in iters],
        "to_solution": [float(all_curves[name]["to_solution"][:, k].mean()) for k in iters],
        "train_seconds": cost[kind].get(spec.head) if spec.kind == "learned" else None}
    logging.info("%-28s NMSE %s  (%.1fs)", spec.label,
                 " ".join(f"{v:.2f}" for v in table[name]["nmse"]), time.time() - start)

  memory = memory_table(cfg, refined["diag"], problems, x_star) if cfg.memory_unroll_steps \
      else []
  meta = {"task": cfg.task, "rate": task.rate, "size": cfg.image_size,
          "n_train": len(train_images), "n_test": len(test_images), "report_iters": iters,
          "unroll_steps": cfg.unroll_steps, "warm_start": cfg.warm_start,
          "device": str(jax.devices()[0]), "jax": jax.__version__}
  report.write_json(os.path.join(cfg.out_dir, "results.json"), {
      "meta": meta, "results": table, "memory": memory,
      "curves": {n: {k: v.mean(axis=0).tolist() for k, v in c.items()}
                 for n, c in all_curves.items()}})
  plot(os.path.join(cfg.out_dir, "nmse_vs_iteration.png"), all_curves,
       f"{cfg.task} {task.rate:g}, {len(test_images)} held-out images")
  print(write_markdown(os.path.join(cfg.out_dir, "results.md"), meta, table, iters, memory))
  return table


if __name__ == "__main__":
  cli.run_main(StudyConfig, run)
