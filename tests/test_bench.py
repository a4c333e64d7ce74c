"""Smoke test of the speed benchmark (experiments/bench.py) on a tiny setting."""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _numbers(tree, path=""):
  """(path, value) of every int/float leaf of a JSON tree."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _numbers(value, f"{path}/{key}")
  elif isinstance(tree, list):
    for i, value in enumerate(tree):
      yield from _numbers(value, f"{path}/{i}")
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield path, tree


# Times measured directly (positive on any machine) and quantities derived from differences of
# noisy medians (e.g. a solve minus its init: finite, but possibly <= 0 on a loaded machine).
MEASURED = ("_s", "_ms", "ms_per_iter_with_init", "policy_ms", "floor_ms", "A", "At", "prox",
            "objective")
DERIVED = ("ms_per_iter", "ms_per_iter_min", "x_floor", "x_floor_backtrack_adjusted",
           "x_floor_without_net", "net_share", "value")


def test_bench_main_tiny(tmp_path):
  out_dir = str(tmp_path / "bench")
  # A subprocess, as a user runs it (and because the benchmark and the experiments define
  # absl flags of the same names, which cannot live in one process).
  argv = ["--size=32", "--tasks=inpainting", "--methods=pgm,fista_b,step_learned",
          "--batch_sizes=1,2", "--iters=4", "--batch_iters=2", "--repeats=3",
          "--converged_iters=30", "--tta_iters=30", f"--out_dir={out_dir}"]
  proc = subprocess.run([sys.executable, "-m", "experiments.bench", *argv], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]

  path = os.path.join(out_dir, "bench.json")
  assert os.path.exists(path)
  assert os.path.exists(os.path.join(out_dir, "bench.md"))
  with open(path) as f:
    report = json.load(f)

  task = report["tasks"]["inpainting"]
  assert set(task["methods"]) == {"pgm", "fista_b", "step_learned"}
  assert report["targets"], "no targets reported"
  assert task["batch"]["sizes"] == [1, 2]
  # FISTA runs as long as the converged reference, so it must reach the NMSE target.
  assert task["methods"]["fista_b"]["tta_reached"]
  assert task["methods"]["step_learned"]["net_share"] > 0

  measured = derived = 0
  for where, value in _numbers(report["tasks"]):
    name = where.rsplit("/", 1)[-1]
    if name in MEASURED or name.endswith(MEASURED[:2]) or "/ips/" in where:
      assert math.isfinite(value) and value > 0, f"{where} = {value}"
      measured += 1
    elif name in DERIVED or "largest_over_smallest" in where:
      assert math.isfinite(value), f"{where} = {value}"
      derived += 1
  for row in report["targets"]:
    assert math.isfinite(row["value"]), row
  assert measured > 20 and derived > 10
