"""The shipped policies: loading, checks, and solves that keep DRS's guarantee."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsgp import pretrained
from jsgp.data import load_images
from jsgp.problems import Task, simulate
from jsgp.solvers import FISTA, solve

TASKS = ("inpainting", "fourier", "deblur", "ct")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_task_has_a_shipped_policy_with_a_manifest():
  assert pretrained.available() == tuple(sorted(TASKS))
  for task in TASKS:
    record = pretrained.manifest(task)
    # Fourier and deblurring: 0, Douglas-Rachford from the start (no policy step pays there)
    assert record["task"] == task and record["policy_steps"] >= (task in ("inpainting", "ct"))
    assert os.path.getsize(os.path.join(pretrained.DATA_DIR, task + ".msgpack")) == record["bytes"]


def test_unknown_task_is_refused_naming_the_available_ones():
  with pytest.raises(ValueError, match="no pretrained policy for task 'denoise'.*inpainting"):
    pretrained.policy("denoise")


def _copy(tmp_path, task="inpainting"):
  prefix = str(tmp_path / task)
  for ext in (".msgpack", ".json"):
    shutil.copy(os.path.join(pretrained.DATA_DIR, task + ext), prefix + ext)
  return prefix


def test_a_corrupted_weights_file_is_refused_naming_it(tmp_path):
  prefix = _copy(tmp_path)
  with open(prefix + ".msgpack", "r+b") as stream:
    stream.seek(100)
    byte = stream.read(1)
    stream.seek(100)
    stream.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(pretrained.PolicyFileError, match="inpainting.msgpack are corrupted"):
    pretrained.load(prefix)


def test_a_broken_manifest_is_refused_naming_it(tmp_path):
  prefix = _copy(tmp_path)
  with open(prefix + ".json", "w") as stream:
    stream.write("{not json")
  with pytest.raises(pretrained.PolicyFileError, match="inpainting.json is unreadable"):
    pretrained.load(prefix)
  os.remove(prefix + ".json")
  with pytest.raises(pretrained.PolicyFileError, match="no policy manifest"):
    pretrained.load(prefix)


def test_a_copy_loads_to_the_same_policy(tmp_path):
  loaded, record = pretrained.load(_copy(tmp_path))
  shipped = pretrained.policy("inpainting")
  assert record == pretrained.manifest("inpainting")
  same = jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), loaded.variables,
                                shipped.variables)
  assert all(jax.tree_util.tree_leaves(same))


def test_a_policy_spec_names_the_source_and_optionally_the_mode_and_budget():
  assert pretrained.parse_spec("pretrained") == ("pretrained", {})
  assert pretrained.parse_spec("pretrained:relaxation") == ("pretrained", {"mode": "relaxation"})
  assert pretrained.parse_spec("out/p:accelerated:30") == (
      "out/p", {"mode": "accelerated", "max_policy_steps": 30})
  assert pretrained.parse_spec("out/p::0") == ("out/p", {"max_policy_steps": 0})
  source, kwargs = pretrained.parse_spec("pretrained:safeguarded::douglas_rachford")
  assert kwargs["mode"] == "safeguarded" and "max_policy_steps" not in kwargs
  _, method = pretrained.solver_from(source, "deblur", **kwargs)
  assert pretrained.handoff_label(method) == "DR"
  source, kwargs = pretrained.parse_spec("pretrained:relaxation:3")
  _, method = pretrained.solver_from(source, "ct", **kwargs)
  assert (method.mode, method.max_policy_steps) == ("relaxation", 3)
  for spec, message in (("pretrained:fast", "mode must be one of"),
                        ("pretrained:relaxation:-1", "non-negative integer"),
                        ("pretrained:relaxation:3:x", "unknown hand-off"),
                        ("pretrained:relaxation:3:mfista:x", "source\\[:mode"),
                        (":relaxation", "source")):
    with pytest.raises(ValueError, match=message):
      pretrained.parse_spec(spec)


def test_a_wavelet_the_network_was_not_trained_for_is_refused():
  image = jnp.asarray(load_images(None, "test", 64, n=1)[0])
  problem = simulate(Task("inpainting", (64, 64), level=2), image, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="trained for a 10-sub-band wavelet"):
    solve(pretrained.solver("inpainting"), problem, max_iter=2)


@pytest.mark.parametrize("task", TASKS)
def test_shipped_policy_solves_are_monotone_and_converge(task):
  """Any image size (here 48 px, not the training size): the policy phase never raises F,
  its steps are kept, the whole run is monotone where the hand-off is (MFISTA; Douglas-Rachford
  is not), and the solve reaches the hand-off method's own accuracy."""
  image = jnp.asarray(load_images(None, "test", 48, n=1)[0])
  problem = simulate(Task(task, (48, 48), pattern="uniform", n_views=48), image,
                     jax.random.PRNGKey(1))
  method = pretrained.solver(task)
  if method.max_policy_steps == 0:  # Fourier, deblurring: Douglas-Rachford alone; check the policy
    method = pretrained.solver(task, max_policy_steps=1)
  result = solve(method, problem, max_iter=300, tol=-1)
  objective = np.asarray(result.history.objective)
  assert np.all(np.isfinite(objective))
  monotone = objective if pretrained.handoff_label(method) == "MFISTA" else (
      objective[:int(result.state.policy_steps) + 1])
  assert np.all(np.diff(monotone) <= 1e-6 * monotone[:-1])
  assert int(result.state.accepted) >= 1
  alone = np.asarray(solve(method.handoff, problem, max_iter=300, tol=-1).history.objective)
  long_run = solve(FISTA(max_backtracks=0), problem, max_iter=4000, tol=-1).history.objective
  f_star = min(float(np.min(np.asarray(long_run))), objective[-1], alone[-1])
  start = objective[0] - f_star
  assert objective[-1] - f_star <= 2 * (alone[-1] - f_star) + 1e-6 * start


def test_the_inpainting_fourier_and_deblur_solvers_run_douglas_rachford():
  """What the manifests record and ``solver`` runs (BUILD_NOTES.md, "Handing off to
  Douglas-Rachford"); a spec or a mode of its own overrides it."""
  from jsgp.solvers import DouglasRachford  # pylint: disable=import-outside-toplevel
  for task, budget in (("inpainting", 3), ("fourier", 0), ("deblur", 0)):
    method = pretrained.solver(task)
    assert isinstance(method.handoff, DouglasRachford)
    assert (method.mode, method.max_policy_steps) == ("safeguarded", budget)
  for task in ("fourier", "deblur"):  # Douglas-Rachford alone by default; the policy stays usable
    one_step = pretrained.solver(task, max_policy_steps=1)
    assert isinstance(one_step.handoff, DouglasRachford) and one_step.max_policy_steps == 1
  image = jnp.asarray(load_images(None, "test", 32, n=1)[0], jnp.float64)
  blurred = simulate(Task("deblur", (32, 32)), image, jax.random.PRNGKey(2))
  shipped = solve(pretrained.solver("deblur"), blurred, max_iter=12, tol=-1).history.objective
  alone = solve(DouglasRachford(), blurred, max_iter=12, tol=-1).history.objective
  np.testing.assert_allclose(shipped, alone, rtol=1e-9)  # Douglas-Rachford's own iterates
  assert pretrained.handoff_label(pretrained.solver("ct")) == "MFISTA"
  accelerated = pretrained.solver("inpainting", mode="accelerated", max_policy_steps=10)
  assert pretrained.handoff_label(accelerated) == "MFISTA"  # the only hand-off it takes
  label, _ = pretrained.solver_from("pretrained", "fourier")
  assert label.endswith("(pretrained, H=0 -> DR)")
  image = jnp.asarray(load_images(None, "test", 32, n=1)[0])
  ct = simulate(Task("ct", (32, 32), n_views=32), image, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="no normal_solve.*DRS's hand-off"):
    solve(pretrained.solver("inpainting"), ct, max_iter=2)


@pytest.mark.parametrize("task", TASKS)
def test_the_flagfile_is_the_recipe_of_the_shipped_policy(task):
  """``experiments/configs/policy_<task>.flags`` (nested stage flagfiles included) resolves to the
  training configuration the shipped manifest records and to the budget it runs with, and writes
  the shipped file."""
  script = ("import json, sys; from experiments import train_policy as t; t.FLAGS(sys.argv); "
            "c = t.build_config().to_dict(); c.pop('init_sha256'); "
            "print(json.dumps({'config': c, 'out': t.FLAGS.out, 'init': t.FLAGS.init_from, "
            "'solver': t.solver_settings()}))")
  run = subprocess.run([sys.executable, "-c", script,
                        f"--flagfile=experiments/configs/policy_{task}.flags"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  resolved = json.loads(run.stdout.strip().splitlines()[-1])
  recorded = dict(pretrained.manifest(task)["training"])
  starts_from = recorded.pop("init_sha256", "")
  assert resolved["config"] == recorded
  assert resolved["out"] == f"jsgp/pretrained_data/{task}"
  assert bool(resolved["init"]) == bool(starts_from)  # a fine-tune names its starting weights
  shipped = pretrained.manifest(task)  # what solver() runs: budget, mode, hand-off
  assert resolved["solver"] == [shipped["policy_steps"], shipped["mode"],
                                shipped.get("handoff", "mfista")]
