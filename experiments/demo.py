"""The first run (``make demo``): the shipped pretrained policies against classical methods, no
training, a few minutes on a 2-core CPU.

  python -m experiments.demo [--size=128] [--tasks=inpainting,fourier] [--images=2]

For each task (partial Fourier with the uniform pattern) and embedded test image (scikit-image
samples that no shipped policy trained on), every method solves the same problem:
FISTA-b, FISTA with the constant step 1/L, monotone FISTA (DRS's hand-off method),
Douglas-Rachford (the fastest classical method measured on these two tasks) and the task's
pretrained solver (``jsgp.pretrained.solver``: DRS with the shipped policy on inpainting;
Douglas-Rachford alone on partial Fourier, where no policy step pays for itself). Printed:
iterations and wall seconds to relative gaps
``(F_k - F*) / F*`` of 1e-3 and 1e-5 (``F*`` from a float64 FISTA-with-restart run to a
fixed-point residual of 1e-10), the ratio to the learned method's seconds, and NMSE at k = 5, 10,
20, 50, 100. Seconds: the median of ``--repeats`` runs of exactly ``k`` iterations (one compiled
``lax.while_loop`` with ``k`` a traced argument, so one compilation per method; compile
excluded), rounds interleaved over the methods. Written to ``--out_dir``: demo.md, demo.json,
``gap_<task>.png`` (median gap against seconds) and ``images_<task>.png``.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", ["inpainting", "fourier"], "Tasks with a shipped policy.")
flags.DEFINE_integer("size", 128, "Image side.")
flags.DEFINE_integer("images", 2, "Embedded test images per task.")
flags.DEFINE_float("rate", 0.5, "Sampling rate (inpainting, fourier).")
flags.DEFINE_integer("cap", 1000, "Iterations of each method's instrumented run (every method "
                     "reaches gap 1e-5 within ~760 on the embedded images at 128 px).")
flags.DEFINE_integer("repeats", 3, "Timed rounds (median).")
flags.DEFINE_string("out_dir", "out/demo", "Where the tables and figures go.")

GAPS = (1e-3, 1e-5)
NMSE_AT = (5, 10, 20, 50, 100)
LEARNED = "learned"


def methods_for(task: str) -> Dict[str, Any]:
  from jsgp import pretrained  # pylint: disable=import-outside-toplevel
  from jsgp.solvers import FISTA, DouglasRachford  # pylint: disable=import-outside-toplevel
  return {"FISTA-b": FISTA(lipschitz0_factor=0.1), "FISTA (1/L)": FISTA(max_backtracks=0),
          "MFISTA": FISTA(max_backtracks=0, monotone=True),
          "Douglas-Rachford": DouglasRachford(), LEARNED: pretrained.solver(task)}


@functools.lru_cache(maxsize=None)
def label(name: str, task: str) -> str:
  """The table / plot label (the shipped solver's, with its mode, budget and hand-off; its
  files are read once per task)."""
  if name != LEARNED:
    return name
  from jsgp import pretrained  # pylint: disable=import-outside-toplevel
  return pretrained.solver_from("pretrained", task)[0]


def k_step_solver(method):
  """``(problem, x0, k) -> x_k``: ``k`` steps of ``method`` (traced ``k``), jitted."""

  def solve_k(problem, x0, k):
    state = method.init(problem, x0)
    _, state = jax.lax.while_loop(lambda c: c[0] < k, lambda c: (c[0] + 1, method.step(
        problem, c[1])), (jnp.int32(0), state))
    return state.x

  return jax.jit(solve_k)


def reference_objective(problem) -> float:
  """``F*`` of ``problem`` in float64 (FISTA with gradient restart to a scaled fixed-point
  residual of 1e-10)."""
  from experiments.bench import reference  # pylint: disable=import-outside-toplevel
  return reference.reference(problem, None, None, 1e-10, 100_000).F


def objective64(problem64, x) -> float:
  from experiments.bench import reference  # pylint: disable=import-outside-toplevel
  return float(reference.objective64(problem64, x))


def run_problem(problem, image, methods, solvers) -> Dict[str, Any]:
  """Every method on one problem: the instrumented run (gaps, NMSE), then the timed rounds of
  ``solvers`` (``k_step_solver`` of each method, built once per task so that each compiles
  once)."""
  from experiments.bench import reference  # pylint: disable=import-outside-toplevel
  from experiments.bench.accuracy import first_reached  # pylint: disable=import-outside-toplevel
  from jsgp.solvers import solve  # pylint: disable=import-outside-toplevel
  p64 = reference.to_float64(problem)
  f_star = reference_objective(problem)
  out = {"F*": f_star, "methods": {}}
  x0 = problem.zeros()
  for name, method in methods.items():
    result = solve(method, problem, x0, max_iter=FLAGS.cap, tol=-1, ground_truth=image)
    objective = np.asarray(result.history.objective, np.float64)
    gaps = (objective - f_star) / f_star
    out["methods"][name] = {
        "gap": gaps, "nmse": np.asarray(result.history.nmse, np.float64),
        "iters": {g: first_reached(gaps, g) for g in GAPS},
        "image_at_20": np.asarray(problem.image(solvers[name](problem, x0, 20)))}
  for g in GAPS:
    times, timed_x = {n: [] for n in methods}, {}
    for _ in range(FLAGS.repeats):
      for name in methods:
        k = out["methods"][name]["iters"][g]
        if k is None:
          continue
        start = time.perf_counter()
        timed_x[name] = jax.block_until_ready(solvers[name](problem, x0, k))
        times[name].append(time.perf_counter() - start)
    for name in methods:
      entry = out["methods"][name]
      entry.setdefault("seconds", {})[g] = float(np.median(times[name])) if times[name] else None
      if name in timed_x:  # the timed run's own iterate, checked in float64
        entry.setdefault("verified", {})[g] = (objective64(p64, timed_x[name]) - f_star) / f_star
  return out


def table(task: str, runs: List[Dict[str, Any]], names) -> List[str]:
  lines = [f"### {task}: {len(runs)} embedded test images, {FLAGS.size} px, rate {FLAGS.rate}",
           "", "Median over images; x learned: seconds / the learned method's seconds (> 1: the "
           "learned method is faster).", "",
           "| method | " + " | ".join(f"gap {g:.0e}: its | s | x learned" for g in GAPS) + " | "
           + " | ".join(f"NMSE@{k}" for k in NMSE_AT) + " |",
           "|---|" + "---|---|---|" * len(GAPS) + "---|" * len(NMSE_AT)]
  for name in names:
    cells = []
    for g in GAPS:
      its = [r["methods"][name]["iters"][g] for r in runs]
      secs = [r["methods"][name]["seconds"][g] for r in runs]
      ratios = [s / r["methods"][LEARNED]["seconds"][g] for s, r in zip(secs, runs)
                if s is not None and r["methods"][LEARNED]["seconds"][g]]
      if any(i is None for i in its):
        cells.append("- | - | -")
        continue
      cells.append(f"{np.median(its):.0f} | {np.median(secs):.3f} | "
                   + (f"{np.median(ratios):.2f}" if len(ratios) == len(runs) else "-"))
    nmse = [f"{np.median([r['methods'][name]['nmse'][k] for r in runs]):.2f}" for k in NMSE_AT]
    lines.append(f"| {label(name, task)} | " + " | ".join(cells) + " | " + " | ".join(nmse)
                 + " |")
  return lines + [""]


def figures(task: str, runs, images, names, out_dir: str) -> List[str]:
  from experiments.report import figure  # pylint: disable=import-outside-toplevel
  gap_path = os.path.join(out_dir, f"gap_{task}.png")
  with figure(gap_path, size=(7, 4.5), title=f"{task}, {FLAGS.size} px, rate {FLAGS.rate}: "
              "median over images") as (ax,):
    for name in names:
      gaps = np.median(np.stack([r["methods"][name]["gap"] for r in runs]), axis=0)
      k5 = [r["methods"][name]["iters"][GAPS[-1]] for r in runs]
      s5 = [r["methods"][name]["seconds"][GAPS[-1]] for r in runs]
      per_iter = np.median([s / k for s, k in zip(s5, k5) if k]) if all(k5) else np.nan
      ks = np.arange(len(gaps))
      ax.loglog(ks[1:] * per_iter, np.maximum(gaps[1:], 1e-12), label=label(name, task))
    for g in GAPS:
      ax.axhline(g, color="gray", ls=":", lw=0.8)
    ax.set_xlabel("seconds (k x the method's measured seconds per iteration to gap 1e-5)")
    ax.set_ylabel("relative gap (F_k - F*) / F*")
    ax.legend(fontsize=7)
  image_path = os.path.join(out_dir, f"images_{task}.png")
  with figure(image_path, ncols=len(names) + 1, size=(3 * (len(names) + 1), 3.4),
              title=f"{task}: after 20 iterations (image 0)") as axes:
    axes[0].imshow(images[0], cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("original", fontsize=8)
    for ax, name in zip(axes[1:], names):
      ax.imshow(np.clip(runs[0]["methods"][name]["image_at_20"], 0, 255), cmap="gray", vmin=0,
                vmax=255)
      ax.set_title(f"{label(name, task)}\nNMSE {runs[0]['methods'][name]['nmse'][20]:.2f} dB",
                   fontsize=7)
    for ax in axes:
      ax.axis("off")
  return [gap_path, image_path]


def main(argv):
  del argv
  from experiments.report import write_json  # pylint: disable=import-outside-toplevel
  from jsgp import pretrained  # pylint: disable=import-outside-toplevel
  from jsgp.data import load_images  # pylint: disable=import-outside-toplevel
  from jsgp.problems import Task, simulate  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_enable_x64", True)  # the float64 references; problems stay float32
  start = time.time()
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  images = load_images(None, "test", FLAGS.size, n=FLAGS.images)
  lines = ["# jsgp demo: pretrained policies vs classical methods (no training)", "",
           f"jax {jax.__version__} on {jax.devices()[0].platform}; load average "
           f"{os.getloadavg()[0]:.1f} at the start.", ""]
  report, paths = {}, []
  for task in FLAGS.tasks:
    if task not in pretrained.available():
      raise app.UsageError(f"no pretrained policy for {task!r}; have {pretrained.available()}")
    methods = methods_for(task)
    solvers = {name: k_step_solver(method) for name, method in methods.items()}
    runs = []
    for i, image in enumerate(images):
      problem = simulate(Task(task, (FLAGS.size, FLAGS.size), rate=FLAGS.rate,
                              pattern="uniform"), jnp.asarray(image), jax.random.PRNGKey(i))
      runs.append(run_problem(problem, jnp.asarray(image), methods, solvers))
      print(f"  {task} image {i}: " + ", ".join(
          f"{label(n, task)} {e['iters'][GAPS[0]]}/{e['iters'][GAPS[1]]} its"
          for n, e in runs[-1]["methods"].items()) + f" to gap {GAPS[0]:.0e}/{GAPS[1]:.0e}",
          flush=True)
    lines += table(task, runs, list(methods))
    print("\n".join(table(task, runs, list(methods))), flush=True)
    paths += figures(task, runs, images, list(methods), FLAGS.out_dir)
    report[task] = [{"F*": r["F*"], "methods": {n: {
        "label": label(n, task), "iters": {f"{g:.0e}": e["iters"][g] for g in GAPS},
        "seconds": {f"{g:.0e}": e["seconds"][g] for g in GAPS},
        "verified_gap": {f"{g:.0e}": e.get("verified", {}).get(g) for g in GAPS},
        "nmse_db": {str(k): float(e["nmse"][k]) for k in NMSE_AT}}
        for n, e in r["methods"].items()}} for r in runs]
  lines.append(f"Wall time of the demo: {time.time() - start:.0f} s.")
  with open(os.path.join(FLAGS.out_dir, "demo.md"), "w") as stream:
    stream.write("\n".join(lines) + "\n")
  write_json(os.path.join(FLAGS.out_dir, "demo.json"), report)
  print(f"\nwrote {FLAGS.out_dir}/demo.md, demo.json, " + ", ".join(
      os.path.basename(p) for p in paths) + f" ({time.time() - start:.0f} s)")


if __name__ == "__main__":
  app.run(main)
