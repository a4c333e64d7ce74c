"""Greedy vs unrolled training of the stepsize / diagonal network, against the greedy oracle.

  python -m experiments.unrolled --flagfile=experiments/configs/unrolled_inpainting.flags

Trains the step and diag networks greedily (the paper's Algorithm 2; the protocol flags of
``experiments.common``), then trains each again through ``--unroll_steps`` DRS iterations
(``jsgp.unrolled``), warm-started from the greedy network or from scratch (``--warm_start``).
On the held-out images at the training rate it reports NMSE (dB, vs the original image) and the
distance to ``x*`` at ``--report_iters`` for FISTA-b, SGP-BB, greedy-learned, unrolled-learned and
the greedy oracle (the grid stepsize / diagonal landing closest to ``x*`` at every iteration:
the ceiling of greedy training), each learned method with its training cost; and the compiled
peak memory of one unrolled gradient for ``--memory_unroll_steps`` with and without remat.
Writes ``results.json``, ``results.md`` and ``nmse_vs_iteration.png`` to ``--out_dir``.
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from experiments import common
from jsgp import policies, train, unrolled
from jsgp.problems import simulate_batch
from jsgp.metrics import nmse_db
from jsgp.solvers import DRS, FISTA, SGP

flags.DEFINE_enum("task", "inpainting", ["inpainting", "fourier"], "Measurement setting.")
flags.DEFINE_list("report_iters", ["1", "2", "5", "10", "20"], "Iterations to report.")
flags.DEFINE_list("memory_unroll_steps", ["5", "10", "20"], "T values for the memory table "
                  "(empty: skip it).")
flags.DEFINE_integer("oracle_grid", 141, "Points of the oracle's log-stepsize grid over "
                     "[-max_log_scale, max_log_scale].")

FLAGS = flags.FLAGS
# The unrolled-training flags live in experiments.common (the protocol can refine its networks
# the same way). This comparison needs --unrolled_train_steps >= 1 (the flagfiles set 150).

ROWS = ("fista_b", "sgp_bb", "greedy_step", "greedy_diag", "unrolled_step", "unrolled_diag",
        "oracle_step", "oracle_diag")
LABELS = {"fista_b": "FISTA-b", "sgp_bb": "SGP-BB", "greedy_step": "Step-learned, greedy",
          "greedy_diag": "Diag-learned, greedy", "unrolled_step": "Step-learned, unrolled",
          "unrolled_diag": "Diag-learned, unrolled", "oracle_step": "Greedy oracle, step",
          "oracle_diag": "Greedy oracle, diagonal"}


def validate() -> List[int]:
  common.validate_flags(FLAGS.task)
  if FLAGS.unrolled_train_steps < 1:
    raise app.UsageError("--unrolled_train_steps must be >= 1 for this comparison (e.g. "
                         "--flagfile=experiments/configs/unrolled_inpainting.flags sets 150)")
  if FLAGS.oracle_grid < 1:
    raise app.UsageError(f"--oracle_grid must be >= 1, got {FLAGS.oracle_grid}")
  try:
    iters = sorted({int(k) for k in FLAGS.report_iters})
    [int(t) for t in FLAGS.memory_unroll_steps]  # pylint: disable=expression-not-assigned
  except ValueError as err:
    raise app.UsageError(f"--report_iters / --memory_unroll_steps: {err}") from err
  if not iters or iters[0] < 1:
    raise app.UsageError("--report_iters must be positive integers")
  return iters


def curves(method_of, problems, images, x_star, iters: int) -> Dict[str, np.ndarray]:
  """NMSE to the image and distance to ``x*`` (dB) for ``k = 0..iters``: ``(B, iters + 1)``,
  both from one solve per instance. ``method_of(x*)`` gives an instance's method (the oracle
  holds its own ``x*``)."""

  def one(problem, image, solution):
    target = problem.image(solution)

    def measures(x):
      estimate = problem.image(x)
      return jnp.stack([nmse_db(estimate, image), nmse_db(estimate, target)])

    x0 = jnp.zeros(problem.op.in_shape, problem.lipschitz.dtype)
    later = unrolled.trajectory(method_of(solution), problem, x0, iters, remat=False,
                                record=lambda state: measures(state.x))    # (iters, 2)
    return jnp.concatenate([measures(x0)[None], later])

  both = np.asarray(jax.jit(jax.vmap(one))(problems, images, x_star), np.float64)
  return {"nmse": both[..., 0], "to_solution": both[..., 1]}


def memory_table(policies_by_head, problems, x_star) -> List[dict]:
  rows = []
  batch = FLAGS.unrolled_batch_size
  sub = jax.tree_util.tree_map(lambda a: a[:batch], problems)
  for steps in [int(t) for t in FLAGS.memory_unroll_steps]:
    for remat in (True, False):
      policy = policies_by_head["diag"]
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
    lines.append(f"| {LABELS[name]} | " + " | ".join(f"{v:.2f}" for v in row["nmse"])
                 + f" | {cost} |")
  lines += ["", "Distance to x* (dB, 10 log10 ||x_k - x*||^2 / ||x*||^2, image domain):", "",
            f"| Method | {head} |", "|---" * (len(iters) + 1) + "|"]
  for name, row in table.items():
    lines.append(f"| {LABELS[name]} | " + " | ".join(f"{v:.2f}" for v in row["to_solution"])
                 + " |")
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
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for name, c in all_curves.items():
    style = ":" if name.startswith("oracle") else "--" if name.startswith("greedy") else "-"
    for ax, key in zip(axes, ("nmse", "to_solution")):
      ax.plot(c[key].mean(axis=0), style, label=LABELS[name])
  axes[0].set_ylabel("NMSE vs original (dB)")
  axes[1].set_ylabel("distance to x* (dB)")
  for ax in axes:
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  if FLAGS.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  iters = validate()
  task = common.base_task(FLAGS.task)
  out_dir = FLAGS.out_dir
  checkpoint_dir = FLAGS.checkpoint_dir or os.path.join(out_dir, "checkpoints")
  os.makedirs(out_dir, exist_ok=True)
  train_images = common.load_split(FLAGS.task, "train", FLAGS.n_train)
  test_images = common.load_split(FLAGS.task, "test", FLAGS.n_test)
  logging.info("%s: %d training and %d test images of %dx%d on %s", task, len(train_images),
               len(test_images), FLAGS.image_size, FLAGS.image_size, jax.devices()[0].platform)

  greedy, greedy_seconds = common.learned_policies(task, train_images, checkpoint_dir,
                                                   ["step_learned", "diag_learned"])
  unrolled_by_head, unrolled_seconds = common.unrolled_policies(task, train_images,
                                                                checkpoint_dir)

  images = jnp.asarray(test_images)
  problems = simulate_batch(task, images, jax.random.PRNGKey(10_000 + FLAGS.seed))
  x_star = train.converged_solutions(problems, FLAGS.reference_iters)
  grid = policies.log_scale_grid(FLAGS.max_log_scale, FLAGS.oracle_grid)
  methods = {
      "fista_b": lambda xs: FISTA(), "sgp_bb": lambda xs: SGP(),
      "greedy_step": lambda xs: DRS(greedy["step_learned"], branchless=True),
      "greedy_diag": lambda xs: DRS(greedy["diag_learned"], branchless=True),
      "unrolled_step": lambda xs: DRS(unrolled_by_head["step"], branchless=True),
      "unrolled_diag": lambda xs: DRS(unrolled_by_head["diag"], branchless=True),
      "oracle_step": lambda xs: DRS(policies.GreedyOraclePolicy(xs, grid), branchless=True),
      "oracle_diag": lambda xs: DRS(policies.GreedyOraclePolicy(xs, grid, diagonal=True),
                                    branchless=True),
  }
  cost = {"greedy_step": greedy_seconds["step_learned"],
          "greedy_diag": greedy_seconds["diag_learned"],
          "unrolled_step": unrolled_seconds["step"], "unrolled_diag": unrolled_seconds["diag"]}
  all_curves, table = {}, {}
  for name in ROWS:
    start = time.time()
    all_curves[name] = curves(methods[name], problems, images, x_star, max(iters))
    table[name] = {"nmse": [float(all_curves[name]["nmse"][:, k].mean()) for k in iters],
                   "nmse_std": [float(all_curves[name]["nmse"][:, k].std()) for k in iters],
                   "to_solution": [float(all_curves[name]["to_solution"][:, k].mean())
                                   for k in iters],
                   "train_seconds": cost.get(name)}
    logging.info("%-24s NMSE %s  (%.1fs)", LABELS[name],
                 " ".join(f"{v:.2f}" for v in table[name]["nmse"]), time.time() - start)

  memory = memory_table(unrolled_by_head, problems, x_star) if FLAGS.memory_unroll_steps \
      else []
  meta = {"task": FLAGS.task, "rate": task.rate, "size": FLAGS.image_size,
          "n_train": len(train_images), "n_test": len(test_images), "report_iters": iters,
          "unroll_steps": FLAGS.unroll_steps, "warm_start": FLAGS.warm_start,
          "device": str(jax.devices()[0]), "jax": jax.__version__}
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({"meta": meta, "results": table, "memory": memory,
               "curves": {n: {k: v.mean(axis=0).tolist() for k, v in c.items()}
                          for n, c in all_curves.items()}}, f, indent=1)
  plot(os.path.join(out_dir, "nmse_vs_iteration.png"), all_curves,
       f"{FLAGS.task} {task.rate:g}, {len(test_images)} held-out images")
  print(write_markdown(os.path.join(out_dir, "results.md"), meta, table, iters, memory))


if __name__ == "__main__":
  app.run(main)
