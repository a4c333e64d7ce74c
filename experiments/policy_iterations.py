"""Iterations to a relative objective gap on held-out images: policy files against classical
methods (``--classical``, default monotone FISTA).

  python -m experiments.policy_iterations --tasks=inpainting,fourier --rates=0.5 \
    --candidates=pretrained,out/cand/cmlp_accelerated --data_dir=../shared/data/bsds500

The gain side of the cost-vs-gain comparison of policy architectures (the cost side is
``experiments.policy_cost``; wall time is the benchmark's accuracy mode): for each task, rate and
held-out test image (CT: the held-out real slices), the iterations each method needs to reach
each ``--gaps`` target, ``(F_k - F*) / F*`` (deblur and CT: ``(F_k - F*) / (F_0 - F*)``, their
F* being near 0), with ``F*`` from the benchmark's float64 reference (cached in ``--cache_dir``);
the held-out images are the benchmark's (``experiments.bench.measure.images_for``).
A candidate is a folder of policy files (``experiments.train_policy --out=<folder>/<task>``) or
``pretrained``, run with the DRS mode and budget its manifest records unless
``folder:mode:budget`` says otherwise.

With ``--compare_to`` (default FISTA-b) it also prints the paper's NMSE tables (``--nmse_at``,
NMSE against the ground truth after k iterations, median over images) and, per candidate and
image, where it stands against that method at equal iterations k = 1 ... ``--max_iter``: the
worst NMSE deficit (dB, > 0: behind somewhere), the iterations at which its gap is larger (both
above ``experiments.bench.accuracy.EQUAL_FLOOR``, below which float32 rounding decides), and its
NMSE at the first ``--nmse_at`` entry beside the method's at the last (the paper's Table 1:
learned@20 against FISTA-b@100).
"""
from __future__ import annotations

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", ["inpainting", "fourier"], "Tasks.")
flags.DEFINE_list("rates", ["0.5"], "Sampling rates (inpainting, fourier).")
flags.DEFINE_list("candidates", ["pretrained"], "Policy sources: folder or folder:mode:budget.")
flags.DEFINE_list("classical", ["mfista"], "Classical methods (experiments.methods registry names) "
                  "run beside the candidates; those that need (I + t A^T A)^-1 skip CT.")
flags.DEFINE_list("gaps", ["1e-3", "1e-5"], "Relative gap targets.")
flags.DEFINE_integer("size", 128, "Image side.")
flags.DEFINE_integer("images", 3, "Held-out images per case.")
flags.DEFINE_integer("max_iter", 2000, "Iterations per run.")
flags.DEFINE_string("compare_to", "fista_b", "A classical method (experiments.methods registry "
                    "name; run too when not in --classical) to compare the candidates with at "
                    "equal iterations (empty: none).")
flags.DEFINE_list("nmse_at", ["20", "100"], "Iterations k of the NMSE table (the paper's: 20, "
                  "100).")
flags.DEFINE_string("data_dir", "../shared/data/bsds500", "BSDS500 directory.")
flags.DEFINE_string("ct_dir", "../shared/data/ct/covid19_ny_sbu/png16", "CT slices directory.")
flags.DEFINE_string("cache_dir", "out/cache/references", "Reference cache.")

def methods(task: str):
  """``(classical, candidates)``: lists of ``(label, method)`` for ``task``, the classical ones
  (``--classical``, then ``--compare_to``) that run on it and the candidates that have a policy
  for it."""
  from experiments import methods as registry  # pylint: disable=import-outside-toplevel
  from jsgp import pretrained  # pylint: disable=import-outside-toplevel
  registry.check_names("classical", FLAGS.classical, registry.ACCURACY_METHODS)
  classical = list(FLAGS.classical)
  if FLAGS.compare_to and FLAGS.compare_to not in classical:
    registry.check_names("compare_to", [FLAGS.compare_to], registry.ACCURACY_METHODS)
    classical.append(FLAGS.compare_to)
  names, _ = registry.runnable_on(task, classical)
  classical_runs = [(label(m), registry.REGISTRY[m].solver()) for m in names]
  candidates = []
  for candidate in FLAGS.candidates:
    source, kwargs = pretrained.parse_spec(candidate)
    found = pretrained.solver_from(source, task, **kwargs)
    if found is not None:
      candidates.append(found)
  return classical_runs, candidates


def label(name: str) -> str:
  from experiments import methods as registry  # pylint: disable=import-outside-toplevel
  return "MFISTA" if name == "mfista" else registry.label(name)


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_enable_x64", True)
  from experiments.bench import reference  # pylint: disable=import-outside-toplevel
  from experiments.bench.accuracy import NORMALIZED_GAP_TASKS, first_reached  # pylint: disable=import-outside-toplevel
  from experiments.bench.config import BenchConfig  # pylint: disable=import-outside-toplevel
  from experiments.bench.measure import images_for  # pylint: disable=import-outside-toplevel
  from jsgp.problems import Task, simulate  # pylint: disable=import-outside-toplevel
  from jsgp.solvers import solve  # pylint: disable=import-outside-toplevel
  targets = [float(g) for g in FLAGS.gaps]
  nmse_at = [int(k) for k in FLAGS.nmse_at]
  if not nmse_at or any(k < 0 or k > FLAGS.max_iter for k in nmse_at):
    raise app.UsageError(f"--nmse_at needs entries in [0, --max_iter={FLAGS.max_iter}], got "
                         f"{FLAGS.nmse_at}")
  where = BenchConfig(data_dir=FLAGS.data_dir, ct_data_dir=FLAGS.ct_dir, size=FLAGS.size,
                      ct_size=FLAGS.size)
  for name in FLAGS.tasks:
    normalized = name in NORMALIZED_GAP_TASKS
    images = images_for(name, where, FLAGS.images, [], held_out=True)[:FLAGS.images]
    rates = [float(r) for r in FLAGS.rates] if name in ("inpainting", "fourier") else [None]
    classical_runs, candidates = methods(name)
    runs = classical_runs + candidates
    for rate in rates:
      task = Task(name, (FLAGS.size,) * 2, pattern="uniform",
                  **({"rate": rate} if rate is not None else {}))
      print(f"\n{name} rate {rate}: iterations to gap {FLAGS.gaps} per held-out image")
      rows = {method_name: [] for method_name, _ in runs}
      curves = {method_name: [] for method_name, _ in runs}  # per image: (nmse, gap)
      for i, image in enumerate(images):
        problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(i))
        ref = reference.reference(problem, dict(tool="policy_iterations", task=name, rate=rate,
                                                size=FLAGS.size, image=i), FLAGS.cache_dir,
                                  1e-9, 30000)
        for method_name, method in runs:
          history = solve(method, problem, max_iter=FLAGS.max_iter, tol=-1,
                          ground_truth=jnp.asarray(image)).history
          objective = np.asarray(history.objective, np.float64)
          scale = objective[0] - ref.F if normalized else abs(ref.F)
          gap = (objective - ref.F) / scale
          rows[method_name].append([first_reached(gap, target) for target in targets])
          curves[method_name].append((np.asarray(history.nmse, np.float64), gap))
      for method_name, its in rows.items():
        print(f"  {method_name:60s} " + "  ".join("/".join(str(v) for v in per) for per in its))
      if FLAGS.compare_to:
        equal_iterations(curves, label(FLAGS.compare_to), [c for c, _ in candidates], nmse_at)


def equal_iterations(curves, reference_name, candidates, nmse_at):
  """Prints the NMSE table of every method in ``curves`` (label -> per image ``(nmse, gap)``)
  and the standing of each of ``candidates`` (labels) against ``reference_name``."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from experiments.bench.accuracy import EQUAL_FLOOR, equal_iteration_standing  # pylint: disable=import-outside-toplevel
  print(f"  NMSE (dB) after k = {', '.join(map(str, nmse_at))} iterations, median over images:")
  for name, per_image in curves.items():
    print(f"    {name:58s} " + "  ".join(
        f"{np.median([nmse[k] for nmse, _ in per_image]):7.2f}" for k in nmse_at))
  if reference_name not in curves:
    print(f"  {reference_name} does not run on this task: no equal-iteration comparison")
    return
  reference = curves[reference_name]
  first, last = nmse_at[0], nmse_at[-1]
  print(f"  against {reference_name} at equal iterations, per image: worst NMSE deficit (dB, > 0: "
        f"behind) @ the k where it is / iterations with a larger gap (both > {EQUAL_FLOOR:g}) / "
        f"NMSE@{first} minus its NMSE@{last} (< 0: ahead)")
  for name in candidates:
    cells = []
    for (nmse, gap), (ref_nmse, ref_gap) in zip(curves[name], reference):
      worst, worst_k, behind = equal_iteration_standing(nmse, ref_nmse, gap, ref_gap)
      cells.append(f"{worst:+.2f}@{worst_k}/{behind}/{nmse[first] - ref_nmse[last]:+.2f}")
    print(f"    {name:58s} " + "  ".join(cells))


if __name__ == "__main__":
  app.run(main)
