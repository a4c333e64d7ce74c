"""Time-to-accuracy (``--mode=accuracy``): iterations and wall time until each method reaches a
relative objective gap ``(F_k - F*) / F* <= gap`` (``--gaps``) and the NMSE of ``x*`` + ``--tta_db``
dB, against a float64 reference ``x*`` per problem (``reference.py``).

Protocol per task and image: (1) an instrumented run of ``--tta_iters`` iterations of every
contender records the float64 objective (fresh residual) and the NMSE of each iterate, which gives
the first iteration ``k`` reaching each target; (2) per target, every contender that reached it
solves again with exactly ``k`` iterations (one compiled call, compile excluded), interleaved over
``--repeats`` rounds (median); the returned ``x_k`` is checked by its float64 objective (the
verified gap). Ratios are to the fastest contender of the same image and target, then medians
over images. Contenders: the jsgp methods (``--accuracy_methods``), and with ``--peers`` a
textbook FISTA with backtracking, jaxopt (fixed step, line search) and SCICO (a subprocess under
``--scico_python``, which times jsgp's fastest method of the main run in its own process too).
The report's Markdown tables and figures: ``accuracy_report.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from experiments import methods as registry
from experiments.bench import peers, reference
from experiments.bench.config import BenchConfig, task_of
from experiments.bench.timing import NO_STOP, compile_fn, interleaved, median, paired_ratio
from jsgp.metrics import nmse_db
from jsgp.problems import Task, simulate
from jsgp.solvers import run

TARGET_RATIO = 1.3  # jsgp's fastest vs the fastest peer, per task and gap target
CURVE_POINTS = 60   # log-spaced iterations kept per curve in the JSON
NMSE_AT = (10, 20)  # the paper's tables: NMSE after k iterations


def gap_key(gap: float) -> str:
  return f"gap {gap:.0e}"


def nmse_key(db: float) -> str:
  return f"NMSE* + {db:g} dB"


def metrics(problem64, image64, x):
  """``(F(x), NMSE(x) dB)`` in float64: scalars."""
  return (reference.objective64(problem64, x),
          nmse_db(problem64.image(x.astype(jnp.float64)), image64))


# ------------------------------------------------------------------------------------------------
# Contenders.

def driver_contender(name: str, label: str, family: str, method) -> peers.Contender:
  """A method of jsgp's driver shape (``init``/``step``): traced with ``run(unroll=True)``
  recording ``metrics`` after each step; timed as ``run(max_iter=k, tol=-1)`` (the whole
  ``Result``, as a user gets it)."""

  def trace(problem, problem64, x0, image, steps):
    record = lambda p, s: metrics(problem64, image, s.x)
    result = run(method, problem, x0, steps, unroll=True, remat=False, record=record)
    first = metrics(problem64, image, x0)
    return tuple(jnp.concatenate([a[None], b]) for a, b in zip(first, result.trace))

  def solve(k):
    return lambda problem, x0: run(method, problem, x0, k, jnp.asarray(NO_STOP))

  return peers.Contender(name, label, family, trace, solve)


LEARNED = "drs_policy"
NORMALIZED_GAP_TASKS = ("deblur", "ct")  # F* ~ 0 (noiseless, tiny lam): gap over F(x0) - F*


def gap_label(task_name: str) -> str:
  return ("(F_k - F*) / (F_0 - F*)" if task_name in NORMALIZED_GAP_TASKS
          else "(F_k - F*) / F*")


def learned_key(index: int) -> str:
  """The contender name of the ``index``-th ``--policy`` source (the first is ``LEARNED``)."""
  return LEARNED if index == 0 else f"{LEARNED}_{index + 1}"


def learned_solvers(cfg: BenchConfig, task_name: str):
  """``[(key, source, (label, DRS) or None)]`` for each ``--policy`` source (``learned_key``):
  the source's policy of ``task_name`` with the mode and budget it was trained for."""
  from jsgp import pretrained  # pylint: disable=import-outside-toplevel
  out = []
  for i, spec in enumerate(cfg.policy_sources):
    source, kwargs = pretrained.parse_spec(spec)
    out.append((learned_key(i), spec, pretrained.solver_from(source, task_name, **kwargs)))
  return out


def contenders(cfg: BenchConfig, notes: List[str], task_name: str) -> Dict[str, peers.Contender]:
  from experiments.bench.measure import make_method  # pylint: disable=import-outside-toplevel
  canvas = task_of(task_name, cfg).synthesis.in_shape
  usable, skipped = registry.runnable_on(task_name, cfg.accuracy_methods)
  for m in skipped:
    notes.append(f"{m} skipped on {task_name}: its measurement has no cheap (I + t A^T A)^-1")
  out = {m: driver_contender(m, registry.label(m), "jsgp", make_method(m, canvas, cfg))
         for m in usable}
  for key, source, learned in learned_solvers(cfg, task_name):
    if learned is None:
      notes.append(f"no {task_name} policy in --policy source {source!r}")
    else:
      out[key] = driver_contender(key, learned[0], "learned", learned[1])
  if cfg.peers:
    out["fista_bt"] = driver_contender("fista_bt", "FISTA-bt (textbook)", "peer", peers.FistaBT())
    if peers.jaxopt_available():
      out["jaxopt_fixed"] = peers.jaxopt_contender("jaxopt_fixed", "jaxopt PG acc., 1/L", False,
                                                   metrics)
      out["jaxopt_ls"] = peers.jaxopt_contender("jaxopt_ls", "jaxopt PG acc., line search",
                                                True, metrics)
  return out


def output_x(out) -> jax.Array:
  """The iterate returned by a timed solve (a jsgp ``Result`` or a jaxopt ``OptStep``)."""
  if hasattr(out, "x"):
    return out.x
  return out.params if hasattr(out, "params") else out


# ------------------------------------------------------------------------------------------------
# One task.

def first_reached(values: np.ndarray, threshold: float) -> Optional[int]:
  hits = np.nonzero(values <= threshold)[0]
  return int(hits[0]) if hits.size else None


EQUAL_FLOOR = 1e-6  # gaps below this are float32 rounding, not progress: not compared


def equal_iteration_standing(candidate_nmse, reference_nmse, candidate_gap, reference_gap):
  """Where a candidate stands against a reference method at equal iterations k >= 1.

  Args:
    candidate_nmse, reference_nmse: NMSE (dB) after k = 0 ... K iterations, shape ``(K + 1,)``
      (NaN after a run stopped).
    candidate_gap, reference_gap: the relative objective gaps, same shape.

  Returns:
    ``(worst, worst_k, behind)``: ``max_k (candidate_nmse_k - reference_nmse_k)`` in dB over the
    k where both are finite (> 0: the candidate's NMSE is worse there; NaN if there is none), the
    k where it occurs (-1 if none), and the number of k at which the candidate's gap exceeds the
    reference's while both exceed ``EQUAL_FLOOR``.
  """
  deficit = np.asarray(candidate_nmse, np.float64) - np.asarray(reference_nmse, np.float64)
  deficit = np.where(np.isfinite(deficit), deficit, -np.inf)
  deficit[0] = -np.inf  # k >= 1
  worst_k = int(np.argmax(deficit)) if np.isfinite(deficit.max()) else -1
  worst = float(deficit[worst_k]) if worst_k >= 0 else float("nan")
  cand, ref = (np.asarray(g, np.float64)[1:] for g in (candidate_gap, reference_gap))
  compared = (cand > EQUAL_FLOOR) & (ref > EQUAL_FLOOR)
  return worst, worst_k, int(np.sum(compared & (cand > ref)))


def target_values(cfg: BenchConfig) -> List[str]:
  return [gap_key(g) for g in cfg.gaps] + [nmse_key(cfg.tta_db)]


def problem_of(task: Task, image: np.ndarray, seed: int, index: int):
  """The problem of image ``index``: its own operator draw and noise (``fold_in(seed, index)``)."""
  return simulate(task, jnp.asarray(image), jax.random.fold_in(jax.random.PRNGKey(seed), index))


def describe(task: Task, cfg: BenchConfig, index: int, problem) -> Dict[str, Any]:
  """What identifies the reference of one problem (its cache key)."""
  return {"task": repr(task), "size": cfg.size, "image": index, "seed": cfg.seed,
          "lam": float(problem.lam), "data": cfg.data_dir or "embedded",
          "tol": cfg.reference_tol, "max_iter": cfg.reference_max_iters}


def accuracy_task(name: str, images: np.ndarray, cfg: BenchConfig,
                  solvers: Dict[str, peers.Contender]) -> Dict[str, Any]:
  task = task_of(name, cfg)
  normalized = name in NORMALIZED_GAP_TASKS
  targets = target_values(cfg)
  n_img, steps = len(images), cfg.tta_iters
  out: Dict[str, Any] = {"task": repr(task), "images": n_img, "cap": steps, "references": [],
                         "targets": {t: {"per_image": []} for t in targets},
                         "gap": gap_label(name),
                         "families": {c: s.family for c, s in solvers.items()},
                         "labels": {c: s.label for c, s in solvers.items()}}
  traces = {c: [] for c in solvers}
  nmse_at = {c: [] for c in solvers}  # per image: NMSE (dB) after each k of NMSE_AT
  spi = {c: [] for c in solvers}  # seconds per iteration of each timed run
  compiled_trace, compiled_solve = {}, {}
  print(f"\n== {name} {cfg.size}px: {n_img} images, cap {steps} iterations, "
        f"{len(solvers)} contenders ==", flush=True)
  for i, image in enumerate(images):
    problem = problem_of(task, image, cfg.seed, i)
    p64 = reference.to_float64(problem)
    image64 = jnp.asarray(image, jnp.float64)
    x0 = problem.zeros()
    ref = reference.reference(problem, describe(task, cfg, i, problem),
                              os.path.join(cfg.out_dir, "refs"), cfg.reference_tol,
                              cfg.reference_max_iters)
    nmse_star = float(metrics(p64, image64, jnp.asarray(ref.x))[1])
    scale = float(metrics(p64, image64, x0)[0]) - ref.F if normalized else ref.F
    out["references"].append({"F": ref.F, "residual": ref.residual, "iterations": ref.iterations,
                              "seconds": ref.seconds, "cached": ref.cached, "nmse_db": nmse_star})
    print(f"  image {i}: F* {ref.F:.10e}, fixed-point residual {ref.residual:.1e} after "
          f"{ref.iterations} iterations ({'cached' if ref.cached else f'{ref.seconds:.1f} s'}), "
          f"NMSE* {nmse_star:.2f} dB", flush=True)
    ks: Dict[str, Dict[str, Optional[int]]] = {}
    for c, solver in solvers.items():
      if c not in compiled_trace:
        compiled_trace[c] = jax.jit(solver.trace, static_argnums=(4,)).lower(
            problem, p64, x0, image64, steps).compile()
      F, nmse = (np.asarray(a, np.float64) for a in compiled_trace[c](problem, p64, x0, image64))
      gap = (F - ref.F) / scale
      traces[c].append(gap)
      nmse_at[c].append([float(nmse[k]) if k < len(nmse) else None for k in NMSE_AT])
      ks[c] = {gap_key(g): first_reached(gap, g) for g in cfg.gaps}
      ks[c][nmse_key(cfg.tta_db)] = first_reached(nmse, nmse_star + cfg.tta_db)
    for t in targets:
      jobs = {}
      for c, solver in solvers.items():
        k = ks[c][t]
        if k is None:
          continue
        if (c, k) not in compiled_solve:
          compiled_solve[(c, k)] = compile_fn(solver.solve(k), problem, x0)[0]
        jobs[c] = (compiled_solve[(c, k)], (problem, x0))
      times, outputs = interleaved(jobs, cfg.repeats) if jobs else ({}, {})
      row = {"best": None, "methods": {}}
      fastest = min(jobs, key=lambda c: median(times[c])) if jobs else None
      row["best"] = fastest
      for c in solvers:
        k = ks[c][t]
        if k is None:
          row["methods"][c] = {"iters": None}
          continue
        F_k, nmse_k = metrics(p64, image64, output_x(outputs[c]))
        seconds = median(times[c])
        row["methods"][c] = {"iters": k, "seconds": seconds,
                             "ratio": paired_ratio(times[c], times[fastest]),
                             "gap": (float(F_k) - ref.F) / scale, "nmse_db": float(nmse_k)}
        if k:
          spi[c].append(seconds / k)
      classical = [row["methods"][c]["seconds"] for c in jobs if solvers[c].family == "jsgp"]
      if classical:  # per --policy source that reached t: fastest classical seconds / its own
        row["policy_speedups"] = {c: min(classical) / row["methods"][c]["seconds"] for c in jobs
                                  if solvers[c].family == "learned"}
      out["targets"][t]["per_image"].append(row)
      print(f"    {t:>16s}: " + ", ".join(
          f"{c} {e['iters']} it {e['seconds'] * 1e3:.1f} ms" if e["iters"] is not None else
          f"{c} -" for c, e in row["methods"].items()), flush=True)
  out["seconds_per_iter"] = {c: (median(v) if v else None) for c, v in spi.items()}
  out["curves"] = {c: curve(np.stack(traces[c]), out["seconds_per_iter"][c]) for c in solvers}
  out["nmse_at"] = {"k": list(NMSE_AT), "per_image": nmse_at,
                    "median": {c: [None if None in column else median(column)
                                   for column in zip(*rows)] for c, rows in nmse_at.items()}}
  for t in targets:
    entry = out["targets"][t]
    entry["summary"] = summarize_target(entry["per_image"], solvers)
    learned = [c for c in solvers if solvers[c].family == "learned"]
    if learned:  # per image, None where the source or every classical method missed t
      entry["policy_speedups"] = {c: [row.get("policy_speedups", {}).get(c)
                                      for row in entry["per_image"]] for c in learned}
    if LEARNED in solvers:  # the first source's, as experiments.record_tta reads it
      entry["learned_speedup"] = entry["policy_speedups"][LEARNED]
  return out


def curve(gaps: np.ndarray, seconds_per_iter: Optional[float]) -> Dict[str, list]:
  """Median over images of the gap ``(N, steps+1)`` at log-spaced iterations, and their seconds
  (iterations x the measured seconds per iteration)."""
  steps = gaps.shape[1] - 1
  ks = np.unique(np.round(np.logspace(0, np.log10(max(steps, 1)), CURVE_POINTS)).astype(int))
  values = np.median(gaps[:, ks], axis=0)
  return {"iters": ks.tolist(), "gap": [float(v) for v in values],
          "seconds": None if seconds_per_iter is None else [float(k * seconds_per_iter) for k in ks]}


def summarize_target(per_image: List[dict], solvers) -> Dict[str, Any]:
  """Per contender: medians over images of iterations, seconds, ratio to the best; the worst
  verified gap; how many images reached the target."""
  out = {}
  for c in solvers:
    hits = [row["methods"][c] for row in per_image if row["methods"][c]["iters"] is not None]
    if len(hits) < len(per_image):  # missing on some image: no medians (a "-")
      out[c] = {"reached": len(hits), "iters": None, "seconds": None, "ratio": None,
                "worst_gap": max((h["gap"] for h in hits), default=None)}
      continue
    out[c] = {"reached": len(hits), "iters": median([h["iters"] for h in hits]),
              "seconds": median([h["seconds"] for h in hits]),
              "ratio": median([h["ratio"] for h in hits]),
              "worst_gap": max(h["gap"] for h in hits),
              "nmse_db": median([h["nmse_db"] for h in hits])}
  return out


# ------------------------------------------------------------------------------------------------
# SCICO, in a subprocess.

def scico_spec(name: str, result: Dict[str, Any], solvers, cfg: BenchConfig) -> Dict[str, Any]:
  """What the SCICO subprocess needs for task ``name``: the problems (rebuilt there from the same
  settings), F* and NMSE*, and per image and gap target jsgp's fastest method of this run and
  its iteration count."""
  jsgp_names = [c for c, s in solvers.items() if s.family == "jsgp"]
  best = {}
  for t, entry in result["targets"].items():
    best[t] = []
    for row in entry["per_image"]:
      reached = [(row["methods"][c]["seconds"], c) for c in jsgp_names
                 if row["methods"][c]["iters"] is not None]
      best[t].append(None if not reached else
                     {"method": min(reached)[1], "iters": row["methods"][min(reached)[1]]["iters"]})
  return {"task": name, "size": cfg.size, "rate": cfg.rate, "noise_sigma": cfg.noise_sigma,
          "pattern": cfg.pattern, "seed": cfg.seed, "data_dir": cfg.data_dir,
          "images": result["images"], "gaps": list(cfg.gaps), "tta_db": cfg.tta_db,
          "cap": cfg.scico_max_iters, "repeats": cfg.repeats,
          "trace_budget_s": cfg.scico_budget_s, "rules": list(cfg.scico_rules),
          "F_star": [r["F"] for r in result["references"]],
          "nmse_star": [r["nmse_db"] for r in result["references"]], "jsgp_best": best}


def run_scico(spec: Dict[str, Any], cfg: BenchConfig) -> Dict[str, Any]:
  """Run ``scico_peer.py`` under ``--scico_python`` on ``spec``; its JSON result (or an error)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with tempfile.TemporaryDirectory() as tmp:
    spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
    with open(spec_path, "w") as f:
      json.dump(spec, f)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    proc = subprocess.run([cfg.scico_python, peers.SCICO_SCRIPT, spec_path, out_path], cwd=root,
                          env=env, text=True, stderr=subprocess.PIPE, check=False)
    if proc.returncode or not os.path.exists(out_path):
      return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    with open(out_path) as f:
      result = json.load(f)
  result["wall_s"] = time.perf_counter() - start
  return result


# ------------------------------------------------------------------------------------------------
# The brief's target: jsgp's fastest vs the fastest peer.

def peer_targets(tasks: Dict[str, Any], gaps) -> List[Dict[str, Any]]:
  """Per task and gap: the median over images of (fastest peer's seconds / jsgp's fastest
  seconds), peers in this process paired with jsgp here, SCICO against jsgp's fastest timed in
  SCICO's process; PASS if >= ``TARGET_RATIO``."""
  rows = []
  for name, t in tasks.items():
    families = t["families"]
    for g in gaps:
      key = gap_key(g)
      per_image = t["targets"][key]["per_image"]
      scico = (t.get("scico") or {}).get("targets", {}).get(key, {}).get("per_image")
      ratios = []
      for i, row in enumerate(per_image):
        jsgp = [e["seconds"] for c, e in row["methods"].items()
                if families[c] == "jsgp" and e["iters"] is not None]
        peer = [e["seconds"] for c, e in row["methods"].items()
                if families[c] == "peer" and e["iters"] is not None]
        if not jsgp:  # jsgp misses: 0 if a peer reaches it, else the image does not count
          if peer or (scico and scico[i] and any(e.get("iters") is not None
                                                 for e in scico[i]["rules"].values())):
            ratios.append(0.0)
          continue
        ratio = min(peer) / min(jsgp) if peer else float("inf")
        if scico and scico[i]:
          ratio = min([ratio] + [e["over_jsgp"] for e in scico[i]["rules"].values()
                                 if e.get("over_jsgp") is not None])
        ratios.append(ratio)
      have_peers = any(families[c] == "peer" for c in families) or scico
      if not have_peers:
        continue
      value = median(ratios) if ratios else float("nan")
      rows.append({"target": f"{name}: jsgp's fastest reaches {key} >= {TARGET_RATIO}x sooner "
                             "than the fastest peer", "value": value,
                   "met": bool(value >= TARGET_RATIO), "per_image": ratios})
  return rows


# ------------------------------------------------------------------------------------------------
# The run (its tables and figures: ``accuracy_report.py``).

def run_accuracy(cfg: BenchConfig, env: Dict[str, Any], notes: List[str]) -> Dict[str, Any]:
  """Every task of ``cfg`` in accuracy mode; returns the report's ``tasks`` and ``targets``."""
  from experiments.bench.config import ACCURACY, ALL_TASKS  # pylint: disable=import-outside-toplevel
  from experiments.bench.measure import images_for  # pylint: disable=import-outside-toplevel
  names = ACCURACY["tasks"] if cfg.tasks == ALL_TASKS else cfg.tasks
  missing = {}
  if cfg.peers:
    if not peers.jaxopt_available():
      missing["jaxopt"] = f"not importable here; install: {peers.INSTALL['jaxopt']}"
    why = peers.scico_missing(cfg.scico_python)
    if why:
      missing["scico"] = f"{why}; needs {peers.INSTALL['scico']}"
    else:
      env["scico"] = peers.scico_versions(cfg.scico_python)
    for peer, why in missing.items():
      notes.append(f"peer {peer} missing: {why}")
      print(notes[-1], flush=True)
  tasks = {}
  for name in names:
    solvers = contenders(cfg, notes, name)
    images = images_for(name, cfg, cfg.images, notes, held_out=True)
    tasks[name] = accuracy_task(name, images, cfg, solvers)
    if cfg.peers and "scico" not in missing:
      print(f"  SCICO ({cfg.scico_python}) on {name} ...", flush=True)
      tasks[name]["scico"] = run_scico(scico_spec(name, tasks[name], solvers, cfg), cfg)
      if "error" in tasks[name]["scico"]:
        notes.append(f"SCICO failed on {name}: {tasks[name]['scico']['error'][-500:]}")
        print(notes[-1], flush=True)
  return {"tasks": tasks, "missing_peers": missing, "targets": peer_targets(tasks, cfg.gaps)}
