"""What the speed benchmark measures for one task: single-instance solves against the floor and
the parts alone, the network's share of a learned iteration, and vmapped batches (time-to-accuracy
is ``--mode=accuracy``: ``accuracy.py``)."""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments import methods as registry
from experiments.bench.config import BenchConfig, task_of
from experiments.bench.timing import (batch_init_fn, batch_solve_fn, compile_fn, floor_fn,
                                      init_fn, interleaved, jaxopt_fn, loadavg, median,
                                      paired_ratio, parts_fns, policy_fn, solve_fn)
from jsgp import training
from jsgp.data import load_ct_slices, load_images
from jsgp.nets import UNetConfig, init_network
from jsgp.policies import NUM_INPUT_CHANNELS, LearnedPolicy
from jsgp.problems import simulate, simulate_batch

# Operator applications per iteration, nominal (FISTA's backtracks are measured).
NOMINAL_OPS = {"pgm": "1 A + 1 At", "fista": "1 A + 1 At", "fista_b": "(1+bt) A + 1 At",
               "mfista": "1 A + 1 At", "fista_restart": "1 A + 1 At", "sgp_bb": "1 A + 1 At",
               "sgp_bb1": "1 A + 1 At", "sparsa": "(1+bt) A + 1 At",
               "douglas_rachford": "1 A + 1 W + (I + t M^T M)^-1",
               "step_learned": "2 A + 2 At + net", "diag_learned": "2 A + 2 At + net"}
# Methods whose recorded backtracks each cost one A (a fresh residual per trial); SGP's Armijo
# trials are elementwise.
A_PER_BACKTRACK = ("fista_b", "sparsa")


def is_learned(name: str) -> bool:
  return registry.REGISTRY[name].kind == "learned"


# ------------------------------------------------------------------------------------------------
# Methods.

def load_trained(checkpoint_dir: str, head: str) -> LearnedPolicy:
  """The trained ``head`` policy from ``<checkpoint_dir>/<head>`` (the experiments' layout),
  with the network configuration recorded in the checkpoint."""
  policy = training.load_policy(os.path.join(checkpoint_dir, head))
  if policy.config.head != head:
    raise ValueError(f"checkpoint {checkpoint_dir}/{head} holds a {policy.config.head!r} network")
  return policy


def net_config(net: str, head: str) -> UNetConfig:
  return UNetConfig.small(head) if net == "small" else UNetConfig.paper(head)


@functools.lru_cache(maxsize=None)
def _policy(net: str, head: str, canvas: Tuple[int, int], seed: int,
            checkpoint_dir: Optional[str]) -> LearnedPolicy:
  if checkpoint_dir:
    return load_trained(checkpoint_dir, head)
  config = net_config(net, head)
  return LearnedPolicy(init_network(config, jax.random.PRNGKey(seed),
                                    tuple(canvas) + (NUM_INPUT_CHANNELS,)), config)


def make_method(name: str, canvas: Tuple[int, int], cfg: BenchConfig):
  """The solver of registry method ``name``; learned ones with a fresh or loaded network."""
  spec = registry.REGISTRY[name]
  if spec.kind != "learned":
    return spec.solver()
  return spec.solver(_policy(cfg.net, spec.head, tuple(canvas), cfg.seed, cfg.checkpoint))


# ------------------------------------------------------------------------------------------------
# Data.

def ct_available() -> Optional[str]:
  """None if the CT projector imports, else why not."""
  try:
    from jsgp.operators.radon import parallel_beam  # pylint: disable=import-outside-toplevel,unused-import
  except Exception as err:  # pylint: disable=broad-except
    return f"{type(err).__name__}: {err}"
  return None


N_CT_TRAIN = 15  # the real slices a policy trains on (experiments.train_policy)


def images_for(name: str, cfg: BenchConfig, count: int, notes: List[str],
               held_out: bool = False) -> np.ndarray:
  """``count`` images (cycled if the set is smaller) for task ``name``, ``(count, H, W)``: the
  test split; CT with ``held_out``: the slices after the first ``N_CT_TRAIN``."""
  dtype = np.dtype(cfg.dtype)
  if name != "ct":
    images = load_images(cfg.data_dir, "test", cfg.size, dtype=dtype)
  else:
    try:
      if held_out:
        images = load_ct_slices(cfg.ct_data_dir, cfg.ct_size, n=min(N_CT_TRAIN + count, 20),
                                dtype=dtype)[N_CT_TRAIN:]
        if not len(images):
          raise ValueError(f"no held-out CT slices at {cfg.ct_data_dir} (the first {N_CT_TRAIN} "
                           "train the policies)")
      else:
        images = load_ct_slices(cfg.ct_data_dir, cfg.ct_size, n=min(count, 20), dtype=dtype)
    except (FileNotFoundError, ValueError) as err:
      from skimage import data as skdata, transform  # pylint: disable=import-outside-toplevel
      note = (f"CT: no slices at {cfg.ct_data_dir} ({err}); using the Shepp-Logan phantom "
              f"resized to {cfg.ct_size}, scaled to 0-255.")
      if note not in notes:
        notes.append(note)
        print(note)
      phantom = transform.resize(skdata.shepp_logan_phantom(), (cfg.ct_size, cfg.ct_size),
                                 anti_aliasing=True)
      images = (255.0 * phantom / phantom.max())[None].astype(dtype)
  return np.resize(images, (count,) + images.shape[1:])


# ------------------------------------------------------------------------------------------------
# The benchmark.

def bench_task(name: str, cfg: BenchConfig, notes: List[str]) -> Dict[str, Any]:
  is_ct = name == "ct"
  iters = cfg.ct_iters if is_ct else cfg.iters
  task = task_of(name, cfg)
  key = jax.random.PRNGKey(cfg.seed)
  image = images_for(name, cfg, 1, notes)[0]
  start = time.perf_counter()
  problem = jax.block_until_ready(simulate(task, jnp.asarray(image), key))
  simulate_s = time.perf_counter() - start
  canvas = tuple(problem.op.in_shape)
  x0 = jnp.zeros(canvas, image.dtype)
  out: Dict[str, Any] = {
      "task": repr(task), "image_shape": list(task.image_shape), "canvas": list(canvas),
      "measurements": list(problem.op.out_shape), "lam": float(problem.lam),
      "lipschitz": float(problem.lipschitz), "iters": iters, "simulate_s": simulate_s,
      "load_start": loadavg(), "methods": {},
  }
  print(f"\n== {name}: image {task.image_shape}, canvas {canvas}, {iters} iterations x "
        f"{cfg.repeats} repeats (simulate {simulate_s:.1f} s) ==", flush=True)

  # 1-3 (+6): single-instance solves, the floor, the parts and the policy calls, interleaved.
  usable, skipped = registry.runnable_on(name, cfg.methods)
  for m in skipped:
    notes.append(f"{m} skipped on {name}: its measurement has no cheap (I + t A^T A)^-1")
  methods = {m: make_method(m, canvas, cfg) for m in usable}
  jobs, compile_s = {}, {}
  compiled, compile_s["floor"] = compile_fn(floor_fn(iters), problem, x0)
  jobs["floor"] = (compiled, (problem, x0))
  for m, method in methods.items():
    compiled, compile_s[m] = compile_fn(solve_fn(iters), method, problem, x0)
    jobs[m] = (compiled, (method, problem, x0))
    compiled, _ = compile_fn(init_fn, method, problem, x0)
    jobs[f"init_{m}"] = (compiled, (method, problem, x0))
    print(f"  compiled {registry.label(m):18s} {compile_s[m]:6.2f} s", flush=True)
  grad_probe = problem.grad(x0)
  x_probe = x0 - grad_probe / problem.lipschitz  # a nonzero, iterate-like input for the network
  grad_probe = problem.grad(x_probe)
  for m in methods:
    if is_learned(m):
      policy = methods[m].policy
      compiled, compile_s[f"policy_{m}"] = compile_fn(policy_fn(iters), policy, problem, x_probe,
                                                      grad_probe)
      jobs[f"policy_{m}"] = (compiled, (policy, problem, x_probe, grad_probe))
  if cfg.parts:
    for part, fn in parts_fns(iters).items():
      compiled, compile_s[f"part_{part}"] = compile_fn(fn, problem, x0)
      jobs[f"part_{part}"] = (compiled, (problem, x0))
  peer = jaxopt_fn(iters) if cfg.peers else None
  if peer is not None:
    compiled, compile_s["jaxopt"] = compile_fn(peer, problem, x0)
    jobs["jaxopt"] = (compiled, (problem, x0))
  times, outputs = interleaved(jobs, cfg.repeats)
  phase_s = {"timing": time.perf_counter() - start - simulate_s}

  floor_ms = 1e3 * median(times["floor"]) / iters
  out.update(floor_ms=floor_ms, floor_compile_s=compile_s["floor"])
  if cfg.parts:
    out["parts_ms"] = {p: 1e3 * median(times[f"part_{p}"]) / iters
                       for p in parts_fns(1)}
  for m in methods:
    result = outputs[m]
    n = int(result.num_iter)
    backtracks = np.asarray(result.history.backtracks)[1:n + 1]
    # Time of the iterations alone: the solve minus its init (one A, and one A^T for most
    # methods), per round.
    iter_times = [t - t0 for t, t0 in zip(times[m], times[f"init_{m}"])]
    ms = 1e3 * median(iter_times) / n
    entry = {
        "label": registry.label(m), "compile_s": compile_s[m], "ms_per_iter": ms,
        "ms_per_iter_min": 1e3 * min(iter_times) / n,
        "ms_per_iter_with_init": 1e3 * median(times[m]) / n,
        "init_ms": 1e3 * median(times[f"init_{m}"]), "num_iter": n,
        "x_floor": paired_ratio(iter_times, times["floor"], iters / n),
        "mean_backtracks": float(np.mean(backtracks)) if n else 0.0,
        "ops_per_iter": NOMINAL_OPS[m], "objective_end": float(result.state.objective),
    }
    if m in A_PER_BACKTRACK:
      entry["A_per_iter"] = 1.0 + entry["mean_backtracks"]
      if cfg.parts:  # the floor plus one A per backtrack: what the method's work should cost
        expected = floor_ms + entry["mean_backtracks"] * out["parts_ms"]["A"]
        entry["x_floor_backtrack_adjusted"] = ms / expected
    elif not is_learned(m):
      entry["A_per_iter"] = 1.0
    if is_learned(m):
      policy_times = times[f"policy_{m}"]
      entry["policy_ms"] = 1e3 * median(policy_times) / iters
      entry["policy_compile_s"] = compile_s[f"policy_{m}"]
      entry["net_share"] = paired_ratio(policy_times, iter_times, n / iters)
      entry["x_floor_without_net"] = median(
          [(t / n - p / iters) / (f / iters)
           for t, p, f in zip(iter_times, policy_times, times["floor"])])
      entry["policy_on_at_end"] = bool(result.state.use_policy)
      entry["A_per_iter"] = 2.0
    if peer is not None and m in ("fista", "fista_b"):
      entry["jaxopt_ms_per_iter"] = 1e3 * median(times["jaxopt"]) / iters
      entry["jaxopt_compile_s"] = compile_s["jaxopt"]
      entry["x_jaxopt"] = paired_ratio(times[m], times["jaxopt"], iters / n)  # both with init
      entry["jaxopt_iters"] = int(outputs["jaxopt"].state.iter_num)
    out["methods"][m] = entry
  if peer is not None:
    out["jaxopt_x_floor"] = paired_ratio(times["jaxopt"], times["floor"])  # init included
  if peer is None and cfg.peers:
    out["peers_note"] = "jaxopt is not installed"

  # 4: batches.
  phase_start = time.perf_counter()
  batch_sizes = cfg.ct_batch_sizes if is_ct else cfg.batch_sizes
  out["batch"] = bench_batches(name, task, batch_sizes, methods, cfg, notes) if batch_sizes else None
  phase_s["batch"] = time.perf_counter() - phase_start
  out["phase_s"] = phase_s
  out["load_end"] = loadavg()
  return out


def bench_batches(name, task, batch_sizes, methods, cfg, notes) -> Dict[str, Any]:
  iters = cfg.batch_iters
  images = images_for(name, cfg, max(batch_sizes), notes)
  result: Dict[str, Any] = {"iters": iters, "sizes": list(batch_sizes), "ips": {}}
  for b in batch_sizes:
    problems = simulate_batch(task, jnp.asarray(images[:b]), jax.random.PRNGKey(cfg.seed + 1))
    x0 = jnp.zeros((b,) + tuple(problems.op.in_shape), images.dtype)
    jobs = {}
    compiled, _ = compile_fn(jax.vmap(floor_fn(iters)), problems, x0)
    jobs["floor"] = (compiled, (problems, x0))
    grouped = {}
    for m, method in methods.items():
      compiled, _ = compile_fn(batch_solve_fn(iters), method, problems, x0)
      jobs[m] = (compiled, (method, problems, x0))
      # vmap turns a convolution whose kernel got a batch axis into a grouped convolution
      # (feature_group_count = batch), which XLA:CPU runs far slower than a batched one.
      grouped[m] = compiled.as_text().count("feature_group_count=") if b > 1 else 0
      compiled, _ = compile_fn(batch_init_fn, method, problems, x0)
      jobs[f"init_{m}"] = (compiled, (method, problems, x0))
    times, outputs = interleaved(jobs, cfg.repeats)
    ips = {"floor": b * iters / median(times["floor"])}
    for m in methods:
      n = int(np.max(np.asarray(outputs[m].num_iter)))
      ips[m] = b * n / median([t - t0 for t, t0 in zip(times[m], times[f"init_{m}"])])
    result["ips"][str(b)] = ips
    result.setdefault("grouped_convolutions", {})[str(b)] = grouped
    print(f"  batch {b:3d}: " + ", ".join(f"{k} {v:.0f}" for k, v in ips.items())
          + " images x iterations / s", flush=True)
    del problems, jobs, outputs
  lo, hi = str(min(batch_sizes)), str(max(batch_sizes))
  result["largest_over_smallest"] = {
      job: result["ips"][hi][job] / result["ips"][lo][job] for job in result["ips"][lo]}
  return result

