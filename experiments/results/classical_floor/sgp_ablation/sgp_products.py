"""The SGP variant of products_vs_sgp.py (measured slower; not shipped)."""
from typing import Any, NamedTuple
import jax, jax.numpy as jnp
from jsgp import policies, struct
from jsgp.operators import vdot_real, sum_squares
from jsgp.solvers import SGP
from jsgp.solvers.linesearch import backtrack, combine

class S2(NamedTuple):
  x: Any; residual: Any; grad: Any; objective: Any; stepsize: Any; backtracks: Any
  policy_state: Any; products: Any; reg: Any

@struct.dataclass
class SGP2(SGP):
  carry_g: bool = struct.field(pytree_node=False, default=True)
  def init(self, problem, x0):
    residual, grad, objective = problem.first_order(x0)
    t0 = (1.0 / problem.lipschitz).astype(jnp.real(objective).dtype)
    z = jnp.zeros((), t0.dtype)
    return S2(x0, residual, grad, objective, t0, jnp.int32(0),
              self.policy.init_from_step(problem, x0, grad), (z, z, z), problem.g(x0))
  def step(self, problem, state):
    d, policy_state = self.policy.update_from_products(problem, state.policy_state, *state.products)
    t0 = (1.0 / problem.lipschitz).astype(state.stepsize.dtype)
    d = jnp.where(jnp.isfinite(d) & (d > 0), d, t0).astype(state.x.dtype)
    x = state.x
    z = problem.forward_backward(x, state.grad, d) - x
    xz = x + z
    residual_full = problem.residual(xz)
    g_full = problem.g(xz)
    g_x = state.reg if self.carry_g else problem.g(x)
    delta = vdot_real(state.grad, z) + g_full - g_x
    objective = state.objective
    r = state.residual
    def trial(gamma):
      gz = problem.g(x + gamma * z)
      return 0.5 * sum_squares(combine(r, residual_full, gamma)) + gz, gz
    def passes(gamma, out):
      value = out[0]
      return jnp.isfinite(value) & (value <= objective + self.sufficient_decrease * gamma * delta)
    one = jnp.ones((), objective.dtype)
    full = (0.5 * sum_squares(residual_full) + g_full, g_full)
    gamma, (value, gval), i = backtrack(trial, passes, one, lambda g: self.shrink * g, self.max_backtracks, first=full)
    accepted = passes(gamma, (value, gval)) & (delta <= 0) & jnp.isfinite(delta)
    gamma = jnp.where(accepted, gamma, 0.0)
    xn = x + gamma * z
    residual = combine(r, residual_full, gamma)
    grad = problem.grad_from_residual(residual)
    w = grad - state.grad
    products = (gamma * gamma * vdot_real(z, z), gamma * vdot_real(z, w), vdot_real(w, w))
    return S2(xn, residual, grad, jnp.where(accepted, value, objective), jnp.mean(d).astype(t0.dtype), i,
              policy_state, products, jnp.where(accepted, gval, g_x))
