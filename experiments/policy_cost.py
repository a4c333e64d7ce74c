"""Cost of a learned iteration against a classical one, per policy architecture.

  python -m experiments.policy_cost --tasks=inpainting,fourier --size=128

For each task and architecture (freshly initialised: the cost does not depend on the weights),
times ``--iters`` iterations of (a) FISTA with the constant step 1/L, (b) DRS's policy iteration
with the network evaluated every iteration (``max_policy_steps=None``; the network's step is
blended as ``0 * d + 1/L`` so every proposal is the PGM step and is kept, and the cost is that
of an accepted policy iteration: the network, one ``A^T``, one ``A`` and the test) and (c) the
network alone. Medians over ``--repeats`` interleaved rounds, compile excluded; printed as
ratios to (a) in the same run.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import struct

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", ["inpainting", "fourier"], "Tasks.")
flags.DEFINE_list("archs", ["subband_mlp", "subband_table", "coefficient_mlp", "coarse_unet",
                            "unet"], "Architectures (jsgp.policy_nets.ARCHITECTURES); "
                  "name:width sets an MLP's hidden width (e.g. coefficient_mlp:32).")
flags.DEFINE_integer("size", 128, "Image side.")
flags.DEFINE_integer("iters", 100, "Iterations per timed run.")
flags.DEFINE_integer("repeats", 7, "Interleaved rounds (median).")


@struct.dataclass
class EvaluatedButNeutral:
  """The learned policy's stepsize computed every call, then replaced by 1/L (``0 * d + 1/L``:
  not simplified away by XLA, so the network's cost stays)."""

  learned: object

  init_uses_grad = False

  def init(self, problem, x, grad):
    return self.learned.init(problem, x, grad)

  def update(self, problem, state, x, grad):
    d, state = self.learned.update(problem, state, x, grad)
    return 0.0 * d + 1.0 / problem.lipschitz, state


def make_runs(problem, arch: str):
  from jsgp import policies, policy_nets, nets  # pylint: disable=import-outside-toplevel
  from jsgp.solvers import DRS, FISTA  # pylint: disable=import-outside-toplevel
  name, _, width = arch.partition(":")
  net = policy_nets.architecture(name, int(width) if width else None)
  if name == "unet":
    net = nets.UNetConfig.small("diag")
  variables = net.init(jax.random.PRNGKey(0), problem.synthesis)
  variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  learned = policies.LearnedPolicy(variables, net)
  drs = DRS(EvaluatedButNeutral(learned), max_policy_steps=None)
  fista = FISTA(max_backtracks=0)
  x0 = problem.zeros()

  def iterate(method):
    def body(problem, x0):
      state = method.init(problem, x0)
      state = jax.lax.fori_loop(0, FLAGS.iters, lambda _, s: method.step(problem, s), state)
      return state.x
    return jax.jit(body)

  def network_only(problem, x0):
    grad = problem.grad(x0 + 1.0)
    def body(k, acc):
      return acc + learned.log_scale(problem, x0 + acc * 1e-9, grad, k)
    return jax.lax.fori_loop(0, FLAGS.iters, body, jnp.zeros_like(x0))

  runs = {"fista": iterate(fista), "learned_iteration": iterate(drs),
          "network": jax.jit(network_only)}
  for fn in runs.values():
    jax.block_until_ready(fn(problem, x0))
  return runs, x0


def main(argv):
  del argv
  from jsgp.data import load_images  # pylint: disable=import-outside-toplevel
  from jsgp.problems import Task, simulate  # pylint: disable=import-outside-toplevel
  image = jnp.asarray(load_images(None, "test", FLAGS.size, n=1)[0])
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {FLAGS.size} px, {FLAGS.iters} "
        f"iterations x {FLAGS.repeats} interleaved rounds; load {np.round(__import__('os').getloadavg(), 1).tolist()}")
  print("| task | policy | FISTA ms/it | learned iteration / FISTA | network / FISTA iteration |")
  print("|---|---|---|---|---|")
  for task in FLAGS.tasks:
    problem = simulate(Task(task, (FLAGS.size,) * 2, pattern="uniform"), image,
                       jax.random.PRNGKey(0))
    for arch in FLAGS.archs:
      runs, x0 = make_runs(problem, arch)
      times = {name: [] for name in runs}
      for _ in range(FLAGS.repeats):
        for name, fn in runs.items():
          start = time.perf_counter()
          jax.block_until_ready(fn(problem, x0))
          times[name].append(time.perf_counter() - start)
      med = {name: float(np.median(t)) for name, t in times.items()}
      print(f"| {task} | {arch} | {1e3 * med['fista'] / FLAGS.iters:.3f} | "
            f"{med['learned_iteration'] / med['fista']:.2f} | "
            f"{med['network'] / med['fista']:.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
