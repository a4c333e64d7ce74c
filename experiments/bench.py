r"""Speed benchmark of the solvers on the current JAX backend: ``python -m experiments.bench``.

For every task (inpainting, partial Fourier, deblurring at ``--size``; sparse-view CT at
``--ct_size`` with ``--ct_views`` views) and every method (PGM, FISTA-b, SGP-BB, DRS with a learned
stepsize, DRS with a learned diagonal) it measures, each solve being ONE compiled call:

1. compile time (``jax.jit(f).lower(...).compile()``) and the median time per iteration of warm
   solves of ``--iters`` iterations (``block_until_ready``; ``--repeats`` >= 3, median);
2. the floor measured in the same run, interleaved with the solves: one ``A`` + one ``A^T`` + one
   soft threshold jitted together (``x <- prox(x - t A^T(A x - y))`` in a ``fori_loop`` of the same
   length), and each method's time per iteration / floor (the median of the paired per-repeat
   ratios); plus the parts (``A``, ``A^T``, prox, objective reductions) timed alone;
3. the network's share of a learned iteration: the policy call alone / the learned iteration;
4. throughput (images x iterations / s) of the vmapped solve over a batch of problems, each with
   its own random operator (``simulate_batch``), at ``--batch_sizes``; ratio largest / batch 1;
5. time-to-accuracy: iterations until the NMSE is within ``--tta_db`` dB of the converged value
   (FISTA, ``--converged_iters`` iterations); seconds = iterations x the measured time per
   iteration of (1) (which runs without the per-iteration NMSE bookkeeping);
6. ``--peers``: jaxopt's accelerated ProximalGradient (FISTA, fixed step 1/L) on the same problem,
   when jaxopt is importable (it is not a dependency of this project).

Writes ``--out_dir``/bench.json and bench.md and prints the Markdown tables.

Learned policies: without ``--checkpoint_dir`` the network is freshly initialised (fixed key).
Its last layer starts at zero, so it outputs the 1/L step: the cost per iteration is the real one,
but the time-to-accuracy of "step"/"diag" is that of an UNTRAINED policy.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from jsgp import train
from jsgp.data import load_ct_slices, load_images
from jsgp.nets import UNetConfig, init_network
from jsgp.operators import sum_squares
from jsgp.policies import NUM_INPUT_CHANNELS, LearnedPolicy
from jsgp.problems import Task, simulate, simulate_batch
from jsgp.prox import soft_threshold
from jsgp.solvers import DRS, FISTA, PGM, SGP, run
from jsgp.solvers.driver import for_vmap

ALL_TASKS = ("inpainting", "fourier", "deblur", "ct")
ALL_METHODS = ("pgm", "fista", "sgp", "step", "diag")
METHOD_LABELS = {"pgm": "PGM", "fista": "FISTA-b", "sgp": "SGP-BB", "step": "step-learned",
                 "diag": "diag-learned"}
LEARNED = ("step", "diag")
# Operator applications per iteration, nominal (FISTA's backtracks are measured).
NOMINAL_OPS = {"pgm": "1 A + 1 At", "fista": "(1+bt) A + 1 At", "sgp": "1 A + 1 At",
               "step": "2 A + 2 At + net", "diag": "2 A + 2 At + net"}
# Targets of the brief.
FLOOR_TARGET = 1.3
BATCH_TARGET = 1.5
# Forces exactly max_iter iterations: the driver stops when |dF| <= tol |F|, never true for tol < 0.
NO_STOP = -1.0

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CT_DIR = os.path.join(REPO_ROOT, "..", "shared", "data", "ct")

QUICK = {  # what --quick changes (flags given explicitly on the command line win)
    "iters": 20, "ct_iters": 3, "repeats": 3, "batch_sizes": ["1", "8"], "batch_iters": 3,
    "ct_batch_sizes": [], "tta_iters": 300, "ct_tta": False,
}

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", list(ALL_TASKS), f"Tasks, from {ALL_TASKS}.")
flags.DEFINE_list("methods", list(ALL_METHODS), f"Methods, from {ALL_METHODS}.")
flags.DEFINE_integer("size", 256, "Image side of inpainting / fourier / deblur.")
flags.DEFINE_integer("ct_size", 512, "Image side of CT.")
flags.DEFINE_integer("ct_views", 144, "CT projection angles.")
flags.DEFINE_integer("iters", 50, "Iterations of each timed solve (non-CT).")
flags.DEFINE_integer("ct_iters", 10, "Iterations of each timed CT solve.")
flags.DEFINE_integer("repeats", 5, "Timed warm repeats (>= 3); the median is reported.")
flags.DEFINE_list("batch_sizes", ["1", "8", "32"], "Batch sizes of the vmapped solves (non-CT); "
                  "empty to skip.")
flags.DEFINE_list("ct_batch_sizes", ["1", "8"], "Batch sizes for CT; empty to skip.")
flags.DEFINE_integer("batch_iters", 20, "Iterations of each timed batched solve.")
flags.DEFINE_integer("converged_iters", 1200, "FISTA iterations defining the converged NMSE.")
flags.DEFINE_integer("tta_iters", 1200, "Iterations each method gets to reach the NMSE target.")
flags.DEFINE_float("tta_db", 0.5, "Time-to-accuracy tolerance (dB) around the converged NMSE.")
flags.DEFINE_bool("ct_tta", True, "Run time-to-accuracy for CT as well (slow on CPU).")
flags.DEFINE_string("data_dir", None, "BSDS500 root (e.g. /work/shared/data/bsds500); default: "
                    "the embedded scikit-image test images.")
flags.DEFINE_string("ct_data_dir", DEFAULT_CT_DIR, "CT slices (jsgp.data.load_ct_slices); a "
                    "Shepp-Logan phantom when absent.")
flags.DEFINE_string("checkpoint_dir", None, "An experiment's checkpoint folder holding step/ and "
                    "diag/ (e.g. out/fourier_demo/checkpoints); default: freshly initialised "
                    "networks.")
flags.DEFINE_enum("net", "small", ["small", "paper"], "UNetConfig preset of the policies.")
flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "Image / problem dtype.")
flags.DEFINE_bool("peers", False, "Also time jaxopt.ProximalGradient (accelerated) if installed.")
flags.DEFINE_bool("parts", True, "Also time A, A^T, prox and the objective reductions alone.")
flags.DEFINE_integer("seed", 0, "PRNG seed (operators, network initialisation).")
flags.DEFINE_string("out_dir", "out/bench", "Where bench.json and bench.md go.")
flags.DEFINE_bool("quick", False, "Run in under ~10 minutes on a 2-core CPU: "
                  + ", ".join(f"--{k}={','.join(v) if isinstance(v, list) else v}"
                              for k, v in QUICK.items())
                  + " (so: 3 repeats, batch sizes 1 and 8, CT timed but without its "
                  "time-to-accuracy and batch runs; sizes unchanged). Explicit flags win.")


@dataclasses.dataclass
class BenchConfig:
  tasks: Sequence[str] = ALL_TASKS
  methods: Sequence[str] = ALL_METHODS
  size: int = 256
  ct_size: int = 512
  ct_views: int = 144
  iters: int = 50
  ct_iters: int = 10
  repeats: int = 5
  batch_sizes: Sequence[int] = (1, 8, 32)
  ct_batch_sizes: Sequence[int] = (1, 8)
  batch_iters: int = 20
  converged_iters: int = 1200
  tta_iters: int = 1200
  tta_db: float = 0.5
  ct_tta: bool = True
  data_dir: Optional[str] = None
  ct_data_dir: Optional[str] = DEFAULT_CT_DIR
  checkpoint_dir: Optional[str] = None
  net: str = "small"
  dtype: str = "float32"
  peers: bool = False
  parts: bool = True
  seed: int = 0
  out_dir: str = "out/bench"
  quick: bool = False

  def validate(self):
    bad = [t for t in self.tasks if t not in ALL_TASKS]
    if bad or not self.tasks:
      raise ValueError(f"--tasks must be a non-empty subset of {ALL_TASKS}, got {self.tasks}.")
    bad = [m for m in self.methods if m not in ALL_METHODS]
    if bad or not self.methods:
      raise ValueError(f"--methods must be a non-empty subset of {ALL_METHODS}, got "
                       f"{self.methods}.")
    if self.repeats < 3:
      raise ValueError(f"--repeats must be >= 3 (median of warm runs), got {self.repeats}.")
    for name in ("iters", "ct_iters", "batch_iters", "converged_iters", "tta_iters"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
    if any(b < 1 for b in list(self.batch_sizes) + list(self.ct_batch_sizes)):
      raise ValueError("batch sizes must be >= 1.")
    if not self.tta_db > 0:
      raise ValueError(f"--tta_db must be > 0, got {self.tta_db}.")


def config_from_flags() -> BenchConfig:
  values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(BenchConfig)}
  if FLAGS.quick:
    for name, value in QUICK.items():
      if not FLAGS[name].present:
        values[name] = value
  values["batch_sizes"] = [int(b) for b in values["batch_sizes"]]
  values["ct_batch_sizes"] = [int(b) for b in values["ct_batch_sizes"]]
  values["tasks"] = [t.strip() for t in values["tasks"]]
  values["methods"] = [m.strip() for m in values["methods"]]
  return BenchConfig(**values)


# ------------------------------------------------------------------------------------------------
# Policies.

def load_trained(checkpoint_dir: str, head: str) -> LearnedPolicy:
  """The trained ``head`` policy from ``<checkpoint_dir>/<head>`` (the experiments' layout),
  with the network configuration recorded in the checkpoint."""
  policy = train.load_trained_policy(os.path.join(checkpoint_dir, head))
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
  if name == "pgm":
    return PGM()
  if name == "fista":
    return FISTA()
  if name == "sgp":
    return SGP()
  return DRS(_policy(cfg.net, name, tuple(canvas), cfg.seed, cfg.checkpoint_dir))


# ------------------------------------------------------------------------------------------------
# Timing helpers.

def compile_fn(fn: Callable, *args):
  """``(compiled, seconds)``: lower + compile of ``jax.jit(fn)`` on ``args``."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


def timed_call(compiled, args) -> Tuple[float, Any]:
  start = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  return time.perf_counter() - start, out


def interleaved(jobs: Dict[str, Tuple[Any, tuple]], repeats: int):
  """Warm each job once, then time ``repeats`` rounds, jobs interleaved within a round so that
  background load hits them alike. Returns ``({name: [seconds per round]}, {name: warm output})``.
  """
  outputs = {name: timed_call(c, a)[1] for name, (c, a) in jobs.items()}
  times = {name: [] for name in jobs}
  for _ in range(repeats):
    for name, (compiled, args) in jobs.items():
      times[name].append(timed_call(compiled, args)[0])
  return times, outputs


def median(values) -> float:
  return float(np.median(np.asarray(values, np.float64)))


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float], scale=1.0) -> float:
  """Median over rounds of ``numerator / denominator * scale`` (paired: same round)."""
  return median([n / d * scale for n, d in zip(numerator, denominator)])


def loadavg() -> Optional[List[float]]:
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return None


# ------------------------------------------------------------------------------------------------
# What is timed. Everything below is a pure function of arrays/pytrees, jitted whole.

def solve_fn(max_iter: int):
  return lambda method, problem, x0: run(method, problem, x0, max_iter, jnp.asarray(NO_STOP))


def solve_reference_fn(max_iter: int):
  return lambda method, problem, x0, ref: run(method, problem, x0, max_iter,
                                               jnp.asarray(NO_STOP), ref)


def init_fn(method, problem, x0):
  return method.init(problem, x0)


def batch_init_fn(method, problem, x0):
  return jax.vmap(init_fn, in_axes=(None, 0, 0))(for_vmap(method), problem, x0)


def batch_solve_fn(max_iter: int):
  """Vmapped solve, with the method's vmap variant (as ``jsgp.solvers.solve`` uses)."""
  return lambda method, problem, x0: jax.vmap(run, in_axes=(None, 0, 0, None, None))(
      for_vmap(method), problem, x0, max_iter, jnp.asarray(NO_STOP))


def floor_fn(n: int):
  """``n`` x (one ``A``, one ``A^T``, one soft threshold): the cheapest possible iteration."""

  def floor(problem, x):
    t = 1.0 / problem.lipschitz

    def body(_, x):
      return soft_threshold(x - t * problem.op.adjoint(problem.op.apply(x) - problem.y),
                            problem.lam * t)

    return jax.lax.fori_loop(0, n, body, x)

  return floor


TINY = 1e-30  # loop-carried dependencies that change nothing but keep XLA from hoisting the work


def parts_fns(n: int) -> Dict[str, Callable]:
  """Each part alone, ``n`` times in a ``fori_loop``, threaded through the carry."""

  def forward(problem, x):
    return jax.lax.fori_loop(
        0, n, lambda _, x: x + TINY * jnp.real(jnp.sum(problem.op.apply(x))), x)

  def adjoint(problem, x):
    def body(_, r):
      return r + TINY * jnp.sum(problem.op.adjoint(r))
    return jnp.sum(jnp.real(jax.lax.fori_loop(0, n, body, problem.y)))

  def prox(problem, x):
    t = 1.0 / problem.lipschitz
    g = jnp.ones_like(x)
    return jax.lax.fori_loop(
        0, n, lambda _, x: soft_threshold(x - t * g, problem.lam * t) + 1.0, x)

  def objective(problem, x):
    def body(_, carry):
      x, value = carry
      value = 0.5 * sum_squares(problem.y + TINY * value) + problem.lam * jnp.sum(jnp.abs(x))
      return x + TINY * value, value
    return jax.lax.fori_loop(0, n, body, (x, jnp.zeros((), x.dtype)))[1]

  return {"A": forward, "At": adjoint, "prox": prox, "objective": objective}


def policy_fn(n: int):
  """``n`` policy calls (network inputs, U-Net, exp) threaded through the iterate."""

  def policy_loop(policy, problem, x, grad):
    def body(_, x):
      return x + TINY * policy(problem, x, grad)
    return jax.lax.fori_loop(0, n, body, x)

  return policy_loop


def jaxopt_fn(n: int):
  """jaxopt's FISTA (``acceleration=True``, fixed step 1/L) for ``n`` iterations, or None."""
  try:
    import jaxopt  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None

  def solve(problem, x0):
    step = 1.0 / problem.lipschitz
    solver = jaxopt.ProximalGradient(
        fun=lambda x, problem: problem.f(x), prox=jaxopt.prox.prox_lasso,
        stepsize=lambda _: step, maxiter=n, tol=NO_STOP, acceleration=True, jit=True,
        implicit_diff=False)
    return solver.run(x0, hyperparams_prox=problem.lam, problem=problem)

  return solve


# ------------------------------------------------------------------------------------------------
# Data.

def task_of(name: str, cfg: BenchConfig) -> Task:
  if name == "ct":
    return Task("ct", (cfg.ct_size, cfg.ct_size), n_views=cfg.ct_views)
  return Task(name, (cfg.size, cfg.size))


def ct_available() -> Optional[str]:
  """None if the CT projector imports, else why not."""
  try:
    from jsgp.operators.radon import parallel_beam  # pylint: disable=import-outside-toplevel,unused-import
  except Exception as err:  # pylint: disable=broad-except
    return f"{type(err).__name__}: {err}"
  return None


def images_for(name: str, cfg: BenchConfig, count: int, notes: List[str]) -> np.ndarray:
  """``count`` images (cycled if the set is smaller) for task ``name``, ``(count, H, W)``."""
  dtype = np.dtype(cfg.dtype)
  if name != "ct":
    images = load_images(cfg.data_dir, "test", cfg.size, dtype=dtype)
  else:
    try:
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
  methods = {m: make_method(m, canvas, cfg) for m in cfg.methods}
  jobs, compile_s = {}, {}
  compiled, compile_s["floor"] = compile_fn(floor_fn(iters), problem, x0)
  jobs["floor"] = (compiled, (problem, x0))
  for m, method in methods.items():
    compiled, compile_s[m] = compile_fn(solve_fn(iters), method, problem, x0)
    jobs[m] = (compiled, (method, problem, x0))
    compiled, _ = compile_fn(init_fn, method, problem, x0)
    jobs[f"init_{m}"] = (compiled, (method, problem, x0))
    print(f"  compiled {METHOD_LABELS[m]:13s} {compile_s[m]:6.2f} s", flush=True)
  grad_probe = problem.grad(x0)
  x_probe = x0 - grad_probe / problem.lipschitz  # a nonzero, iterate-like input for the network
  grad_probe = problem.grad(x_probe)
  for m in methods:
    if m in LEARNED:
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
        "label": METHOD_LABELS[m], "compile_s": compile_s[m], "ms_per_iter": ms,
        "ms_per_iter_min": 1e3 * min(iter_times) / n,
        "ms_per_iter_with_init": 1e3 * median(times[m]) / n,
        "init_ms": 1e3 * median(times[f"init_{m}"]), "num_iter": n,
        "x_floor": paired_ratio(iter_times, times["floor"], iters / n),
        "mean_backtracks": float(np.mean(backtracks)) if n else 0.0,
        "ops_per_iter": NOMINAL_OPS[m], "objective_end": float(result.state.objective),
    }
    if m == "fista":
      entry["A_per_iter"] = 1.0 + entry["mean_backtracks"]
      if cfg.parts:  # the floor plus one A per backtrack: what FISTA-b's work should cost
        expected = floor_ms + entry["mean_backtracks"] * out["parts_ms"]["A"]
        entry["x_floor_backtrack_adjusted"] = ms / expected
    elif m in ("pgm", "sgp"):
      entry["A_per_iter"] = 1.0
    if m in LEARNED:
      policy_times = times[f"policy_{m}"]
      entry["policy_ms"] = 1e3 * median(policy_times) / iters
      entry["policy_compile_s"] = compile_s[f"policy_{m}"]
      entry["net_share"] = paired_ratio(policy_times, iter_times, n / iters)
      entry["x_floor_without_net"] = median(
          [(t / n - p / iters) / (f / iters)
           for t, p, f in zip(iter_times, policy_times, times["floor"])])
      entry["policy_on_at_end"] = bool(result.state.use_policy)
      entry["A_per_iter"] = 2.0
    if peer is not None and m == "fista":
      entry["jaxopt_ms_per_iter"] = 1e3 * median(times["jaxopt"]) / iters
      entry["jaxopt_compile_s"] = compile_s["jaxopt"]
      entry["x_jaxopt"] = paired_ratio(times[m], times["jaxopt"], iters / n)  # both with init
      entry["jaxopt_iters"] = int(outputs["jaxopt"].state.iter_num)
    out["methods"][m] = entry
  if peer is None and cfg.peers:
    out["peers_note"] = "jaxopt is not installed"

  # 5: time-to-accuracy.
  phase_start = time.perf_counter()
  if not is_ct or cfg.ct_tta:
    out["tta"] = time_to_accuracy(problem, x0, jnp.asarray(image), methods, out, cfg)
  else:
    out["tta"] = None
  phase_s["tta"] = time.perf_counter() - phase_start

  # 4: batches.
  phase_start = time.perf_counter()
  batch_sizes = cfg.ct_batch_sizes if is_ct else cfg.batch_sizes
  out["batch"] = bench_batches(name, task, batch_sizes, methods, cfg, notes) if batch_sizes else None
  phase_s["batch"] = time.perf_counter() - phase_start
  out["phase_s"] = phase_s
  out["load_end"] = loadavg()
  return out


# The converged reference: FISTA with the constant step 1/L (problem.lipschitz, an upper estimate
# of ||A||^2), i.e. FISTA-b with its backtracking disabled. In float32 FISTA-b's backtracking test
# (f(p) <= f(z) + <grad, p - z> + L/2 ||p - z||^2, with f ~ 1e5..1e8) starts failing by round-off
# once the steps get small: each iteration then spends all 40 backtracks, L grows by 2^40 until
# the stepsize underflows to 0 and the objective rises; that would corrupt the reference.
REFERENCE_METHOD = FISTA(max_backtracks=0)
REFERENCE_LABEL = "FISTA, constant step 1/L (no backtracking)"


def time_to_accuracy(problem, x0, image, methods, out, cfg) -> Dict[str, Any]:
  ref_fn = solve_reference_fn(cfg.converged_iters)
  compiled, _ = compile_fn(ref_fn, REFERENCE_METHOD, problem, x0, image)
  seconds, result = timed_call(compiled, (REFERENCE_METHOD, problem, x0, image))
  converged = float(result.history.nmse[int(result.num_iter)])
  objective = np.asarray(result.history.objective)[:int(result.num_iter) + 1]
  tta = {"converged_nmse_db": converged, "converged_iters": cfg.converged_iters,
         "converged_method": REFERENCE_LABEL, "converged_s": seconds, "tol_db": cfg.tta_db,
         "max_iters": cfg.tta_iters,
         "converged_objective_rise": float(objective[-1] / np.min(objective) - 1.0)}
  print(f"  converged NMSE {converged:.2f} dB ({REFERENCE_LABEL}, {cfg.converged_iters} "
        f"iterations, {seconds:.1f} s)", flush=True)
  for m, method in methods.items():
    compiled, _ = compile_fn(solve_reference_fn(cfg.tta_iters), method, problem, x0, image)
    _, result = timed_call(compiled, (method, problem, x0, image))
    n = int(result.num_iter)
    nmse = np.asarray(result.history.nmse)[:n + 1]
    objective = np.asarray(result.history.objective)[:n + 1]
    hits = np.nonzero(np.abs(nmse - converged) <= cfg.tta_db)[0]
    entry = out["methods"][m]
    entry["final_nmse_db"] = float(nmse[-1])
    # Health of the long run: backtracks per iteration, and how far F rose above its minimum.
    entry["tta_run_mean_backtracks"] = float(np.mean(np.asarray(result.history.backtracks)[1:n + 1]))
    entry["tta_run_objective_rise"] = float(objective[-1] / np.min(objective) - 1.0)
    if hits.size:
      k = int(hits[0])
      entry.update(tta_iters=k, tta_s=k * entry["ms_per_iter"] / 1e3, tta_reached=True)
    else:
      entry.update(tta_iters=None, tta_s=None, tta_reached=False)
  return tta


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


def run_bench(cfg: BenchConfig) -> Dict[str, Any]:
  cfg.validate()
  if cfg.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  started = time.perf_counter()
  env = environment()
  env["dtype"] = cfg.dtype
  notes: List[str] = []
  print(f"device {env['device']} ({env['backend']}, {env['cpu']}, {env['cpu_count']} cores), "
        f"jax {env['jax']}, dtype {cfg.dtype}, load {loadavg()}", flush=True)
  if cfg.peers and jaxopt_fn(1) is None:
    notes.append("--peers: jaxopt is not installed; no peer comparison.")
    print(notes[-1])
  if not cfg.checkpoint_dir:
    notes.append("Learned policies are freshly initialised (no --checkpoint_dir): their zero "
                 "last layer outputs the 1/L step, so their cost per iteration is real but "
                 "their time-to-accuracy is that of an untrained policy.")
  tasks = {}
  for name in cfg.tasks:
    if name == "ct":
      why = ct_available()
      if why is not None:
        notes.append(f"CT skipped: the projector does not import ({why}).")
        print(notes[-1])
        continue
    tasks[name] = bench_task(name, cfg, notes)
  report = {
      "environment": env, "config": dataclasses.asdict(cfg), "tasks": tasks, "notes": notes,
      "wall_s": time.perf_counter() - started,
      "finished": datetime.datetime.now().isoformat(timespec="seconds"),
  }
  report["targets"] = targets(report)
  report["load_end"] = loadavg()
  os.makedirs(cfg.out_dir, exist_ok=True)
  markdown = to_markdown(report)
  with open(os.path.join(cfg.out_dir, "bench.json"), "w") as f:
    json.dump(report, f, indent=1, default=_json_default)
  with open(os.path.join(cfg.out_dir, "bench.md"), "w") as f:
    f.write(markdown)
  print("\n" + markdown)
  print(f"wrote {os.path.join(cfg.out_dir, 'bench.json')} and bench.md "
        f"({report['wall_s']:.0f} s)")
  return report


def _json_default(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.bool_):
    return bool(value)
  raise TypeError(f"not JSON serialisable: {type(value)}")


def targets(report) -> List[Dict[str, Any]]:
  """The brief's targets, each with the measured value and whether it is met."""
  rows = []
  for task, t in report["tasks"].items():
    for m in ("pgm", "sgp"):
      if m in t["methods"]:
        value = t["methods"][m]["x_floor"]
        rows.append({"target": f"{task} {METHOD_LABELS[m]} time/iter <= {FLOOR_TARGET} x floor",
                     "value": value, "met": value <= FLOOR_TARGET})
    if "fista" in t["methods"]:
      e = t["methods"]["fista"]
      value = e.get("x_floor_backtrack_adjusted", e["x_floor"])
      rows.append({"target": f"{task} FISTA-b time/iter <= {FLOOR_TARGET} x (floor + backtracks"
                             f" x A)  [A/iter = {e['A_per_iter']:.2f}]",
                   "value": value, "met": value <= FLOOR_TARGET})
    batch = t.get("batch")
    if batch and len(batch["sizes"]) > 1 and min(batch["sizes"]) == 1:
      hi = max(batch["sizes"])
      for job, ratio in batch["largest_over_smallest"].items():
        label = "floor" if job == "floor" else METHOD_LABELS[job]
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
      "(iter-net)/floor | TTA iters | TTA s | final NMSE dB |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for task, t in report["tasks"].items():
    lines.append(f"| {task} | floor (A+At+prox) | {t['floor_compile_s']:.2f} | "
                 f"{t['floor_ms']:.3f} | 1.00 | 1 | - | - | - | - | "
                 f"{_fmt((t.get('tta') or {}).get('converged_nmse_db'))} (converged) |")
    for m, e in t["methods"].items():
      tta_it = e.get("tta_iters")
      tta = (str(tta_it) if tta_it is not None else
             ("> " + str(t["tta"]["max_iters"]) if t.get("tta") else "-"))
      x_floor = _fmt(e["x_floor"])
      if "x_floor_backtrack_adjusted" in e:
        x_floor += f" ({e['x_floor_backtrack_adjusted']:.2f} bt-adj.)"
      lines.append(
          f"| {task} | {e['label']} | {e['compile_s']:.2f} | {e['ms_per_iter']:.3f} | {x_floor} | "
          f"{_fmt(e.get('A_per_iter'))} ({e['mean_backtracks']:.2f}) | "
          f"{_fmt(e.get('net_share'))} | {_fmt(e.get('x_floor_without_net'))} | {tta} | "
          f"{_fmt(e.get('tta_s'), '.3f')} | {_fmt(e.get('final_nmse_db'))} |")
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
        label = "floor" if job == "floor" else METHOD_LABELS[job]
        cells = [_fmt(bt["ips"].get(str(b), {}).get(job), ".0f") for b in sizes]
        lines.append(f"| {task} | {label} | " + " | ".join(cells) + " | "
                     f"{bt['largest_over_smallest'][job]:.2f} |")
  grouped = sorted({(task, METHOD_LABELS[m]) for task, bt in batch_tasks.items()
                     for counts in bt.get("grouped_convolutions", {}).values()
                     for m, c in counts.items() if c})
  if grouped:
    lines += ["", "Grouped convolutions (feature_group_count = batch) in the vmapped programs of: "
              + ", ".join(f"{t} {m}" for t, m in grouped) + ". vmap of lax.cond with a batched "
              "predicate broadcasts every operand of the cond, the network weights and wavelet "
              "filters included, to the batch; XLA:CPU runs the resulting grouped convolutions "
              "far slower than batched ones."]
  unhealthy = [(task, e) for task, t in report["tasks"].items() for e in t["methods"].values()
               if e.get("tta_run_mean_backtracks", 0) > 1 or e.get("tta_run_objective_rise", 0) > 1e-5]
  if unhealthy:
    lines += ["", "Long (time-to-accuracy) runs with many backtracks or a rising objective: "
              + "; ".join(f"{task} {e['label']}: {e['tta_run_mean_backtracks']:.1f} backtracks/iter, "
                          f"objective {100 * e['tta_run_objective_rise']:.3g} % above its minimum"
                          for task, e in unhealthy) + "."]
  peers = [(task, t["methods"]["fista"]) for task, t in report["tasks"].items()
           if "jaxopt_ms_per_iter" in t["methods"].get("fista", {})]
  if peers:
    lines += ["", "Peer: jaxopt.ProximalGradient(acceleration=True, fixed step 1/L) vs FISTA-b, "
              "both timed as whole solves (init included) in the same interleaved rounds.", "",
              "| task | jaxopt FISTA ms/iter | FISTA-b ms/iter | FISTA-b / jaxopt |",
              "|---|---|---|---|"]
    for task, e in peers:
      lines.append(f"| {task} | {e['jaxopt_ms_per_iter']:.3f} | {e['ms_per_iter_with_init']:.3f} "
                   f"| {e['x_jaxopt']:.2f} |")
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
            f"- TTA: first iteration with |NMSE - converged| <= {cfg['tta_db']} dB (converged = "
            f"{REFERENCE_LABEL} after {cfg['converged_iters']} iterations; FISTA-b's own "
            "backtracking breaks down in float32 on long runs, see bench.py); TTA s = TTA "
            "iterations x the measured ms/iter (not a separate wall-clock run); each method gets "
            f"{cfg['tta_iters']} iterations.",
            "- net share: the policy call alone (network inputs + U-Net + exp) / one learned "
            "iteration."]
  lines += [f"- {note}" for note in report["notes"]]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  run_bench(config_from_flags())


if __name__ == "__main__":
  app.run(main)
