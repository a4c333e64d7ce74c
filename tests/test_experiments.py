"""End-to-end smoke tests of the four experiments on tiny configurations; flag errors."""
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import cli, methods, protocol
from experiments.settings import ProtocolConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--image_size=32", "--n_train=2", "--n_test=2", "--num_stages=2", "--steps_per_stage=1",
        "--batch_size=2", "--direct_steps=1", "--reference_iters=10", "--converged_iters=10",
        "--fista_iters=4", "--learned_iters=3", "--net_features=4", "--net_depth=2",
        "--lam_multipliers=2"]
EXPECTED_CASES = {"inpainting": 2, "fourier": 3, "deblur": 2, "ct": 3}


@pytest.mark.slow  # the default suite runs the protocol end to end in the --policy test below
@pytest.mark.parametrize("task", sorted(EXPECTED_CASES))
def test_experiment_writes_finite_results_for_every_method_and_case(task, tmp_path):
  extra = {"inpainting": ["--test_rates=0.5"], "fourier": ["--test_rates=0.5"],
           "deblur": [], "ct": ["--test_n_views=16,8", "--n_views=16"]}[task]
  argv = ["prog", f"--flagfile={ROOT}/experiments/configs/{task}_demo.flags", *TINY, *extra,
          f"--out_dir={tmp_path}"]
  protocol.run(cli.parse(ProtocolConfig, argv, task=task))
  with open(tmp_path / "results.json") as f:
    results = json.load(f)["results"]
  assert len(results) == EXPECTED_CASES[task]
  for case, runs in results.items():
    assert set(runs) == set(methods.PROTOCOL_METHODS), case
    for name, r in runs.items():
      assert math.isfinite(r["nmse_mean"]) and math.isfinite(r["nmse_std"]), (case, name)
      assert r["seconds"] >= 0 and all(math.isfinite(v) for v in r["nmse_curve_mean"])
    safe = case.replace("%", "pct")
    assert os.path.getsize(tmp_path / f"nmse_vs_iteration_{safe}.png") > 1000
    assert os.path.getsize(tmp_path / f"recovered_{safe}.png") > 1000
  table = (tmp_path / "results.md").read_text()
  assert "Step-learned DRS (safeguarded)@3" in table and "FISTA-b@4" in table


def test_policy_flag_evaluates_the_shipped_policy_without_training(tmp_path):
  """``--policy=pretrained``: the learned methods are replaced by DRS with the shipped policy;
  nothing is trained (no checkpoint directory appears)."""
  argv = ["prog", f"--flagfile={ROOT}/experiments/configs/fourier_demo.flags", *TINY,
          "--test_rates=0.5", "--lam_multipliers=", "--pattern=uniform",
          "--methods=fista_b,step_learned,diag_learned", "--policy=pretrained",
          f"--out_dir={tmp_path}"]
  protocol.run(cli.parse(ProtocolConfig, argv, task="fourier"))
  with open(tmp_path / "results.json") as f:
    results = json.load(f)["results"]
  for case, runs in results.items():
    assert set(runs) == {"fista_b", "drs_policy"}, case
    assert math.isfinite(runs["drs_policy"]["nmse_mean"])
  assert not os.path.exists(tmp_path / "checkpoints")
  assert "DRS + policy file" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--policy=/nonexistent/policies"], "/nonexistent/policies' is not a folder"),
    (["--train_rate=1.5"], "train_rate must be in"),
    (["--test_rates=0.3,0"], "test_rates must be in"),
    (["--test_noise_sigmas=-5"], "noise sigma must be >= 0"),
    (["--data_dir=/nonexistent/bsds"], "/nonexistent/bsds does not exist"),
    (["--methods=fista_b,magic"], "unknown --methods"),
    (["--test_n_views=144,0"], "--test_n_views must be >= 1"),
    (["--no_such_flag=1"], "no_such_flag"),
])
def test_bad_flags_exit_nonzero_with_a_clear_message(args, message):
  proc = subprocess.run([sys.executable, "-m", "experiments.fourier", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr + proc.stdout


@pytest.mark.slow  # 30 s: a subprocess with its own compilations
def test_policy_iterations_prints_a_row_per_method(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.policy_iterations", "--tasks=inpainting",
       "--size=32", "--images=1", "--max_iter=1500", "--data_dir=embedded",
       f"--cache_dir={tmp_path}", "--candidates=pretrained,pretrained:accelerated:10",
       "--classical=mfista,douglas_rachford"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout
  lines = out.splitlines()
  table = lines.index(next(line for line in lines if line.startswith("  NMSE (dB)")))
  rows = [line for line in lines[:table] if line.startswith("  ")]
  # --compare_to's default, FISTA-b, runs after the --classical methods
  assert [row.split()[0] for row in rows] == ["MFISTA", "Douglas-Rachford", "FISTA-b", "DRS",
                                              "DRS"]
  assert "safeguarded" in rows[3] and "H=3 -> DR" in rows[3]  # the manifest's
  assert "accelerated" in rows[4] and "H=10 -> MFISTA" in rows[4]  # the spec's
  assert all(row.split()[-1].split("/")[0].isdigit() for row in rows)  # 1e-3 reached in 1500
  standing = [line for line in lines if line.startswith("    DRS")][-2:]  # one per candidate
  assert len(standing) == 2 and all(
      len(line.split()[-1].split("/")) == 3 and "@" in line for line in standing)


def test_equal_iteration_standing_finds_where_a_candidate_is_behind():
  """``equal_iteration_standing`` (``experiments.policy_iterations``' comparison): the worst NMSE
  deficit over k >= 1 (k = 0 and NaN entries ignored), where it is, and the iterations at which
  the candidate's gap is the larger one, both gaps above the float32 floor."""
  from experiments.bench.accuracy import EQUAL_FLOOR, equal_iteration_standing
  nan = float("nan")
  candidate_nmse = [0.0, -9.0, -12.0, -11.0, nan]
  reference_nmse = [5.0, -3.0, -11.5, -12.0, -13.0]
  candidate_gap = [1.0, 50.0, 1e-3, 0.1 * EQUAL_FLOOR, nan]
  reference_gap = [1.0, 2.0, 1e-2, 0.5 * EQUAL_FLOOR, 1e-4]
  worst, worst_k, behind = equal_iteration_standing(candidate_nmse, reference_nmse,
                                                    candidate_gap, reference_gap)
  assert (worst, worst_k) == (1.0, 3)  # -11 against -12
  assert behind == 1  # k = 1 only; k = 3 is below the floor, k = 4 is NaN
  assert equal_iteration_standing(reference_nmse, reference_nmse, reference_gap,
                                  reference_gap) == (0.0, 1, 0)


def test_train_policy_hidden_flag_sets_the_mlp_width_and_refuses_other_architectures():
  """``experiments.train_policy --hidden``: the shipped flagfiles' width reaches the network
  configuration; an architecture without a hidden layer is refused by name."""
  script = ("import sys; from experiments import train_policy as t; "
            "t.FLAGS(['prog', '--out=unused'] + sys.argv[1:]); print(t.build_config().net)")
  run = lambda *flags: subprocess.run([sys.executable, "-c", script, *flags], cwd=ROOT,
                                      capture_output=True, text=True, timeout=300)
  wide = run(f"--flagfile={ROOT}/experiments/configs/policy_inpainting.flags")
  assert wide.returncode == 0, wide.stderr[-2000:]
  assert "CoefficientMLP(hidden=32" in wide.stdout
  refused = run("--arch=subband_table", "--hidden=16")
  assert refused.returncode != 0 and "subband_table has no hidden width" in refused.stderr


def test_train_policy_init_from_loads_a_matching_policy_and_refuses_another_network():
  """``experiments.train_policy --init_from``: the shipped policy's weights and sha256 when the
  network matches; a clear error for another width or a source without the task's policy."""
  from experiments import train_policy as t  # pylint: disable=import-outside-toplevel
  from jsgp import policy_nets, pretrained  # pylint: disable=import-outside-toplevel
  assert t.starting_policy("inpainting", None, policy_nets.CoefficientMLP()) == (None, "")
  wide = policy_nets.architecture("coefficient_mlp", 32)
  variables, sha = t.starting_policy("inpainting", "pretrained", wide)
  assert sha == pretrained.manifest("inpainting")["sha256"]
  shipped = pretrained.policy("inpainting").variables
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(variables),
                                                  jax.tree_util.tree_leaves(shipped)))
  with pytest.raises(ValueError, match="--arch/--hidden"):
    t.starting_policy("inpainting", "pretrained", policy_nets.architecture("coefficient_mlp", 8))
  with pytest.raises(ValueError, match="has no inpainting policy"):
    t.starting_policy("inpainting", ROOT, wide)


def test_train_policy_reads_a_plain_folder_of_the_users_images(tmp_path):
  """``--data_dir`` without BSDS500's ``train/ val/ test/``: every image of the folder (sorted,
  up to ``--n_train``) is training data, resized to the canvas; an empty folder is a clear error."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from experiments import train_policy as t  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  for name, shape in (("b.png", (40, 50)), ("a.jpg", (30, 30)), ("c.png", (64, 48))):
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / name)
  (tmp_path / "notes.txt").write_text("not an image")
  images, described = t.training_images("inpainting", str(tmp_path), 16, 64)
  assert images.shape == (3, 16, 16) and np.all(np.isfinite(images))
  assert "every image of the folder" in described and described.endswith("3 images")
  first_two, _ = t.training_images("fourier", str(tmp_path), 16, 2)
  np.testing.assert_array_equal(first_two, images[:2])  # a.jpg, b.png: sorted by name
  assert first_two[0].std() > 0 and not np.array_equal(first_two[0], first_two[1])
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="no images"):
    t.training_images("inpainting", str(empty), 16, 8)


def test_methods_needing_a_normal_solve_are_skipped_where_the_operator_has_none():
  """``runnable_on``: Douglas-Rachford runs on every task but CT; the others everywhere."""
  names = ["mfista", "douglas_rachford", "sparsa"]
  assert methods.runnable_on("ct", names) == (["mfista", "sparsa"], ["douglas_rachford"])
  for task in ("inpainting", "fourier", "deblur"):
    assert methods.runnable_on(task, names) == (names, [])


def test_train_policy_problems_per_image_draws_a_new_problem_for_every_copy():
  """``--problems_per_image=k``: each image appears k times in a row and every copy is its own
  problem (its own rate, mask and data); the manifest's data line says so."""
  from experiments import train_policy as t  # pylint: disable=import-outside-toplevel
  from jsgp.problems import Task  # pylint: disable=import-outside-toplevel
  from jsgp.training.policy import sample_settings  # pylint: disable=import-outside-toplevel
  from jsgp.problems import simulate_batch  # pylint: disable=import-outside-toplevel
  images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16)).astype(np.float32)
  same, described = t.repeat_images(images, "two images", 1)
  assert same is images and described == "two images"
  repeated, described = t.repeat_images(images, "two images", 3)
  assert repeated.shape == (6, 16, 16) and described == "two images, 3 problems each"
  np.testing.assert_array_equal(repeated[:3], np.broadcast_to(images[0], (3, 16, 16)))
  task = Task("inpainting", image_shape=(16, 16))
  numbers = sample_settings(task, len(repeated), 0, (0.3, 0.7), (0.0, 5.0), (0.5, 2.0))
  assert len(set(np.round(numbers.rate[:3], 6))) == 3
  problems = simulate_batch(task, jax.numpy.asarray(repeated), jax.random.PRNGKey(0), numbers)
  data = np.asarray(problems.y)
  assert not np.array_equal(data[0], data[1]) and not np.array_equal(data[1], data[2])


def test_record_tta_writes_the_learned_methods_cases_into_a_manifest(tmp_path):
  """``experiments.record_tta``: the first ``--policy`` source's iterations, the fastest classical
  method per image and the speedups land under ``held_out[<case>]``; the weights are untouched."""
  import shutil  # pylint: disable=import-outside-toplevel
  from experiments import record_tta  # pylint: disable=import-outside-toplevel
  from jsgp import pretrained  # pylint: disable=import-outside-toplevel
  for ext in (".json", ".msgpack"):
    shutil.copy(os.path.join(ROOT, "jsgp", "pretrained_data", "fourier" + ext), tmp_path)
  methods_of = lambda learned, mfista, sparsa: {
      "drs_policy": {"iters": learned[0], "seconds": learned[1]},
      "drs_policy_2": {"iters": 5, "seconds": 0.01},  # another --policy source: not classical
      "jaxopt_fixed": {"iters": 6, "seconds": 0.02},  # a peer: not what the speedup divides by
      "mfista": {"iters": mfista[0], "seconds": mfista[1]},
      "sparsa": {"iters": sparsa[0], "seconds": sparsa[1]}}
  bench = {"config": {"size": 128, "ct_size": 64, "rate": 0.3, "noise_sigma": 5.0,
                      "lam_multiplier": 1.0},
           "tasks": {"fourier": {"labels": {"drs_policy": "DRS", "mfista": "MFISTA"}, "images": 2,
                                 "families": {"drs_policy": "learned", "drs_policy_2": "learned",
                                              "jaxopt_fixed": "peer", "mfista": "jsgp",
                                              "sparsa": "jsgp"},
                                 "targets": {"gap 1e-03": {
                                     "learned_speedup": [2.0, 0.5],
                                     "per_image": [
                                         {"methods": methods_of((10, 0.1), (30, 0.25), (25, 0.3))},  # by seconds
                                         {"methods": methods_of((20, 0.4), (50, 0.5), (9, 0.2))},
                                     ]}}}}}
  path = tmp_path / "bench.json"
  path.write_text(json.dumps(bench))
  record_tta.record(str(path), str(tmp_path))
  case = pretrained.read_manifest(str(tmp_path / "fourier"))["held_out"]["128px, rate 0.3, noise 5"]
  entry = case["targets"]["gap 1e-03"]
  assert entry["learned_iters"] == [10, 20] and entry["wall_speedup"] == [2.0, 0.5]
  assert case["solver"] == "DRS"  # the label of the solver measured
  assert entry["best_classical"] == [{"method": "mfista", "iters": 30},
                                     {"method": "sparsa", "iters": 9}]
  assert pretrained.load(str(tmp_path / "fourier"))[1]["sha256"] == (
      pretrained.manifest("fourier")["sha256"])


def test_make_demo_runs_the_shipped_policies_and_writes_its_tables_and_figures(tmp_path):
  """``make demo``'s module on a tiny configuration: every method reaches gap 1e-3 in its
  instrumented run and is timed to it; the timed run's own iterate, rechecked in float64, is that
  point (within a factor 10 of the gap: another compiled program rounds differently); the report
  and figures are written."""
  run = subprocess.run([sys.executable, "-m", "experiments.demo", "--size=64", "--images=1",
                        "--tasks=fourier", "--cap=400", "--repeats=1",
                        f"--out_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  (problem,) = json.loads((tmp_path / "demo.json").read_text())["fourier"]
  assert set(problem["methods"]) == {"FISTA-b", "FISTA (1/L)", "MFISTA", "Douglas-Rachford",
                                     "learned"}
  for name, entry in problem["methods"].items():
    assert entry["iters"]["1e-03"] is not None, name
    assert entry["seconds"]["1e-03"] > 0, name
    assert entry["verified_gap"]["1e-03"] < 1e-2, name  # the same iterate, rounded differently
  for png in ("gap_fourier.png", "images_fourier.png"):
    assert os.path.getsize(tmp_path / png) > 1000
  assert "(pretrained, H=0 -> DR)" in (tmp_path / "demo.md").read_text()  # the shipped solver
