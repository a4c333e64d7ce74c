"""Record held-out time-to-accuracy in the policy manifests, from benchmark results.

  python -m experiments.record_tta out/tta128_r0.3/bench.json out/tta128_r0.5/bench.json ...

Each ``bench.json`` is an accuracy-mode run of ``experiments.bench`` with ``--policy``; for every
task in it that ran the learned contender, the manifest ``<policy_dir>/<task>.json`` gains an
entry under ``held_out`` keyed by the case (rate, noise, lam multiplier, size): per image, the
learned method's iterations and the best jsgp classical method's, and the wall-time speedup
(best classical seconds / learned seconds) at each target, with the learned solver's label (its
mode, budget and hand-off). The weights file and its checksum are
not touched.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict

from experiments.bench.accuracy import LEARNED
from jsgp import pretrained


def case_name(config: Dict[str, Any], task: str) -> str:
  size = config["ct_size"] if task == "ct" else config["size"]
  parts = [f"{size}px"]
  if task in ("inpainting", "fourier"):
    parts.append(f"rate {config['rate']:g}")
  if config.get("noise_sigma"):
    parts.append(f"noise {config['noise_sigma']:g}")
  if config.get("lam_multiplier", 1.0) != 1.0:
    parts.append(f"lam x{config['lam_multiplier']:g}")
  return ", ".join(parts)


def summarize(task_result: Dict[str, Any]) -> Dict[str, Any]:
  """Per target: the learned method's iterations, the fastest jsgp classical method's (the one
  the benchmark's ``learned_speedup`` divides by: not the other ``--policy`` sources, not the
  peers) and the speedups."""
  families = task_result.get("families", {})
  out = {}
  for target, entry in task_result["targets"].items():
    if entry.get("learned_speedup") is None:
      continue
    learned, best = [], []
    for image in entry["per_image"]:
      methods = image["methods"]
      learned.append(methods[LEARNED].get("iters"))
      classical = {n: m for n, m in methods.items()  # jsgp's classical methods, as the speedup
                   if families.get(n, "jsgp") == "jsgp" and n != LEARNED
                   and m.get("seconds") is not None}
      fastest = min(classical, key=lambda n: classical[n]["seconds"]) if classical else None
      best.append(None if fastest is None else {"method": fastest,
                                                "iters": classical[fastest]["iters"]})
    out[target] = {"learned_iters": learned, "best_classical": best,
                   "wall_speedup": [None if s is None else round(s, 3)
                                    for s in entry["learned_speedup"]]}
  return out


def record(bench_path: str, policy_dir: str = pretrained.DATA_DIR) -> None:
  with open(bench_path) as stream:
    bench = json.load(stream)
  config = bench["config"]
  for task, result in bench["tasks"].items():
    path = os.path.join(policy_dir, f"{task}.json")
    if not os.path.exists(path) or LEARNED not in result.get("labels", {}):
      continue
    with open(path) as stream:
      manifest = json.load(stream)
    held_out = manifest.setdefault("held_out", {})
    held_out[case_name(config, task)] = {
        "images": f"{result['images']} held-out images", "solver": result["labels"][LEARNED],
        "source": os.path.relpath(bench_path), "targets": summarize(result)}
    with open(path, "w") as stream:
      json.dump(manifest, stream, indent=1, sort_keys=True)
    print(f"{path}: held_out[{case_name(config, task)!r}]")


if __name__ == "__main__":
  if len(sys.argv) < 2:
    sys.exit(__doc__)
  for argument in sys.argv[1:]:
    record(argument)
