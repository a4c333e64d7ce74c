"""SCICO's PGM peers for ``--mode=accuracy --peers --scico_python=PY``: run as
``PY experiments/bench/scico_peer.py SPEC.json OUT.json`` with the repository on PYTHONPATH
(SCICO pins an older jax than jsgp's own environment; jsgp runs under it too).

For each image of the spec's task it rebuilds the problem exactly as the main run does (same
image, seed and simulation code; a gap below -1e-6 would reveal a different problem), runs SCICO's
``AcceleratedPGM`` with each step rule (constant ``1/L``, BB, adaptive BB, line search) step by
step, recording the float64 objective of each iterate, and then, per target, times a fresh
SCICO solve of exactly ``k`` iterations (``solver.solve()``, statistics off) interleaved with the
main run's fastest jsgp method for that image and target (``run(max_iter=k, tol=-1)``, compiled
here), so that SCICO / jsgp is a ratio of one process.
"""
from __future__ import annotations

import json
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments import methods as registry  # noqa: E402
from experiments.bench import accuracy  # noqa: E402
from experiments.bench.config import SCICO_RULES as RULES  # noqa: E402
from experiments.bench.timing import compile_fn, interleaved, median, paired_ratio  # noqa: E402
from jsgp.data import load_images  # noqa: E402
from jsgp.problems import Task  # noqa: E402


def scico_parts(problem):
  """SCICO's ``SquaredL2Loss(y, A)`` and ``lam * L1Norm`` on jsgp's operator.

  SCICO's BB, adaptive BB and line-search rules call ``f`` and ``f.grad`` outside any jit, op by
  op (about 0.5-1 s per iteration here, which makes them untimeable at hundreds of iterations);
  ``f`` and ``f.grad`` are therefore wrapped in ``jax.jit`` (the iterates are unchanged): this
  only favours SCICO."""
  from scico import functional, linop, loss  # pylint: disable=import-outside-toplevel
  A = linop.LinearOperator(input_shape=tuple(problem.op.in_shape),
                           output_shape=tuple(problem.op.out_shape), eval_fn=problem.op.apply,
                           adj_fn=problem.op.adjoint, input_dtype=jnp.float32,
                           output_dtype=problem.y.dtype)
  f = loss.SquaredL2Loss(y=problem.y, A=A)
  f.grad = jax.jit(f.grad)
  call = jax.jit(type(f).__call__.__get__(f))
  f.__class__ = type("Jitted" + type(f).__name__, (type(f),), {"__call__": lambda self, x: call(x)})
  return f, float(problem.lam) * functional.L1Norm()


def scico_solver(problem, parts, rule: str, maxiter: int):
  """A fresh ``AcceleratedPGM`` (FISTA) with step rule ``rule``, ``L0 = problem.lipschitz``,
  no per-iteration statistics."""
  from scico.optimize import pgm  # pylint: disable=import-outside-toplevel
  step = {"const": pgm.PGMStepSize, "bb": pgm.BBStepSize, "abb": pgm.AdaptiveBBStepSize,
          "ls": pgm.LineSearchStepSize}[rule]()
  f, g = parts
  return pgm.AcceleratedPGM(f=f, g=g, L0=float(problem.lipschitz),
                            x0=jnp.zeros(problem.op.in_shape, jnp.float32), step_size=step,
                            maxiter=maxiter,
                            itstat_options={"fields": {}, "itstat_func": lambda obj: ()})


class ScicoJob:
  """Calling it runs a fresh SCICO solve of ``k`` iterations, as a user would."""

  def __init__(self, problem, parts, rule, k):
    self.problem, self.parts, self.rule, self.k = problem, parts, rule, k

  def __call__(self):
    return scico_solver(self.problem, self.parts, self.rule, self.k).solve()


def trace(problem, p64, image64, parts, rule, cap, F_star, stop_gap, stop_nmse, deadline):
  """Float64 gaps and NMSE of every iterate, until both stop targets are met, ``cap`` steps or
  the ``deadline`` (time.perf_counter)."""
  metrics = jax.jit(accuracy.metrics)
  s = scico_solver(problem, parts, rule, cap)
  F, nmse = metrics(p64, image64, s.x)
  gaps, nmses = [(float(F) - F_star) / F_star], [float(nmse)]
  for _ in range(cap):
    s.step()
    F, nmse = metrics(p64, image64, s.x)
    gaps.append((float(F) - F_star) / F_star)
    nmses.append(float(nmse))
    if (min(gaps) <= stop_gap and min(nmses) <= stop_nmse) or time.perf_counter() > deadline:
      break
  return np.asarray(gaps), np.asarray(nmses)


def main(spec_path: str, out_path: str) -> None:
  with open(spec_path) as f:
    spec = json.load(f)
  import scico  # pylint: disable=import-outside-toplevel
  task = Task(spec["task"], (spec["size"], spec["size"]), rate=spec["rate"],
              noise_sigma=spec["noise_sigma"], pattern=spec["pattern"])
  images = np.resize(load_images(spec["data_dir"], "test", spec["size"]),
                     (spec["images"], spec["size"], spec["size"]))
  targets = [accuracy.gap_key(g) for g in spec["gaps"]] + [accuracy.nmse_key(spec["tta_db"])]
  rules = [r for r in spec["rules"] if r in RULES]
  out = {"versions": {"scico": scico.__version__, "jax": jax.__version__},
         "rules": rules, "cap": spec["cap"], "targets": {t: {"per_image": []} for t in targets},
         "traces": {r: [] for r in rules}, "seconds_per_iter": {r: [] for r in rules},
         "notes": []}
  print(f"  [scico {scico.__version__}, jax {jax.__version__}] {spec['task']}: rules {rules}",
        flush=True)
  compiled = {}
  for i, image in enumerate(images):
    problem = accuracy.problem_of(task, image, spec["seed"], i)
    p64 = accuracy.reference.to_float64(problem)
    image64 = jnp.asarray(image, jnp.float64)
    F_star, nmse_star = spec["F_star"][i], spec["nmse_star"][i]
    parts = scico_parts(problem)
    x0 = problem.zeros()
    ks = {}
    for rule in rules:
      deadline = time.perf_counter() + spec["trace_budget_s"]
      gaps, nmses = trace(problem, p64, image64, parts, rule, spec["cap"], F_star,
                          min(spec["gaps"]), nmse_star + spec["tta_db"], deadline)
      out["traces"][rule].append(gaps.tolist())
      ks[rule] = {accuracy.gap_key(g): accuracy.first_reached(gaps, g) for g in spec["gaps"]}
      ks[rule][accuracy.nmse_key(spec["tta_db"])] = accuracy.first_reached(
          nmses, nmse_star + spec["tta_db"])
      if np.min(gaps) < -1e-6:
        out["notes"].append(f"image {i} {rule}: gap {np.min(gaps):.1e} < 0: the rebuilt problem "
                            "differs from the main run's")
      print(f"    image {i} scico {rule}: {len(gaps) - 1} traced iterations, min gap "
            f"{np.min(gaps):.1e}", flush=True)
    for t in targets:
      best = spec["jsgp_best"].get(t, [None] * len(images))[i]
      jobs = {}
      if best is not None:
        key = (best["method"], best["iters"])
        if key not in compiled:
          contender = accuracy.driver_contender(best["method"], registry.label(best["method"]),
                                                "jsgp", registry.REGISTRY[best["method"]].solver())
          compiled[key] = compile_fn(contender.solve(best["iters"]), problem, x0)[0]
        jobs["jsgp"] = (compiled[key], (problem, x0))
      for rule in rules:
        if ks[rule][t] is not None:
          jobs[rule] = (ScicoJob(problem, parts, rule, ks[rule][t]), ())
      times, outputs = interleaved(jobs, spec["repeats"]) if jobs else ({}, {})
      row = {"jsgp": None if best is None else dict(best, seconds=median(times["jsgp"])),
             "rules": {}}
      for rule in rules:
        k = ks[rule][t]
        if k is None:
          row["rules"][rule] = {"iters": None}
          continue
        x = outputs[rule]
        F_k, nmse_k = accuracy.metrics(p64, image64, x)
        seconds = median(times[rule])
        row["rules"][rule] = {
            "iters": k, "seconds": seconds, "gap": (float(F_k) - F_star) / F_star,
            "nmse_db": float(nmse_k),
            "over_jsgp": paired_ratio(times[rule], times["jsgp"]) if "jsgp" in jobs else None}
        if k:
          out["seconds_per_iter"][rule].append(seconds / k)
      out["targets"][t]["per_image"].append(row)
      print(f"    {t:>16s}: " + ", ".join(
          f"{r} {e['iters']} it {e['seconds'] * 1e3:.1f} ms (x{e['over_jsgp']:.2f} jsgp)"
          if e["iters"] is not None and e["over_jsgp"] is not None else
          (f"{r} {e['iters']} it" if e["iters"] is not None else f"{r} -")
          for r, e in row["rules"].items()), flush=True)
  spi = {r: (median(v) if v else None) for r, v in out["seconds_per_iter"].items()}
  out["seconds_per_iter"] = spi
  out["curves"] = {}
  for r in rules:
    length = min(len(g) for g in out["traces"][r])
    out["curves"][r] = accuracy.curve(np.asarray([g[:length] for g in out["traces"][r]]), spi[r])
  del out["traces"]
  with open(out_path, "w") as f:
    json.dump(out, f)


if __name__ == "__main__":
  main(*sys.argv[1:3])
