"""Files are written atomically and guarded by locks; a full disk, a corrupted or foreign checkpoint
is one clear error that loses nothing; an unfinished checkpoint is not silently reused."""
import errno
import os
import re
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsgp import training
from jsgp.data import load_images
from jsgp.training import checkpoint, dataset, files, orbax_noise

from helpers import tiny_greedy_config

# --- files: the x* cache, locks, full disks, unfinished checkpoints -------------------------------

def _tiny_config(**changes):
  return tiny_greedy_config(**{"num_stages": 2, "steps_per_stage": 3, "reference_iters": 20,
                               **changes})


@pytest.fixture(scope="module")
def tiny_images():
  return load_images(None, "train", 32, n=2)


def _cache_file(directory):
  (name,) = [f for f in os.listdir(directory) if f.startswith("xstar_")]
  return os.path.join(directory, name)


def test_truncated_or_mismatched_cache_is_recomputed_with_a_warning(tmp_path, tiny_images,
                                                                    caplog):
  config = _tiny_config()
  first = training.make_dataset(config, tiny_images, str(tmp_path)).x_star
  path = _cache_file(tmp_path)
  with open(path, "rb") as f:
    whole = f.read()
  with open(path, "wb") as f:  # a write killed half-way (before atomic writes existed)
    f.write(whole[: len(whole) // 2])
  again = training.make_dataset(config, tiny_images, str(tmp_path)).x_star
  np.testing.assert_array_equal(again, first)
  assert any("is unreadable" in r.getMessage() and path in r.getMessage() for r in caplog.records)
  # A cache of the right name but another shape (e.g. copied from another run) is not trusted.
  files.write_arrays(path, {"x_star": np.zeros((1, 4, 4), np.float32),
                            "key": np.asarray(os.path.basename(path)[6:-4]),
                            "sha256": np.asarray(dataset._checksum(np.zeros((1, 4, 4),  # pylint: disable=protected-access
                                                                            np.float32)))})
  caplog.clear()
  again = training.make_dataset(config, tiny_images, str(tmp_path)).x_star
  np.testing.assert_array_equal(again, first)
  assert any("of shape (1, 4, 4)" in r.getMessage() for r in caplog.records)


def test_full_disk_gives_a_clear_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(np, "savez", no_space)
  path = str(tmp_path / "xstar_test.npz")
  with pytest.raises(OSError, match=r"not enough disk space to write .*xstar_test.npz"):
    files.write_arrays(path, {"x_star": np.zeros((4, 4)), "key": np.asarray("k")})
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_images, monkeypatch):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  ckpt = str(tmp_path / "ckpt")
  config = _tiny_config(num_stages=1)
  training.train(config, tiny_images, checkpoint_dir=ckpt, checkpoint_every=1,
                 stop_after_steps=2)
  original = ocp.CheckpointManager.save

  def full(self, step, *args, **kwargs):
    if step >= 3:
      raise OSError(errno.ENOSPC, "No space left on device")
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full)
  with pytest.raises(OSError, match=r"not enough disk space to write .*ckpt"):
    training.train(config, tiny_images, checkpoint_dir=ckpt, checkpoint_every=1)
  assert training.read_meta(ckpt)["step"] == 2
  assert not [p for p in os.listdir(ckpt) if "tmp" in p]


def test_second_run_on_a_checkpoint_directory_is_refused(tmp_path, tiny_images):
  ckpt = str(tmp_path / "ckpt")
  with files.exclusive_directory(ckpt):  # another run holds it
    with pytest.raises(training.DirectoryInUse,
                       match=rf"checkpoint directory {ckpt} is in use .*pid {os.getpid()}"):
      training.train(_tiny_config(), tiny_images, checkpoint_dir=ckpt)
  training.train(_tiny_config(num_stages=1, steps_per_stage=1), tiny_images, checkpoint_dir=ckpt)


def test_unfinished_checkpoint_is_not_reused_silently(tmp_path, tiny_images):
  ckpt = str(tmp_path / "ckpt")
  config = _tiny_config()
  training.train(config, tiny_images, checkpoint_dir=ckpt, checkpoint_every=2,
                 stop_after_steps=4)
  with pytest.raises(training.PartialCheckpoint, match="unfinished run: step 4 of 6"):
    training.load_policy(ckpt, config)
  assert training.load_policy(ckpt, config, allow_partial=True).config == config.net


def test_make_dataset_refuses_non_finite_images(tiny_images):
  images = np.array(tiny_images)
  images[1, 3, 4], images[1, 5, 6] = np.nan, np.inf
  with pytest.raises(ValueError, match=r"images\[1\] holds 2 NaN/Inf"):
    training.make_dataset(_tiny_config(), images, None)


def test_disk_space_is_stated_in_a_unit_that_fits():
  assert files.format_bytes(700) == "700 bytes"
  assert files.format_bytes(51 * 1024) == "51.0 KiB"
  assert files.format_bytes(3 * 2**20 + 2**19) == "3.5 MiB"
  assert files.format_bytes(5 * 2**30) == "5.0 GiB"


def test_full_disk_message_for_a_small_file_states_its_size(tmp_path, monkeypatch):
  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(np, "save", no_space)
  with pytest.raises(OSError, match=r"not enough disk space to write .*small.npy "
                                    r"\(about 50.0 KiB needed"):
    files.write_array(str(tmp_path / "small.npy"), np.zeros(12800, np.float32))  # 51.2 kB


def _flip(path, count=256):
  """Invert ``count`` bytes in the middle of the file at ``path`` (all of a smaller file)."""
  with open(path, "rb") as f:
    data = bytearray(f.read())
  start = max(0, len(data) // 2 - count // 2)
  for i in range(start, min(len(data), start + count)):
    data[i] ^= 0xFF
  with open(path, "wb") as f:
    f.write(bytes(data))


def test_corrupt_iterate_file_is_refused_naming_it(tmp_path):
  path = str(tmp_path / "iterates" / "stage_001.npy")
  files.write_array(path, np.arange(4096, dtype=np.float32))
  np.testing.assert_array_equal(files.read_array(path, (4096,), "stage 1"), np.arange(4096))
  _flip(path)  # the header stays valid: np.load alone reads garbage without complaint
  assert np.load(path).shape == (4096,)
  with pytest.raises(files.CorruptFile, match=r"stage 1 \(" + re.escape(path) + r"\) is corrupt"):
    files.read_array(path, (4096,), "stage 1")
  os.remove(path + files.CHECKSUM_SUFFIX)  # written before checksums: read as it is
  assert files.read_array(path, (4096,), "stage 1").shape == (4096,)


# --- checkpoints: checksums, foreign directories, full disks -------------------------------------

@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
  """``(config, state, directory)``: steps 1 and 2 of a tiny network, saved once; tests copy it."""
  config = _tiny_config(num_stages=1)
  state = training.init_state(config, config.task.synthesis.in_shape)
  state = state._replace(opt_state=jax.tree_util.tree_map(
      lambda a: a + 0.5 if jnp.issubdtype(a.dtype, jnp.floating) else a, state.opt_state))
  directory = str(tmp_path_factory.mktemp("saved") / "ckpt")
  for step in (1, 2):
    checkpoint.save(directory, config, state._replace(step=jnp.int32(step)), {"num_iterates": 1})
  return config, state, directory


def _copy(saved_checkpoint, tmp_path):
  config, state, source = saved_checkpoint
  directory = str(tmp_path / "ckpt")
  shutil.copytree(source, directory)
  return config, state, directory


def _max_difference(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_every_corrupted_checkpoint_file_is_refused_naming_it(saved_checkpoint, tmp_path,
                                                              capfd):
  """256 flipped bytes in any one file of the latest step: refused before orbax reads anything,
  naming the file and what to do; the intact copy restores exactly."""
  config, state, source = saved_checkpoint
  step_dir = os.path.join(source, "2")
  names = sorted(os.path.relpath(os.path.join(root, name), step_dir)
                 for root, _, found in os.walk(step_dir) for name in found)
  names = [n for n in names if n != checkpoint.MANIFEST]
  assert len([n for n in names if f"{os.sep}d{os.sep}" in n]) >= 5  # the array data files
  for k, name in enumerate(names):
    directory = str(tmp_path / f"ckpt{k}")
    shutil.copytree(source, directory)
    _flip(os.path.join(directory, "2", name))
    with pytest.raises(checkpoint.CorruptCheckpoint,
                       match=re.escape(os.path.join(directory, "2", name)) + r".*"
                       + re.escape(f"delete {os.path.join(directory, '2')}")):
      training.load_policy(directory, config, allow_partial=True)
    with pytest.raises(checkpoint.CorruptCheckpoint, match="checksum"):
      checkpoint.restore(directory, config, state)
  restored, meta = checkpoint.restore(source, config, state)
  assert meta["step"] == 2 and _max_difference(restored._replace(step=state.step), state) == 0.0
  shutil.rmtree(os.path.join(directory, "2"))  # what the message says: back to step 1, verified
  assert checkpoint.restore(directory, config, state)[1]["step"] == 1
  assert "Traceback" not in capfd.readouterr().err


def test_checkpoint_without_a_manifest_loads_with_a_warning(saved_checkpoint, tmp_path, caplog):
  config, state, directory = _copy(saved_checkpoint, tmp_path)
  os.remove(os.path.join(directory, "2", checkpoint.MANIFEST))
  restored, _ = checkpoint.restore(directory, config, state)
  assert _max_difference(restored._replace(step=state.step), state) == 0.0
  assert any("no checksum manifest" in r.getMessage() and directory in r.getMessage()
             for r in caplog.records)


def test_unreadable_manifest_is_refused(saved_checkpoint, tmp_path):
  config, _, directory = _copy(saved_checkpoint, tmp_path)
  with open(os.path.join(directory, "2", checkpoint.MANIFEST), "w") as f:
    f.write("{not json")
  with pytest.raises(checkpoint.CorruptCheckpoint, match="manifest .* unreadable"):
    training.load_policy(directory, config, allow_partial=True)


def test_foreign_checkpoint_is_refused_in_one_message(tmp_path, capfd):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = str(tmp_path / "foreign")
  with ocp.CheckpointManager(directory) as mngr:
    mngr.save(5, args=ocp.args.Composite(default=ocp.args.StandardSave({"w": np.zeros(3)})))
  with pytest.raises(training.CheckpointMismatch,
                     match=re.escape(directory) + ".*not written by jsgp training"):
    training.load_policy(directory)
  assert "Traceback" not in capfd.readouterr().err


def test_orbax_aftermath_is_filtered_and_nothing_else(monkeypatch, caplog):
  """What a failed orbax call leaves behind (tensorstore results refused by orbax's closed event
  loop, unretrieved tensorstore errors) is dropped; other unraisable exceptions and asyncio
  reports still reach their handlers."""
  import asyncio  # pylint: disable=import-outside-toplevel
  import logging as pylogging  # pylint: disable=import-outside-toplevel
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  orbax_noise.install_noise_filters()
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(print)
  except RuntimeError as err:
    closed = err
  unraisable = lambda exc: types.SimpleNamespace(  # pylint: disable=unnecessary-lambda-assignment
      exc_type=type(exc), exc_value=exc, exc_traceback=exc.__traceback__, err_msg=None,
      object=None)  # what sys.unraisablehook receives
  sys.unraisablehook(unraisable(closed))
  assert not seen
  other = RuntimeError("something else")
  sys.unraisablehook(unraisable(other))
  assert [u.exc_value for u in seen] == [other]

  asyncio_logger = pylogging.getLogger("asyncio")
  tensorstore = ValueError("DATA_LOSS: Error reading local file \"x\": checksum mismatch")
  mine = ValueError("my own bug")
  with caplog.at_level(pylogging.ERROR, logger="asyncio"):
    for exc in (tensorstore, mine):
      asyncio_logger.error("Future exception was never retrieved\nfuture: <Future>",
                           exc_info=(type(exc), exc, None))
  assert [r.exc_info[1] for r in caplog.records if r.name == "asyncio"] == [mine]


TENSORSTORE_DISK_FULL = (  # what orbax raises on a full disk (tensorstore's words, measured)
    "RESOURCE_EXHAUSTED: Error writing local file \"{dir}/3.orbax-checkpoint-tmp/state.orbax-"
    "checkpoint-tmp/_sharding\": Failed writing: \"{dir}/3.orbax-checkpoint-tmp/state.orbax-"
    "checkpoint-tmp/_sharding.__lock\": Failed to write 18525 bytes to file 11: No space left on "
    "device [os_error_code='28']")


def test_full_disk_reported_by_tensorstore_keeps_the_previous_checkpoint(saved_checkpoint,
                                                                          tmp_path, monkeypatch):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  config, state, directory = _copy(saved_checkpoint, tmp_path)

  def full(self, step, *args, **kwargs):
    os.makedirs(os.path.join(directory, f"{step}.orbax-checkpoint-tmp"))  # a half-written step
    raise ValueError(TENSORSTORE_DISK_FULL.format(dir=directory))

  monkeypatch.setattr(ocp.CheckpointManager, "save", full)
  with pytest.raises(files.DiskFull, match=re.escape(f"not enough disk space to write {directory}")
                     + r" \(about [0-9.]+ KiB needed.*free some space"):
    checkpoint.save(directory, config, state._replace(step=jnp.int32(3)))
  monkeypatch.undo()
  assert sorted(os.listdir(directory)) == ["1", "2"]  # no half-written step left behind
  restored, meta = checkpoint.restore(directory, config, state)
  assert meta["step"] == 2 and _max_difference(restored._replace(step=state.step), state) == 0.0


def test_full_disk_while_writing_the_manifest_removes_the_new_step(saved_checkpoint, tmp_path,
                                                                    monkeypatch):
  """Orbax finished step 3 but its checksums could not be written: step 3 is removed (it could
  not be verified later), step 2 stays the latest."""
  config, state, directory = _copy(saved_checkpoint, tmp_path)
  real_fsync = os.fsync

  def fsync(fd):
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp" + str(os.getpid())):
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_fsync(fd)

  monkeypatch.setattr(os, "fsync", fsync)
  with pytest.raises(files.DiskFull, match=re.escape(f"not enough disk space to write {directory}")):
    checkpoint.save(directory, config, state._replace(step=jnp.int32(3)))
  monkeypatch.undo()
  assert "3" not in os.listdir(directory)
  assert checkpoint.read_meta(directory)["step"] == 2


DISK_FULL_SCRIPT = """
import os, sys
import jax.numpy as jnp, numpy as np
from jsgp.nets import UNetConfig
from jsgp.problems import Task
from jsgp.training import GreedyConfig, checkpoint
from jsgp.training.loop import TrainState
directory = {directory!r}
config = GreedyConfig(task=Task("inpainting", (32, 32)), net=UNetConfig(features=4, depth=2),
                      num_stages=1, steps_per_stage=3, batch_size=2, reference_iters=20)
tree = {{f"layer{{i}}": np.ones(100, np.float32) for i in range(30)}}  # like a small network
state = TrainState(tree, {{}}, {{"m": tree, "v": tree}}, jnp.int32(1))
checkpoint.save(directory, config, state)
stat = os.statvfs(directory)
with open(os.path.join(os.path.dirname(directory), "filler"), "wb") as f:  # leave 56 KiB free
  f.write(bytes(max(0, stat.f_bavail * stat.f_frsize - 57344)))
try:
  checkpoint.save(directory, config, state._replace(step=jnp.int32(2)))
except OSError as err:
  print(type(err).__name__ + ":", err)
print("latest step", checkpoint.read_meta(directory)["step"], sorted(os.listdir(directory)))
"""


@pytest.mark.slow  # ~10-20 s: a fresh Python with jax in a subprocess
def test_real_full_disk_gives_one_message_and_keeps_the_previous_checkpoint(tmp_path):
  """On a real 2 MiB file system (a tmpfs in a user namespace, where the machine allows one):
  orbax's and tensorstore's errors become one message, with no traceback on stderr, and the
  previous checkpoint stays the latest."""
  if shutil.which("unshare") is None:
    pytest.skip("unshare not available")
  mount = tmp_path / "small"
  mount.mkdir()
  probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=2m none {mount}"],
                         capture_output=True, check=False)
  if probe.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs in a user namespace: {probe.stderr.decode().strip()}")
  script = tmp_path / "full.py"
  script.write_text(DISK_FULL_SCRIPT.format(directory=str(mount / "ckpt")))
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
             JAX_PLATFORMS="cpu")
  run = subprocess.run(["unshare", "-rm", "sh", "-c",
                        f"mount -t tmpfs -o size=2m none {mount} && exec {sys.executable} {script}"],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  assert re.search(r"DiskFull: .*not enough disk space to write " + re.escape(str(mount / "ckpt"))
                   + r" \(about [0-9.]+ KiB needed, [0-9.]+ (KiB|bytes) free", run.stdout), run.stdout
  assert "latest step 1 ['1']" in run.stdout
  for noise in ("Traceback", "Event loop is closed", "RESOURCE_EXHAUSTED"):
    assert noise not in run.stderr, run.stderr[-3000:]
