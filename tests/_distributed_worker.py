"""Subprocess for tests/test_distributed.py (and the scaling numbers of distributed_notes.md).

Fake CPU devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before jax starts,
which the pytest process (jax already imported) cannot change; hence this script:

  python tests/_distributed_worker.py multi  OUT   # 4 devices: training, solve, errors, ckpts
  python tests/_distributed_worker.py single OUT   # 1 device: resume OUT/ckpt4 written by `multi`
  python tests/_distributed_worker.py bench  OUT [steps]  # steps/s on every mesh size up to all
  python tests/_distributed_worker.py multihost OUT PROCESS_ID PORT  # one of 2 hosts (localhost)

Results go to OUT/<mode>.npz (arrays) and OUT/<mode>.json (messages, timings).
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jsgp import distributed, training
from jsgp.training import greedy, loop
from jsgp.data import load_images
from jsgp.nets import UNetConfig
from jsgp.policies import LearnedPolicy
from jsgp.problems import Task
from jsgp.solvers import DRS, FISTA, solve


def tiny_config(**changes):
  base = dict(task=Task("inpainting", (32, 32)), net=UNetConfig(features=4, depth=2, head="step"),
              num_stages=2, steps_per_stage=3, batch_size=4, reference_iters=30)
  base.update(changes)
  return training.GreedyConfig(**base)


def flat(variables):
  return [np.asarray(a) for a in jax.tree_util.tree_leaves(variables)]


def put(arrays, prefix, variables, losses):
  arrays[f"{prefix}_losses"] = np.asarray(losses)
  for i, a in enumerate(flat(variables)):
    arrays[f"{prefix}_leaf{i}"] = a


def error_message(fn):
  try:
    fn()
  except ValueError as err:
    return str(err)
  return None


def multi(out):
  assert jax.device_count() == 4, jax.devices()
  arrays, info = {}, {"device_count": jax.device_count()}
  images = load_images(None, "train", 32, n=4)
  config = tiny_config()
  cache = os.path.join(out, "cache")
  mesh1, mesh4 = distributed.make_mesh(1), distributed.make_mesh(0)
  info["mesh_sizes"] = [mesh1.size, mesh4.size, distributed.make_mesh(None).size]

  # 1. the same training on one device (no mesh, a 1-device mesh) and on four.
  #    (The 1-device mesh is exercised by `single`.)
  for name, mesh in (("none", None), ("mesh4", mesh4)):
    result = training.train(config, images, cache_dir=cache, log_every=1, mesh=mesh)
    put(arrays, name, result.variables, result.losses)
    info[f"{name}_seconds"] = result.seconds
  # The state that comes out of the 4-device step is replicated on every device.
  step = greedy.make_train_step(config, mesh4)  # cached: the step train() just used
  data = training.make_dataset(config, images, cache)
  state = loop.init_state(config, data.problems.op.in_shape)
  state, data = distributed.replicate((state, data), mesh4)
  new_state, _ = step(state, data)
  info["state_replicated_on"] = sorted({len(a.sharding.device_set) for a in
                                        jax.tree_util.tree_leaves(new_state)
                                        if a.sharding.is_fully_replicated})
  info["state_all_replicated"] = all(a.sharding.is_fully_replicated
                                     for a in jax.tree_util.tree_leaves(new_state))
  info["t_train"] = time.time() - T0

  # 2. a sharded batched solve against the unsharded one: DRS with the policy trained on 4
  #    devices; the tolerance stops the instances at different iterations.
  policy = LearnedPolicy(jax.tree_util.tree_map(jnp.asarray, result.variables), config.net)
  x0 = jnp.zeros((4,) + tuple(data.problems.op.in_shape), jnp.float32)
  problems = jax.device_get(data.problems)
  for name, method, tol in (("drs", DRS(policy), 2.5e-3),):
    plain = solve(method, problems, x0, max_iter=15, tol=tol)
    sharded = solve(method, problems, x0, max_iter=15, tol=tol, mesh=mesh4)
    arrays[f"{name}_plain_x"], arrays[f"{name}_sharded_x"] = np.asarray(plain.x), np.asarray(sharded.x)
    arrays[f"{name}_plain_obj"] = np.asarray(plain.history.objective)
    arrays[f"{name}_sharded_obj"] = np.asarray(sharded.history.objective)
    arrays[f"{name}_plain_iters"] = np.asarray(plain.num_iter)
    arrays[f"{name}_sharded_iters"] = np.asarray(sharded.num_iter)
    info[f"{name}_sharded_x_spec"] = str(sharded.x.sharding.spec)
    info[f"{name}_sharded_x_devices"] = len(sharded.x.sharding.device_set)
  info["t_solve"] = time.time() - T0

  # 3a. checkpoints: 4 devices, interrupted at step 4 (stage 2), for `single` to resume.
  training.train(config, images, checkpoint_dir=os.path.join(out, "ckpt4"), checkpoint_every=4,
              cache_dir=cache, stop_after_steps=4, mesh=mesh4)
  info["ckpt4_step"] = training.read_meta(os.path.join(out, "ckpt4"))["step"]
  # 3b. the reverse: written on one device (no mesh), resumed on four.
  ckpt1 = os.path.join(out, "ckpt1")
  training.train(config, images, checkpoint_dir=ckpt1, checkpoint_every=4, cache_dir=cache,
              stop_after_steps=4)
  resumed = training.train(config, images, checkpoint_dir=ckpt1, cache_dir=cache, log_every=1,
                        mesh=mesh4)
  put(arrays, "resume1to4", resumed.variables, resumed.losses)
  info["t_ckpt"] = time.time() - T0

  # 4. clear errors.
  bad = tiny_config(batch_size=6)
  info["err_check"] = error_message(lambda: distributed.check_batch_divisible(6, mesh4))
  info["err_train"] = error_message(lambda: training.train(bad, images, mesh=mesh4))
  info["err_step"] = error_message(lambda: greedy.make_train_step(bad, mesh4))
  info["err_solve"] = error_message(lambda: solve(
      FISTA(), jax.tree_util.tree_map(lambda a: a[:3], problems), x0[:3], max_iter=5,
      mesh=mesh4))
  info["err_mesh"] = error_message(lambda: distributed.make_mesh(5))
  return arrays, info


def single(out):
  assert jax.device_count() == 1, jax.devices()
  images = load_images(None, "train", 32, n=4)
  arrays, info = {}, {"device_count": jax.device_count()}
  cache = os.path.join(out, "cache")
  info["err_mesh"] = error_message(lambda: distributed.make_mesh(2))
  # Resume the 4-device checkpoint on one device: without a mesh, and on a 1-device mesh.
  for name, mesh in (("none", None), ("mesh1", distributed.make_mesh(None))):
    ckpt = os.path.join(out, f"ckpt4_copy_{name}")
    os.system(f"cp -r {os.path.join(out, 'ckpt4')} {ckpt}")
    info[f"{name}_start_step"] = training.read_meta(ckpt)["step"]
    result = training.train(tiny_config(), images, checkpoint_dir=ckpt, cache_dir=cache,
                         log_every=1, mesh=mesh)
    put(arrays, f"resume4to1_{name}", result.variables, result.losses)
  # The policy of a 4-device checkpoint (of a run stopped at step 4: partial) loads on one device.
  policy = training.load_policy(os.path.join(out, "ckpt4"), tiny_config(), allow_partial=True)
  info["policy_leaves"] = len(jax.tree_util.tree_leaves(policy.variables))
  return arrays, info


def multihost(out, process_id, port):
  """One of two processes (each with its own fake devices) training as one data-parallel job:
  interrupted at step 4 and resumed from the shared checkpoint, like `multi`'s reference run."""
  distributed.initialize_multihost(f"localhost:{port}", 2, process_id)
  mesh = distributed.make_mesh(0)
  info = {"process_count": jax.process_count(), "device_count": jax.device_count(),
          "local_device_count": jax.local_device_count(), "mesh_size": mesh.size,
          "err_mesh": error_message(lambda: distributed.make_mesh(1))}
  images = load_images(None, "train", 32, n=4)
  ckpt, cache = os.path.join(out, "ckpt_multihost"), os.path.join(out, f"cache{process_id}")
  training.train(tiny_config(), images, checkpoint_dir=ckpt, checkpoint_every=4, cache_dir=cache,
              stop_after_steps=4, mesh=mesh)
  result = training.train(tiny_config(), images, checkpoint_dir=ckpt, cache_dir=cache, log_every=1,
                       mesh=mesh)
  arrays = {}
  put(arrays, "multihost", result.variables, result.losses)
  return arrays, info


def bench(out, steps):
  """Steady-state training steps/s of the tiny config (batch 8): no mesh, then 1, 2, 4, ...
  devices. On fake CPU devices this shows the sharded step runs, not a speed-up."""
  images = load_images(None, "train", 32, n=8)
  config = tiny_config(num_stages=1, steps_per_stage=steps, batch_size=8)
  data = training.make_dataset(config, images, os.path.join(out, "cache"))
  info = {"device_count": jax.device_count(), "steps": steps, "batch_size": 8}
  for n in [None] + [2 ** i for i in range(jax.device_count().bit_length())]:
    if n is None:  # the single-device step without a mesh
      step, state, d = (greedy.make_train_step(config),
                        loop.init_state(config, data.problems.op.in_shape), data)
    else:
      mesh = distributed.make_mesh(n)
      step = greedy.make_train_step(config, mesh)
      state, d = distributed.replicate(
          (loop.init_state(config, data.problems.op.in_shape), data), mesh)
    state, loss = step(state, d)  # compile
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(steps):
      state, loss = step(state, d)
    jax.block_until_ready(loss)
    info[f"steps_per_s_{n or 'nomesh'}"] = steps / (time.perf_counter() - start)
  return {}, info


T0 = time.time()


def main():
  mode, out = sys.argv[1], sys.argv[2]
  os.makedirs(out, exist_ok=True)
  start = time.time()
  if mode == "bench":
    arrays, info = bench(out, int(sys.argv[3]) if len(sys.argv) > 3 else 50)
  elif mode == "multihost":
    arrays, info = multihost(out, int(sys.argv[3]), int(sys.argv[4]))
    mode = f"multihost{sys.argv[3]}"
  else:
    arrays, info = {"multi": multi, "single": single}[mode](out)
  info["wall_seconds"] = time.time() - start
  np.savez(os.path.join(out, f"{mode}.npz"), **arrays)
  with open(os.path.join(out, f"{mode}.json"), "w") as f:
    json.dump(info, f, indent=1)
  print(json.dumps(info, indent=1))


if __name__ == "__main__":
  main()
