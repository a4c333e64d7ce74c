"""Smoke test of the speed benchmark (experiments/bench.py) on a tiny setting."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

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


def test_floor_targets_cover_the_first_order_classical_methods_only():
  """The floor (one A + one A^T + prox) is a target for PGM / FISTA-type methods, not for
  Douglas-Rachford (it also solves with (I + t A^T A)) nor for learned ones."""
  from experiments.bench import report  # pylint: disable=import-outside-toplevel
  methods = {m: {"x_floor": 1.2} for m in ("mfista", "douglas_rachford", "step_learned")}
  rows = report.targets({"tasks": {"fourier": {"methods": methods}}})
  assert [row["target"].split(" time/iter")[0] for row in rows] == ["fourier Monotone FISTA"]
  assert rows[0]["met"] is False


@pytest.mark.slow  # 23 s; the accuracy-mode run below keeps the benchmark in the default suite
def test_bench_main_tiny(tmp_path):
  out_dir = str(tmp_path / "bench")
  # A subprocess, as a user runs it (and because the benchmark and the experiments define
  # absl flags of the same names, which cannot live in one process).
  argv = ["--size=32", "--tasks=inpainting", "--methods=pgm,fista_b,step_learned,douglas_rachford",
          "--batch_sizes=1,2", "--iters=4", "--batch_iters=2", "--repeats=3",
          f"--out_dir={out_dir}"]
  proc = subprocess.run([sys.executable, "-m", "experiments.bench", *argv], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]

  path = os.path.join(out_dir, "bench.json")
  assert os.path.exists(path)
  assert os.path.exists(os.path.join(out_dir, "bench.md"))
  with open(path) as f:
    report = json.load(f)

  task = report["tasks"]["inpainting"]
  assert set(task["methods"]) == {"pgm", "fista_b", "step_learned", "douglas_rachford"}
  assert report["targets"], "no targets reported"
  assert not any("Douglas-Rachford time/iter" in row["target"] for row in report["targets"])
  assert "x_floor" in task["methods"]["douglas_rachford"]
  assert task["batch"]["sizes"] == [1, 2]
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


def test_bench_accuracy_tiny(tmp_path):
  """--mode=accuracy on 32 px Fourier problems: structure and invariants, no timing claims."""
  out_dir = str(tmp_path / "tta")
  # A second policy source (a copy of the shipped Fourier policy), with mode, budget and hand-off
  # spelled out (``source:mode:budget:handoff``), beside the shipped one at the same budget (its
  # manifest's own is 0: Douglas-Rachford alone).
  mine = tmp_path / "mine"
  mine.mkdir()
  for ext in (".json", ".msgpack"):
    shutil.copy(os.path.join(ROOT, "jsgp", "pretrained_data", "fourier" + ext), mine)
  argv = ["--mode=accuracy", "--size=32", "--tasks=fourier", "--images=1", "--tta_iters=200",
          "--repeats=5", "--gaps=1e-2,1e-4", "--accuracy_methods=pgm,fista_b", "--peers",
          f"--policy=pretrained:safeguarded:2,{mine}:safeguarded:2:douglas_rachford",
          "--scico_python=/nonexistent/python", f"--out_dir={out_dir}"]
  proc = subprocess.run([sys.executable, "-m", "experiments.bench", *argv], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("bench.json", "bench.md", "tta_fourier.png"):
    assert os.path.getsize(os.path.join(out_dir, name)) > 0, name
  with open(os.path.join(out_dir, "bench.json")) as f:
    report = json.load(f)
  assert "scico" in report["missing_peers"]  # reported, not a failure
  task = report["tasks"]["fourier"]
  assert {"pgm", "fista_b", "fista_bt", "drs_policy", "drs_policy_2"} <= set(task["labels"])
  assert "(mine, H=2 -> DR)" in task["labels"]["drs_policy_2"]
  for target in task["targets"].values():  # both sources: the same weights, the same iterations
    row = target["per_image"][0]["methods"]
    assert row["drs_policy"]["iters"] == row["drs_policy_2"]["iters"]
    assert set(target["policy_speedups"]) == {"drs_policy", "drs_policy_2"}
    classical = [row[c]["seconds"] for c in ("pgm", "fista_b") if row[c]["iters"] is not None]
    for key, (speedup,) in target["policy_speedups"].items():  # each source's own seconds
      if row[key]["iters"] is None or not classical:
        assert speedup is None, key
      else:
        assert speedup == min(classical) / row[key]["seconds"], key
  for ref in task["references"]:
    assert ref["residual"] <= 1e-10 and ref["F"] > 0
  coarse, fine = task["targets"]["gap 1e-02"], task["targets"]["gap 1e-04"]
  reached = 0
  for c in task["labels"]:
    for row_c, row_f in zip(coarse["per_image"], fine["per_image"]):
      k_c, k_f = row_c["methods"][c]["iters"], row_f["methods"][c]["iters"]
      if k_f is not None:
        assert k_c is not None and k_f >= k_c, (c, k_c, k_f)
      for gap, row in ((1e-2, row_c), (1e-4, row_f)):
        e = row["methods"][c]
        if e["iters"] is not None:
          reached += 1
          assert e["gap"] <= 2 * gap, (c, gap, e)  # the returned x_k, verified in float64
          assert e["seconds"] > 0 and math.isfinite(e["ratio"])
    for row in coarse["per_image"] + fine["per_image"]:
      assert row["best"] is None or row["methods"][row["best"]]["iters"] is not None
  assert reached > 0
  # the paper's tables: NMSE after 10 and 20 iterations, per image and as medians
  assert task["nmse_at"]["k"] == [10, 20]
  for c in task["labels"]:
    assert all(math.isfinite(v) for v in task["nmse_at"]["median"][c]), c
    assert len(task["nmse_at"]["per_image"][c]) == 1
  # a target no contender reached within the cap has no ratio (NaN), never an error
  assert report["targets"] and all(not r["met"] or r["value"] >= 1.3 for r in report["targets"])
  with open(os.path.join(out_dir, "bench.md")) as f:
    text = f.read()
  assert "PASS" in text or "MISS" in text
  assert "NMSE (dB) after k iterations" in text
  assert "(mine, H=2 -> DR) speedup at gap 1e-02" in text


def test_reference_cache_is_used_also_when_the_reference_stopped_at_its_cap(tmp_path):
  """A cached float64 reference is read back, converged or stopped at ``max_iter`` (its key holds
  both settings, so a rerun would compute the same); another setting is another file."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from experiments.bench import reference  # pylint: disable=import-outside-toplevel
  from jsgp.data import load_images  # pylint: disable=import-outside-toplevel
  from jsgp.problems import Task, simulate  # pylint: disable=import-outside-toplevel
  image = jax.numpy.asarray(load_images(None, "test", 16, n=1)[0])
  problem = simulate(Task("inpainting", (16, 16)), image, jax.random.PRNGKey(0))
  cache = str(tmp_path / "refs")
  for tol, max_iter in ((1e-30, 100), (1e-6, 5000)):  # stops at the cap; converges
    description = {"case": "tiny", "tol": tol, "max_iter": max_iter}
    first = reference.reference(problem, description, cache, tol, max_iter)
    assert not first.cached and (first.iterations >= max_iter) == (first.residual > tol)
    again = reference.reference(problem, description, cache, tol, max_iter)
    assert again.cached and again.F == first.F and np.array_equal(again.x, first.x)
  assert len(os.listdir(cache)) == 2
