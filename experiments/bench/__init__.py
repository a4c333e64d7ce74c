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
5. time-to-accuracy: iterations until the NMSE is within ``--tta_db`` dB of the converged value
   (FISTA, ``--converged_iters`` iterations); seconds = iterations x the measured time per
   iteration of (1) (which runs without the per-iteration NMSE bookkeeping);
6. ``--peers``: jaxopt's accelerated ProximalGradient (FISTA, fixed step 1/L) on the same problem,
   when jaxopt is importable (it is not a dependency of this project).

Writes ``--out_dir``/bench.json and bench.md and prints the Markdown tables.

Learned policies: without ``--checkpoint_dir`` the network is freshly initialised (fixed key).
Its last layer starts at zero, so it outputs the 1/L step: the cost per iteration is the real one,
but the time-to-accuracy of "step"/"diag" is that of an UNTRAINED policy.

Layout: ``config`` (flags and ``--quick``), ``timing`` (interleaved rounds; the timed functions),
``measure`` (one task: solves, floor, parts, time-to-accuracy, batches), ``report`` (targets,
Markdown); :func:`run_bench` ties them together.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import time
from typing import Any, Dict, List

import jax

from experiments.bench.config import BenchConfig
from experiments.bench.measure import bench_task, ct_available
from experiments.bench.report import environment, targets, to_markdown
from experiments.bench.timing import jaxopt_fn, loadavg
from experiments.report import write_json


def run_bench(cfg: BenchConfig) -> Dict[str, Any]:
  """Benchmark every task of ``cfg``; print and write ``bench.json`` / ``bench.md``."""
  cfg.validate()
  if cfg.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  started = time.perf_counter()
  env = environment()
  env["dtype"] = cfg.dtype
  notes: List[str] = []
  print(f"device {env['device']} ({env['backend']}, {env['cpu']}, {env['cpu_count']} cores), "
        f"jax {env['jax']}, dtype {cfg.dtype}, load {loadavg()}", flush=True)
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
  markdown = to_markdown(report)
  write_json(os.path.join(cfg.out_dir, "bench.json"), report)
  with open(os.path.join(cfg.out_dir, "bench.md"), "w") as f:
    f.write(markdown)
  print("\n" + markdown)
  print(f"wrote {os.path.join(cfg.out_dir, 'bench.json')} and bench.md "
        f"({report['wall_s']:.0f} s)")
  return report
