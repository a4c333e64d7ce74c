r"""Speed benchmark of the solvers on the current JAX backend: ``python -m experiments.bench``.

For every task (inpainting, partial Fourier, deblurring at ``--size``; sparse-view CT at
``--ct_size`` with ``--ct_views`` views) and every method (PGM, FISTA-b, SGP-BB, DRS with a learned
stepsize, DRS with a learned diagonal) it measures, each solve being ONE compiled call:

1. compile time (``jax.jit(f).lower(...).compile()``) and the median time per iteration of warm
   solves of ``--iters`` iterations (``block_until_ready``; ``--repeats`` >= 3, median);
2. the floor measured in the same run, interleaved with the solves: one ``A`` + one ``A^T`` + one
   soft threshold jitted together (``x <- prox(x - t A^T(A x - y))`` in a ``fori_loop`` of the same
   length), and each method's time per iteration / floor (the median of the paired per-repeat
   ratios); plus the parts (``A``, ``A^T``, prox, objective reductions) timed alone;
3. the network's share of a learned iteration: the policy call alone / the learned iteration;
4. throughput (images x iterations / s) of the vmapped solve over a batch of problems, each with
   its own random operator (``simulate_batch``), at ``--batch_sizes``; ratio largest / batch 1;
5. ``--peers``: jaxopt's accelerated ProximalGradient (FISTA, fixed step 1/L) on the same problem,
   when jaxopt is importable (it is not a dependency of this project).

``--mode=accuracy`` (``accuracy.py``; its tables and figures: ``accuracy_report.py``) measures
time-to-accuracy instead: iterations and wall time (timed solves of exactly the iterations needed)
to relative gaps ``--gaps`` and to the NMSE of ``x*`` + ``--tta_db`` dB, against float64
references, with ``--peers`` (textbook FISTA-bt, jaxopt, SCICO under ``--scico_python``); writes
bench.json, bench.md and tta_<task>.png.

Writes ``--out_dir``/bench.json and bench.md and prints the Markdown tables.

Learned policies: without ``--checkpoint_dir`` the network is freshly initialised (fixed key).
Its last layer starts at zero, so it outputs the 1/L step: the cost per iteration is the real one,
but the time-to-accuracy of "step"/"diag" is that of an UNTRAINED policy.

Layout: ``config`` (flags and ``--quick``), ``timing`` (interleaved rounds; the timed functions),
``measure`` (one task: solves, floor, parts, time-to-accuracy, batches), ``report`` (targets,
Markdown); :func:`run_bench` ties them together. ``--mode=accuracy``: ``accuracy`` (contenders,
measurements, targets; with ``reference`` for x*, ``peers`` and ``scico_peer``) and
``accuracy_report`` (its Markdown tables and figures), tied together by :func:`run_accuracy_mode`.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import time
from typing import Any, Dict

import jax

from experiments.bench.config import BenchConfig
from experiments.bench.measure import bench_task, ct_available
from experiments.bench.report import environment, targets, to_markdown
from experiments.bench.timing import jaxopt_fn, loadavg
from experiments.report import write_json


def run_bench(cfg: BenchConfig) -> Dict[str, Any]:
  """Benchmark every task of ``cfg``; print and write ``bench.json`` / ``bench.md``."""
  cfg.validate()
  if cfg.mode == "accuracy":
    return run_accuracy_mode(cfg)
  if cfg.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  started = time.perf_counter()
  env, notes = _start(cfg, f"dtype {cfg.dtype}")
  if cfg.peers and jaxopt_fn(1) is None:
    notes.append("--peers: jaxopt is not installed; no peer comparison.")
    print(notes[-1])
  if not cfg.checkpoint_dir:
    notes.append("Learned policies are freshly initialised (no --checkpoint_dir): their zero "
                 "last layer outputs the 1/L step, so their cost per iteration is real but "
                 "their time-to-accuracy is that of an untrained policy.")
  tasks = {}
  for name in cfg.tasks:
    if name == "ct":
      why = ct_available()
      if why is not None:
        notes.append(f"CT skipped: the projector does not import ({why}).")
        print(notes[-1])
        continue
    tasks[name] = bench_task(name, cfg, notes)
  report = {
      "environment": env, "config": dataclasses.asdict(cfg), "tasks": tasks, "notes": notes,
      "wall_s": time.perf_counter() - started,
      "finished": datetime.datetime.now().isoformat(timespec="seconds"),
  }
  report["targets"] = targets(report)
  report["load_end"] = loadavg()
  os.makedirs(cfg.out_dir, exist_ok=True)
  return _write(cfg.out_dir, report, to_markdown(report))


def _write(out_dir: str, report: Dict[str, Any], markdown: str) -> Dict[str, Any]:
  """bench.json and bench.md (plus the report's figures, already written) into ``out_dir``."""
  write_json(os.path.join(out_dir, "bench.json"), report)
  with open(os.path.join(out_dir, "bench.md"), "w") as f:
    f.write(markdown)
  print("\n" + markdown)
  figures = "".join(f", {os.path.basename(p)}" for p in report.get("figures", ()))
  print(f"wrote {os.path.join(out_dir, 'bench.json')}, bench.md{figures} "
        f"({report['wall_s']:.0f} s)")
  return report


def _start(cfg: BenchConfig, what: str):
  """The environment record (printed) and an empty list of notes."""
  env = environment()
  env["dtype"] = cfg.dtype
  print(f"device {env['device']} ({env['backend']}, {env['cpu']}, {env['cpu_count']} cores), "
        f"jax {env['jax']}, {what}, load {loadavg()}", flush=True)
  return env, []


def run_accuracy_mode(cfg: BenchConfig) -> Dict[str, Any]:
  """``--mode=accuracy``: float64 references (x64 on for the process; the timed problems stay
  float32), then ``accuracy.run_accuracy``; writes bench.json, bench.md, tta_<task>.png."""
  from experiments.bench import accuracy, accuracy_report  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_enable_x64", True)
  if cfg.dtype != "float32":
    raise ValueError("--mode=accuracy times float32 problems; use --dtype=float32")
  started = time.perf_counter()
  env, notes = _start(cfg, "accuracy mode")
  report = {"environment": env, "config": dataclasses.asdict(cfg), "notes": notes}
  report.update(accuracy.run_accuracy(cfg, env, notes))
  report["wall_s"] = time.perf_counter() - started
  report["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
  report["load_end"] = loadavg()
  os.makedirs(cfg.out_dir, exist_ok=True)
  report["figures"] = accuracy_report.figures(report, cfg.out_dir)
  markdown = (f"Device: {env['device']} ({env['cpu']}, {env['cpu_count']} cores); jax "
              f"{env['jax']}; load average at the end {report['load_end']}; wall "
              f"{report['wall_s']:.0f} s.\n" + accuracy_report.markdown(report))
  return _write(cfg.out_dir, report, markdown)
