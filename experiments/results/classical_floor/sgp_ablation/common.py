"""What the sgp_ablation scripts share: the benchmark's 128 px problem of a task, the fused floor
(``experiments.bench.timing.floor_fn``) and the interleaved report against it."""
import jax
import jax.numpy as jnp

from experiments.bench.config import BenchConfig
from experiments.bench.measure import images_for, task_of
from experiments.bench.timing import compile_fn, floor_fn, interleaved, median, paired_ratio
from jsgp.problems import simulate


def speed_problem(name):
  """``(problem, x0)``: ``experiments.bench``'s speed problem of task ``name`` at 128 px."""
  cfg = BenchConfig(size=128)
  image = images_for(name, cfg, 1, [])[0]
  problem = simulate(task_of(name, cfg), jnp.asarray(image), jax.random.PRNGKey(0))
  return problem, jnp.zeros(problem.op.in_shape, image.dtype)


def floor_jobs(problem, x0, iters):
  """The job dict, starting with the fused floor of ``iters`` iterations."""
  compiled, _ = compile_fn(floor_fn(iters), problem, x0)
  return {"floor": (compiled, (problem, x0))}


def report(jobs, rounds, iters):
  """Times ``jobs`` in ``rounds`` interleaved rounds and prints ms per iteration and x floor."""
  times, _ = interleaved(jobs, rounds)
  for k in jobs:
    print(k, f"{1e3 * median(times[k]) / iters:.3f} ms/it",
          f"x floor {paired_ratio(times[k], times['floor']):.3f}")
  return times
