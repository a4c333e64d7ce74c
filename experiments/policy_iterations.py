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
flags.DEFINE_string("data_dir", "../shared/data/bsds500", "BSDS500 directory.")
flags.DEFINE_string("ct_dir", "../shared/data/ct/covid19_ny_sbu/png16", "CT slices directory.")
flags.DEFINE_string("cache_dir", "out/cache/references", "Reference cache.")

def methods(task: str):
  from experiments import methods as registry  # pylint: disable=import-outside-toplevel
  from jsgp import pretrained  # pylint: disable=import-outside-toplevel
  registry.check_names("classical", FLAGS.classical, registry.ACCURACY_METHODS)
  names, _ = registry.runnable_on(task, FLAGS.classical)
  out = [("MFISTA" if m == "mfista" else registry.label(m), registry.REGISTRY[m].solver())
         for m in names]
  for candidate in FLAGS.candidates:
    source, kwargs = pretrained.parse_spec(candidate)
    found = pretrained.solver_from(source, task, **kwargs)
    if found is not None:
      out.append(found)
  return out


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
  where = BenchConfig(data_dir=FLAGS.data_dir, ct_data_dir=FLAGS.ct_dir, size=FLAGS.size,
                      ct_size=FLAGS.size)
  for name in FLAGS.tasks:
    normalized = name in NORMALIZED_GAP_TASKS
    images = images_for(name, where, FLAGS.images, [], held_out=True)[:FLAGS.images]
    rates = [float(r) for r in FLAGS.rates] if name in ("inpainting", "fourier") else [None]
    runs = methods(name)
    for rate in rates:
      task = Task(name, (FLAGS.size,) * 2, pattern="uniform",
                  **({"rate": rate} if rate is not None else {}))
      print(f"\n{name} rate {rate}: iterations to gap {FLAGS.gaps} per held-out image")
      rows = {label: [] for label, _ in runs}
      for i, image in enumerate(images):
        problem = simulate(task, jnp.asarray(image), jax.random.PRNGKey(i))
        ref = reference.reference(problem, dict(tool="policy_iterations", task=name, rate=rate,
                                                size=FLAGS.size, image=i), FLAGS.cache_dir,
                                  1e-9, 30000)
        for label, method in runs:
          objective = np.asarray(solve(method, problem, max_iter=FLAGS.max_iter,
                                       tol=-1).history.objective, np.float64)
          scale = objective[0] - ref.F if normalized else abs(ref.F)
          gap = (objective - ref.F) / scale
          rows[label].append([first_reached(gap, target) for target in targets])
      for label, its in rows.items():
        print(f"  {label:60s} " + "  ".join("/".join(str(v) for v in per) for per in its))


if __name__ == "__main__":
  app.run(main)
