"""The time-to-accuracy report (``--mode=accuracy``): Markdown tables and figures from the
measurements of ``accuracy.py`` (the ``report`` dict it fills, as written to bench.json)."""
from __future__ import annotations

import os
from typing import List

import numpy as np

from experiments.bench.accuracy import LEARNED
from experiments.bench.timing import median


def _cell(value, spec):
  return "-" if value is None else format(value, spec)


def markdown(report) -> str:
  """Per task, a table method x target: median iterations, seconds, ratio to the fastest, worst
  verified gap (or NMSE), images reaching it; SCICO's table; the targets."""
  cfg = report["config"]
  lines = []
  for name, t in report["tasks"].items():
    refs = t["references"]
    lines += ["", f"### {t['task']}, {t['images']} images (cap {t['cap']} iterations)",
              "", f"References (float64 FISTA + gradient restart): residual <= "
              f"{max(r['residual'] for r in refs):.1e}, {min(r['iterations'] for r in refs)}-"
              f"{max(r['iterations'] for r in refs)} iterations; NMSE* "
              + ", ".join(f"{r['nmse_db']:.2f}" for r in refs) + " dB.", ""]
    targets = list(t["targets"])
    lines += [f"gap = {t.get('gap', '(F_k - F*) / F*')}", ""]
    lines.append("| method | " + " | ".join(
        f"{tg}: its | s | x best | verified" for tg in targets) + " |")
    lines.append("|---|" + "---|---|---|---|" * len(targets))
    for c, label in t["labels"].items():
      cells = []
      for tg in targets:
        e = t["targets"][tg]["summary"][c]
        verified = e.get("nmse_db") if tg.startswith("NMSE") else e.get("worst_gap")
        spec = ".2f" if tg.startswith("NMSE") else ".1e"
        reached = "" if e["reached"] == t["images"] else f" ({e['reached']}/{t['images']})"
        cells.append(f"{_cell(e['iters'], '.0f')}{reached} | {_cell(e['seconds'], '.4f')} | "
                     f"{_cell(e['ratio'], '.2f')} | {_cell(verified, spec)}")
      lines.append(f"| {label} | " + " | ".join(cells) + " |")
    nmse_at = t.get("nmse_at")
    if nmse_at:
      lines += ["", "NMSE (dB) after k iterations, median over images (the paper's tables):", "",
                "| method | " + " | ".join(f"k = {k}" for k in nmse_at["k"]) + " |",
                "|---|" + "---|" * len(nmse_at["k"])]
      lines += [f"| {label} | " + " | ".join(_cell(v, ".2f") for v in nmse_at["median"][c]) + " |"
                for c, label in t["labels"].items()]
      lines.append("")
    for tg in targets:
      for c, speedups in t["targets"][tg].get("policy_speedups", {}).items():
        name = "learned" if c == LEARNED else t["labels"][c]
        cells = ", ".join("-" if v is None else f"{v:.2f}" for v in speedups)
        lines.append(f"- {name} speedup at {tg} (fastest jsgp classical seconds / learned "
                     f"seconds, per image): {cells}")
    scico = t.get("scico")
    if scico and "error" not in scico:
      lines += ["", f"SCICO {scico['versions']['scico']} (jax {scico['versions']['jax']}, its own "
                "process): median iterations, seconds, SCICO / jsgp's fastest timed in that "
                "process, worst verified gap.", "",
                "| SCICO AcceleratedPGM | " + " | ".join(
                    f"{tg}: its | s | / jsgp | verified" for tg in targets) + " |",
                "|---|" + "---|---|---|---|" * len(targets)]
      for rule in scico["rules"]:
        cells = []
        for tg in targets:
          hits = [row["rules"][rule] for row in scico["targets"][tg]["per_image"]
                  if row["rules"][rule]["iters"] is not None]
          if len(hits) < t["images"]:
            cells.append(f"- ({len(hits)}/{t['images']}) | - | - | -")
            continue
          over = [h["over_jsgp"] for h in hits if h["over_jsgp"] is not None]
          verified = (median([h["nmse_db"] for h in hits]) if tg.startswith("NMSE")
                      else max(h["gap"] for h in hits))
          cells.append(f"{median([h['iters'] for h in hits]):.0f} | "
                       f"{median([h['seconds'] for h in hits]):.4f} | "
                       f"{_cell(median(over) if over else None, '.2f')} | "
                       f"{format(verified, '.2f' if tg.startswith('NMSE') else '.1e')}")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    elif scico:
      lines += ["", f"SCICO failed: {scico['error'][-300:]}"]
  if report.get("targets"):
    lines += ["", "Targets (median over images of the fastest peer's seconds / jsgp's fastest; "
              "SCICO against jsgp timed in its process):", ""]
    for row in report["targets"]:
      lines.append(f"- {'PASS' if row['met'] else 'MISS'} {row['target']}: {row['value']:.2f} "
                   f"(per image {', '.join(f'{v:.2f}' for v in row['per_image'])})")
  lines += ["", "Notes:", "",
            "- its: first iteration k with the gap of its task's table (above; (F_k - F*) / F*, "
            "or normalised by F_0 - F* for deblurring and CT) <= target (F in float64 from a fresh "
            "residual) or NMSE_k <= NMSE(x*) + dB, from an instrumented run; s: median over "
            f"{cfg['repeats']} interleaved rounds of a solve of exactly k iterations (one compiled "
            "call, compile excluded; SCICO: solver.solve(), a Python loop); x best: median over "
            "images of the ratio to the fastest contender of that image and target (paired per "
            "round); verified: the worst over images of the gap of the returned x_k recomputed "
            "in float64 (NMSE: median NMSE of x_k); '-': not reached within the cap on every "
            "image (n/N: images reaching it)."]
  lines += [f"- {note}" for note in report["notes"]]
  return "\n".join(lines) + "\n"


def figures(report, out_dir: str) -> List[str]:
  """One PNG per task: median relative gap vs seconds, log-log, one curve per contender."""
  from experiments.report import figure  # pylint: disable=import-outside-toplevel
  paths = []
  for name, t in report["tasks"].items():
    path = os.path.join(out_dir, f"tta_{name}.png")
    curves = [(t["labels"][c], cv) for c, cv in t["curves"].items()]
    scico = t.get("scico") or {}
    curves += [(f"SCICO APGM {r}", cv) for r, cv in scico.get("curves", {}).items()]
    with figure(path, size=(7, 4.5), title=f"{name} {report['config']['size']} px") as (ax,):
      for label, cv in curves:
        if cv["seconds"] is None:
          continue
        gap = np.maximum(np.asarray(cv["gap"]), 1e-16)
        ax.loglog(cv["seconds"], gap, label=label)
      for g in report["config"]["gaps"]:
        ax.axhline(g, color="gray", ls=":", lw=0.8)
      ax.set_xlabel("seconds (iteration k x measured seconds per iteration of its timed run)")
      ax.set_ylabel("median relative gap (F_k - F*) / F*")
      ax.legend(fontsize=7)
    paths.append(path)
  return paths
