"""Shared test helpers: small float64 problems, an independent reference minimizer, a tiny
training configuration. Imported as ``from helpers import ...`` (``tests/`` is on ``sys.path``
because it holds ``conftest.py``)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from skimage import data as skdata
from skimage import transform

from jsgp import training
from jsgp.nets import UNetConfig
from jsgp.operators import sum_squares
from jsgp.problems import L1Problem, Task, simulate, simulate_batch
from jsgp.prox import soft_threshold

SHAPE = (32, 32)
# lam per task for the convergence tests: large enough that PGM reaches a 1e-6 gap within ~650
# iterations (measured: inpainting 638, fourier 92, deblur 567; at lam = 1 inpainting needs
# 13173, and the paper's deblurring lam = 1e-5 would take millions).
TEST_LAM = {"inpainting": 5.0, "fourier": 5.0, "deblur": 5.0}


def camera_image(shape=SHAPE):
  """skimage's camera image resized to ``shape``, float64 in [0, 255]."""
  return jnp.asarray(transform.resize(skdata.camera().astype(np.float64), shape,
                                      anti_aliasing=True))


@functools.lru_cache(maxsize=None)
def problem_for(task):
  """The camera image as a ``task`` problem (rate 0.5, ``TEST_LAM``, key 7); built once."""
  return simulate(Task(task, SHAPE, rate=0.5, lam=TEST_LAM[task]), camera_image(),
                  jax.random.PRNGKey(7))


@functools.partial(jax.jit, static_argnames="max_iter")
def restarted_apg(problem: L1Problem, max_iter: int):
  """Independent reference: accelerated proximal gradient with function-value restart
  (O'Donoghue & Candes 2015), constant step 1/L, written without the package's solvers.
  Returns ``(x, F(x), iterations)``."""
  step = 1.0 / problem.lipschitz
  F = lambda v: 0.5 * sum_squares(problem.op.apply(v) - problem.y) + problem.lam * jnp.sum(
      jnp.abs(v))

  def body(_, carry):
    x, z, s, fx = carry
    grad = problem.op.adjoint(problem.op.apply(z) - problem.y)
    x_new = soft_threshold(z - step * grad, problem.lam * step)
    f_new = F(x_new)
    restart = f_new > fx
    s_new = jnp.where(restart, 1.0, 0.5 * (1 + jnp.sqrt(1 + 4 * s * s)))
    z_new = jnp.where(restart, x, x_new + (s - 1) / s_new * (x_new - x))
    x_new, f_new = jnp.where(restart, x, x_new), jnp.where(restart, fx, f_new)
    return x_new, z_new, s_new, f_new

  def chunk(carry):  # 200 iterations at a time; stop when F changed < 1e-14 relative
    state, _, i = carry
    new = jax.lax.fori_loop(0, 200, body, state)
    return new, jnp.abs(state[3] - new[3]) / jnp.abs(state[3]), i + 200

  x0 = jnp.zeros(problem.op.in_shape, jnp.float64)
  start = ((x0, x0, jnp.float64(1.0), F(x0)), jnp.float64(1.0), 0)
  (x, *_), change, iters = jax.lax.while_loop(
      lambda c: (c[1] > 1e-14) & (c[2] < max_iter), chunk, start)
  return x, F(x), iters


@functools.lru_cache(maxsize=None)
def reference(task):
  """(x*, F*) of ``problem_for(task)`` to float64 accuracy by restarted APG (relative change
  < 1e-14 over 200 iterations, at most 40000), with a first-order optimality check; computed
  once per task and shared by every test module."""
  problem = problem_for(task)
  x, f_star, iters = restarted_apg(problem, 40000)
  assert int(iters) < 40000, "reference not converged"
  step = 1.0 / problem.lipschitz
  fixed_point = problem.forward_backward(x, problem.grad(x), step)
  assert float(jnp.linalg.norm(fixed_point - x) / jnp.linalg.norm(x)) < 1e-8
  return x, float(f_star)


def four_problems():
  """A batch of four inpainting problems (four views of the camera image, lam 0.5 to 4) for
  vmap tests."""
  task = Task("inpainting", SHAPE, rate=0.5, lam=1.0)
  image = camera_image()
  images = jnp.stack([image, image.T, 255 - image, jnp.flipud(image)])
  problems = simulate_batch(task, images, jax.random.PRNGKey(0))
  return problems.replace(lam=jnp.asarray([0.5, 1.0, 2.0, 4.0]))


def tiny_greedy_config(**changes):
  """A greedy-training config small enough for a test (32 px inpainting, a 4-feature U-Net,
  3 stages of 4 steps); ``changes`` override its fields."""
  base = dict(task=Task("inpainting", (32, 32)), net=UNetConfig(features=4, depth=2, head="step"),
              num_stages=3, steps_per_stage=4, batch_size=2, reference_iters=30)
  base.update(changes)
  return training.GreedyConfig(**base)
