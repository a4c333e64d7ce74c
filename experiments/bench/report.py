"""The benchmark's report: the environment, the targets met or missed, and the Markdown tables."""
from __future__ import annotations

import math
import os
import platform
from typing import Any, Dict, List, Optional

import jax

from experiments import methods as registry

# Targets: a classical iteration within 5 % of the fused floor (one A + one A^T + prox); a batch
# of 32 at least 1.5x the images per second of one.
FLOOR_TARGET = 1.05
BATCH_TARGET = 1.5


def environment() -> Dict[str, Any]:
  device = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return {
      "backend": jax.default_backend(), "device": f"{device.platform}: {device.device_kind}",
      "devices": len(jax.devices()), "jax": jax.__version__,
      "jaxlib": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
      "cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
      "x64": bool(jax.config.jax_enable_x64),
  }


def _version(package: str) -> Optional[str]:
  try:
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    return metadata.version(package)
  except Exception:  # pylint: disable=broad-except
    return None


def targets(report) -> List[Dict[str, Any]]:
  """The brief's targets, each with the measured value and whether it is met."""
  rows = []
  for task, t in report["tasks"].items():
    for m, e in t["methods"].items():
      if registry.REGISTRY[m].kind != "classical" or m in registry.NEEDS_NORMAL_SOLVE:
        continue  # the floor is one A + one A^T + prox: not Douglas-Rachford's work
      if "x_floor_backtrack_adjusted" in e:
        value = e["x_floor_backtrack_adjusted"]
        target = (f"{task} {registry.label(m)} time/iter <= {FLOOR_TARGET} x (floor + "
                  f"backtracks x A)  [A/iter = {e['A_per_iter']:.2f}]")
      else:
        value, target = e["x_floor"], f"{task} {registry.label(m)} time/iter <= {FLOOR_TARGET} x floor"
      rows.append({"target": target, "value": value, "met": value <= FLOOR_TARGET})
    batch = t.get("batch")
    if batch and len(batch["sizes"]) > 1 and min(batch["sizes"]) == 1:
      hi = max(batch["sizes"])
      for job, ratio in batch["largest_over_smallest"].items():
        label = "floor" if job == "floor" else registry.label(job)
        entry = {"target": f"{task} {label} batch {hi} / batch 1 images x it/s >= {BATCH_TARGET}",
                 "value": ratio, "met": ratio >= BATCH_TARGET}
        if hi != 32:
          entry["note"] = f"largest batch measured is {hi}, not 32"
        rows.append(entry)
  return rows


def _fmt(value, spec=".2f", none="-"):
  if value is None:
    return none
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return format(value, spec)


def to_markdown(report) -> str:
  env, cfg = report["environment"], report["config"]
  lines = [
      f"Device: {env['device']} ({env['cpu']}, {env['cpu_count']} cores); jax {env['jax']}, "
      f"jaxlib {env['jaxlib']}; dtype {env['dtype']}; net {cfg['net']}; "
      f"{'quick' if cfg['quick'] else 'full'} run, {cfg['repeats']} repeats (median); "
      f"load average at the end {report['load_end']}; wall {report['wall_s']:.0f} s.",
      "",
      "| task | method | compile s | ms/iter | x floor | A/iter (mean bt) | net share | "
      "(iter-net)/floor |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for task, t in report["tasks"].items():
    lines.append(f"| {task} | floor (A+At+prox) | {t['floor_compile_s']:.2f} | "
                 f"{t['floor_ms']:.3f} | 1.00 | 1 | - | - |")
    for m, e in t["methods"].items():
      x_floor = _fmt(e["x_floor"])
      if "x_floor_backtrack_adjusted" in e:
        x_floor += f" ({e['x_floor_backtrack_adjusted']:.2f} bt-adj.)"
      lines.append(
          f"| {task} | {e['label']} | {e['compile_s']:.2f} | {e['ms_per_iter']:.3f} | {x_floor} | "
          f"{_fmt(e.get('A_per_iter'))} ({e['mean_backtracks']:.2f}) | "
          f"{_fmt(e.get('net_share'))} | {_fmt(e.get('x_floor_without_net'))} |")
  if any(t.get("parts_ms") for t in report["tasks"].values()):
    lines += ["", "Parts alone (ms per application): A, A^T, prox (one fused elementwise pass), "
              "objective (0.5||r||^2 + lam||x||_1).", "",
              "| task | floor | A | At | prox | objective | A+At+prox |", "|---|---|---|---|---|---|---|"]
    for task, t in report["tasks"].items():
      p = t.get("parts_ms")
      if p:
        lines.append(f"| {task} | {t['floor_ms']:.3f} | {p['A']:.3f} | {p['At']:.3f} | "
                     f"{p['prox']:.3f} | {p['objective']:.3f} | "
                     f"{p['A'] + p['At'] + p['prox']:.3f} |")
  batch_tasks = {k: t["batch"] for k, t in report["tasks"].items() if t.get("batch")}
  if batch_tasks:
    sizes = sorted({b for bt in batch_tasks.values() for b in bt["sizes"]})
    lines += ["", "Vmapped batches: images x iterations / s (each image its own operator); "
              "last column: largest batch / batch 1.", "",
              "| task | method | " + " | ".join(f"B={b}" for b in sizes) + " | ratio |",
              "|---|---|" + "---|" * (len(sizes) + 1)]
    for task, bt in batch_tasks.items():
      for job in bt["ips"][str(bt["sizes"][0])]:
        label = "floor" if job == "floor" else registry.label(job)
        cells = [_fmt(bt["ips"].get(str(b), {}).get(job), ".0f") for b in sizes]
        lines.append(f"| {task} | {label} | " + " | ".join(cells) + " | "
                     f"{bt['largest_over_smallest'][job]:.2f} |")
  grouped = sorted({(task, registry.label(m)) for task, bt in batch_tasks.items()
                     for counts in bt.get("grouped_convolutions", {}).values()
                     for m, c in counts.items() if c})
  if grouped:
    lines += ["", "Grouped convolutions (feature_group_count = batch) in the vmapped programs of: "
              + ", ".join(f"{t} {m}" for t, m in grouped) + ". vmap of lax.cond with a batched "
              "predicate broadcasts every operand of the cond, the network weights and wavelet "
              "filters included, to the batch; XLA:CPU runs the resulting grouped convolutions "
              "far slower than batched ones."]
  peers = [(task, m, t["methods"][m], t.get("jaxopt_x_floor")) for task, t in report["tasks"].items()
           for m in ("fista", "fista_b") if "jaxopt_ms_per_iter" in t["methods"].get(m, {})]
  if peers:
    lines += ["", "Peer: jaxopt.ProximalGradient(acceleration=True, fixed step 1/L) against jsgp's "
              "FISTA, all timed as whole solves (init included) in the same interleaved rounds.",
              "", "| task | jsgp method | jaxopt ms/iter | jaxopt x floor | jsgp ms/iter | "
              "jsgp / jaxopt |", "|---|---|---|---|---|---|"]
    for task, m, e, jaxopt_x_floor in peers:
      lines.append(f"| {task} | {registry.label(m)} | {e['jaxopt_ms_per_iter']:.3f} | "
                   f"{_fmt(jaxopt_x_floor)} | {e['ms_per_iter_with_init']:.3f} | "
                   f"{e['x_jaxopt']:.2f} |")
  if report["targets"]:
    lines += ["", "Targets:", ""]
    for row in report["targets"]:
      note = f" ({row['note']})" if row.get("note") else ""
      lines.append(f"- {'MET   ' if row['met'] else 'MISSED'} {row['target']}: "
                   f"{row['value']:.2f}{note}")
  lines += ["", "Notes:", "",
            "- ms/iter: median over repeats of (warm solve of N iterations - its init alone) / N, "
            "the solve being one compiled call (bench.json also has it with the init included). "
            "x floor: median of the per-repeat ratios to the floor (N fused A + At + soft-threshold "
            "steps in a fori_loop), all timed interleaved in the same run. Batches: the same, "
            "vmapped.",
            "- Time-to-accuracy: `--mode=accuracy` (float64 references, timed solves).",
            "- net share: the policy call alone (network inputs + U-Net + exp) / one learned "
            "iteration."]
  lines += [f"- {note}" for note in report["notes"]]
  return "\n".join(lines) + "\n"


