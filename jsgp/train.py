"""Greedy cumulative training of the stepsize / diagonal network (paper section 4, Algorithm 2).

Stage k (k = 0 .. K-1) trains on the union of the iterates of stages 0..k (eq. 9) with the
greedy loss of eq. 7, ``1/2 ||x* - T_{lam d}(x - d grad f(x))||^2`` (normalised by ``||x*||^2``
so that bright and dark images weigh alike), ``d = exp(s)/L`` from the network. After stage k the
next iterates are produced with the current network: eq. 6, then the conventional ``1/L`` step
of eq. 8. The ground truth ``x*`` (FISTA, ``reference_iters`` iterations) is computed batched in
one jit call and cached on disk, keyed by the problem configuration.

Every step is one jit-compiled call, vmapped over the minibatch; the whole training set (problems,
iterates, ``x*``) stays on the device and minibatches are gathered inside the step. The iterates
live in one buffer of all K stages, filled stage by stage, so the step compiles once for the whole
run. Minibatch indices are a pure function of ``(seed, global step)``, so a run resumed from a
checkpoint reproduces the uninterrupted run exactly. A checkpoint holds the training state; each
stage's iterates are written once, when they are made, beside it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from jsgp import distributed, nets, policies
from jsgp.problems import L1Problem, Task, simulate_batch
from jsgp.solvers import FISTA, run


class _JsonConfig:
  """``to_dict``: the dataclass as plain JSON types (what checkpoints record and compare)."""

  def to_dict(self) -> Dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class TrainConfig(_JsonConfig):
  """Everything that determines a training run (and must match to resume from a checkpoint)."""

  task: Task
  net: nets.UNetConfig
  num_stages: int = 20          # K: learned iterations
  steps_per_stage: int = 200
  batch_size: int = 8
  learning_rate: float = 1e-3
  grad_clip: float = 1.0
  seed: int = 0
  reference_iters: int = 1200   # FISTA iterations for x*
  target: str = "solution"      # what eq. 7 measures x~ against: x* (the paper) or the image

  def __post_init__(self):
    check_target(self.target)


TARGETS = ("solution", "image")


def check_target(target: str) -> None:
  """Raise ``ValueError`` unless ``target`` names a training target: ``"solution"`` (x*) or
  ``"image"`` (the original image)."""
  if target not in TARGETS:
    raise ValueError(f"training target must be 'solution' (x*) or 'image', got {target!r}")


@dataclasses.dataclass(frozen=True)
class UnrolledConfig(_JsonConfig):
  """An unrolled training run (``jsgp.unrolled``): the network trained through ``unroll_steps``
  iterations of the DRS solver. Must match to resume; ``warm_start`` is the checkpoint directory
  of a greedy run with the same network to start from (``""``: from scratch)."""

  task: Task
  net: nets.UNetConfig
  unroll_steps: int = 10        # T: solver iterations in the loss
  num_steps: int = 300          # Adam steps
  batch_size: int = 4
  learning_rate: float = 1e-4
  grad_clip: float = 1.0
  seed: int = 0
  reference_iters: int = 1200   # FISTA iterations for x*
  remat: bool = True            # jax.checkpoint each unrolled iteration
  warm_start: str = ""
  descent_penalty: float = 0.0  # weight of the no-descent hinge (jsgp.unrolled.unrolled_loss)
  target: str = "solution"      # what the loss measures iterates against: x* or the image

  def __post_init__(self):
    check_target(self.target)


class TrainState(NamedTuple):
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array  # global step (int32)


class Dataset(NamedTuple):
  """The training set, resident on the device."""

  problems: L1Problem      # batched over N
  x_star: jax.Array        # (N, Hc, Wc)
  images: jax.Array        # (N, H, W): the original images (the target of target="image")
  iterates: jax.Array      # (K, N, Hc, Wc): x^(0..K-1); rows >= num_iterates are not made yet
  num_iterates: jax.Array  # () int32: stages whose iterates exist, 1..K (training samples these)


# ------------------------------------------------------------------------------------------------
# Ground truth.

def _fingerprint(config: TrainConfig, images: np.ndarray) -> str:
  digest = hashlib.sha256()
  digest.update(json.dumps(dataclasses.asdict(config.task), sort_keys=True).encode())
  digest.update(f"{config.seed}/{config.reference_iters}".encode())
  digest.update(np.ascontiguousarray(images, np.float32).tobytes())
  return digest.hexdigest()[:16]


@functools.partial(jax.jit, static_argnums=1)
def converged_solutions(problems: L1Problem, iters: int) -> jax.Array:
  """``x*`` for a batch of problems: FISTA-b, ``iters`` iterations, one vmapped jit call."""
  x0 = jnp.zeros((problems.lam.shape[0],) + tuple(problems.op.in_shape), problems.lipschitz.dtype)
  return jax.vmap(lambda p, x: run(FISTA(), p, x, iters).x)(problems, x0)


def make_dataset(config, images: np.ndarray, cache_dir: Optional[str],
                 num_stages: int = 1) -> Dataset:
  """Simulate one measurement per image (key = ``seed``) and load or compute ``x*``.

  ``config``: a ``TrainConfig`` or ``UnrolledConfig`` (its task, seed and reference_iters).
  The iterate buffer holds ``num_stages`` stages (greedy training passes its K), ``x^(0) = 0``.
  """
  problems = simulate_batch(config.task, jnp.asarray(images), jax.random.PRNGKey(config.seed))
  path = None
  if cache_dir:
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"xstar_{_fingerprint(config, images)}.npy")
  if path and os.path.exists(path):
    x_star = jnp.asarray(np.load(path))
    logging.info("loaded x* for %d problems from %s", x_star.shape[0], path)
  else:
    start = time.time()
    x_star = jax.block_until_ready(converged_solutions(problems, config.reference_iters))
    logging.info("computed x* (%d FISTA iterations) for %d problems in %.1fs",
                 config.reference_iters, x_star.shape[0], time.time() - start)
    if path:
      np.save(path, np.asarray(x_star))
  iterates = jnp.zeros((num_stages,) + x_star.shape, x_star.dtype)
  return Dataset(problems=problems, x_star=x_star, images=jnp.asarray(images, x_star.dtype),
                 iterates=iterates, num_iterates=jnp.int32(1))


@functools.partial(jax.jit, donate_argnums=0)
def _store_iterates(iterates: jax.Array, index: jax.Array, x: jax.Array) -> jax.Array:
  """``iterates[index] = x`` in place (the buffer is donated)."""
  return jax.lax.dynamic_update_index_in_dim(iterates, x, index, axis=0)


# ------------------------------------------------------------------------------------------------
# The greedy step and its loss.

def _policy_step(problem: L1Problem, x: jax.Array, log_scale: jax.Array) -> jax.Array:
  """Eq. 6: ``x~ = T_{lam d}(x - d grad f(x))`` with ``d = exp(s)/L``."""
  d = policies.stepsize_from_log_scale(problem, log_scale)
  return problem.forward_backward(x, problem.grad(x), d)


def _lipschitz_step(problem: L1Problem, x: jax.Array) -> jax.Array:
  """Eq. 8: the conventional ``1/L`` proximal gradient step."""
  return problem.forward_backward(x, problem.grad(x), 1.0 / problem.lipschitz)


def _network_inputs(problems: L1Problem, x: jax.Array) -> jax.Array:
  return jax.vmap(lambda p, v: policies.network_inputs(p, v, p.grad(v)))(problems, x)


def greedy_loss(params, batch_stats, net: nets.UNetConfig, problems: L1Problem, x: jax.Array,
                targets: jax.Array, target: str = "solution") -> Tuple[jax.Array, Any]:
  """Eq. 7, normalised: the batch mean of ``||x* - x~||^2 / ||x*||^2`` with ``targets = x*``
  ``(B, Hc, Wc)``; or, with ``target="image"`` and ``targets`` the original images ``(B, H, W)``,
  of ``||W^T x~ - image||^2 / ||image||^2`` (the NMSE the experiments report).
  Returns (loss, new BatchNorm statistics)."""
  check_target(target)
  variables = {"params": params, "batch_stats": batch_stats}
  log_scale, new_stats = nets.apply_network(net, variables, _network_inputs(problems, x),
                                            train=True)
  estimate = jax.vmap(_policy_step)(problems, x, log_scale)
  if target == "image":
    estimate = jax.vmap(lambda p, v: p.image(v))(problems, estimate)
  err = jnp.sum((targets - estimate) ** 2, axis=(-2, -1)) / jnp.sum(targets ** 2, axis=(-2, -1))
  return jnp.mean(err), new_stats


@functools.partial(jax.jit, static_argnums=(0, 4))
def advance(net: nets.UNetConfig, variables, problems: L1Problem, x: jax.Array,
            chunk: int = 32) -> jax.Array:
  """Next iterates for the whole set with the current network: eq. 6 then eq. 8.

  ``problems`` batched over ``N``, ``x`` ``(N, Hc, Wc)``. The network runs on ``chunk`` instances
  at a time (``lax.map``), so peak memory is that of a ``chunk`` batch, not of the whole set (at
  256 x 256 with the paper's network, 450 instances at once would need ~40 GB of activations).
  Inference-mode BatchNorm makes the result independent of the chunking.
  """
  def one(args):
    problem, v = args
    inputs = policies.network_inputs(problem, v, problem.grad(v))[None]
    log_scale = nets.apply_network(net, variables, inputs, train=False)[0]
    return _lipschitz_step(problem, _policy_step(problem, v, log_scale))

  return jax.lax.map(one, (problems, x), batch_size=chunk)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.learning_rate))


def _gather(tree, index):
  return jax.tree_util.tree_map(lambda a: a[index], tree)


def sample_batch(config: TrainConfig, step: jax.Array, num_stages_so_far: jax.Array, n: int):
  """Minibatch (stage index, problem index) pairs drawn uniformly from the cumulative set of
  ``num_stages_so_far`` (traced: one compilation serves every stage) times ``n`` iterates."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), step)
  flat = jax.random.randint(key, (config.batch_size,), 0, num_stages_so_far * n)
  return flat // n, flat % n


@functools.lru_cache(maxsize=8)
def make_train_step(config: TrainConfig, mesh: Optional[jax.sharding.Mesh] = None):
  """The jitted step for ``config`` (cached, so repeated runs do not recompile).

  With a ``mesh`` (``jsgp.distributed.make_mesh``; data parallelism) the gathered minibatch is
  sharded along ``"data"`` and the returned state and loss are replicated; the caller passes a
  replicated state and dataset (``distributed.replicate``). ``None``: the single-device step.
  """
  optimizer = make_optimizer(config)
  if mesh is not None:  # [distributed]
    distributed.check_batch_divisible(config.batch_size, mesh)

  def train_step(state: TrainState, data: Dataset):
    stage_idx, prob_idx = sample_batch(config, state.step, data.num_iterates,
                                       data.x_star.shape[0])
    problems = _gather(data.problems, prob_idx)
    x = data.iterates[stage_idx, prob_idx]
    targets = (data.images if config.target == "image" else data.x_star)[prob_idx]
    if mesh is not None:  # [distributed] each device takes its slice of the minibatch
      problems, x, targets = distributed.constrain_batch((problems, x, targets), mesh)
    (loss, new_stats), grads = jax.value_and_grad(greedy_loss, has_aux=True)(
        state.params, state.batch_stats, config.net, problems, x, targets, config.target)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, new_stats, opt_state, state.step + 1), loss

  if mesh is not None:  # [distributed] parameters, statistics, optimiser state replicated
    return jax.jit(train_step, out_shardings=distributed.replicated_sharding(mesh))
  return jax.jit(train_step)


def init_state(config: TrainConfig, in_shape: Tuple[int, int]) -> TrainState:
  variables = nets.init_network(config.net, jax.random.PRNGKey(config.seed),
                                tuple(in_shape) + (policies.NUM_INPUT_CHANNELS,))
  opt_state = make_optimizer(config).init(variables["params"])
  return TrainState(variables["params"], variables["batch_stats"], opt_state, jnp.int32(0))


# ------------------------------------------------------------------------------------------------
# Checkpoints (orbax): state + iterates + the config, which must match to resume.

class CheckpointMismatch(ValueError):
  """A checkpoint written by a different configuration."""


def _manager(directory: str, max_to_keep: int = 2):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save_state(directory: str, config, state: TrainState,
               meta: Optional[Dict[str, Any]] = None) -> None:
  """Checkpoint ``state`` at its step with ``config`` (a ``TrainConfig`` or ``UnrolledConfig``)
  and ``meta`` in the JSON metadata."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  with _manager(directory) as mngr:
    mngr.save(int(state.step), force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({"config": config.to_dict(), **(meta or {})})))


def _iterates_path(directory: str, stage: int) -> str:
  return os.path.join(os.path.abspath(directory), "iterates", f"stage_{stage:03d}.npy")


def save_stage_iterates(directory: str, stage: int, x: jax.Array) -> None:
  """Write stage ``stage``'s iterates ``(N, Hc, Wc)`` once, beside the checkpoints (atomically:
  a temporary file renamed into place). They never change afterwards, so checkpoints do not
  carry them: the disk traffic of a run is K slabs, not K^2 / 2."""
  path = _iterates_path(directory, stage)
  if jax.process_index() == 0:  # [distributed] every host holds the same replicated values
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
      np.save(f, np.asarray(x))
    os.replace(path + ".tmp", path)


def load_stage_iterates(directory: str, out: np.ndarray, count: int) -> np.ndarray:
  """Read the first ``count`` stages' iterates into ``out[:count]`` (``out``: ``(K, N, Hc, Wc)``)
  and return ``out``; a clear error for a missing, unreadable or mismatched file."""
  shape = out.shape[1:]
  for stage in range(count):
    path = _iterates_path(directory, stage)
    try:
      slab = np.load(path)
    except (OSError, ValueError, EOFError) as err:
      raise ValueError(f"checkpoint at {directory}: the iterates of stage {stage} ({path}) are "
                       f"missing or unreadable: {type(err).__name__}: {err}") from err
    if slab.shape != shape:
      raise ValueError(f"checkpoint at {directory}: the iterates of stage {stage} have shape "
                       f"{slab.shape}, expected {tuple(shape)}")
    out[stage] = slab
  return out


def save_checkpoint(directory: str, config: TrainConfig, state: TrainState, num_iterates: int,
                    stage: int, stage_done: bool) -> None:
  """The training state, and how many stages' iterates (written by ``save_stage_iterates``)
  belong to it."""
  meta = {"stage": stage, "stage_done": stage_done, "num_iterates": num_iterates}
  save_state(directory, config, state, meta)


def _diff(saved: Dict[str, Any], current: Dict[str, Any], prefix: str = "") -> list:
  out = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _diff(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: checkpoint {a!r} vs requested {b!r}")
  return out


def read_checkpoint_meta(directory: str) -> Optional[Dict[str, Any]]:
  """The metadata of the latest checkpoint in ``directory``, or None if there is none."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(directory):
    return None
  with _manager(directory) as mngr:
    step = mngr.latest_step()
    if step is None:
      return None
    try:
      meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as err:  # orbax raises many types for unreadable files
      raise ValueError(f"checkpoint at {directory} (step {step}) is unreadable or corrupt: "
                       f"{type(err).__name__}: {err}") from err
  if not isinstance(meta, dict) or "config" not in meta:
    raise ValueError(f"checkpoint at {directory} (step {step}) has no jsgp training metadata.")
  return dict(meta, step=step)


def _with_defaults(saved: Dict[str, Any], config) -> Dict[str, Any]:
  """``saved`` plus the defaults of ``config``'s fields it lacks: a checkpoint written before a
  field was added matches a run that leaves that field at its default."""
  defaults = {f.name: f.default for f in dataclasses.fields(config)
              if f.default is not dataclasses.MISSING and f.name not in saved}
  return {**json.loads(json.dumps(defaults)), **saved}


def check_compatible(directory: str, meta: Dict[str, Any], config) -> None:
  """Raise ``CheckpointMismatch`` listing every setting in which ``meta`` differs from ``config``
  (a ``TrainConfig`` or ``UnrolledConfig``)."""
  differences = _diff(_with_defaults(meta["config"], config), config.to_dict())
  if differences:
    raise CheckpointMismatch(f"checkpoint at {directory} was written by a different "
                             "configuration:\n  " + "\n  ".join(differences))


def _restore_items(directory: str, step: int, **items):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  with _manager(directory) as mngr:
    try:
      return mngr.restore(step, args=ocp.args.Composite(**{
          name: ocp.args.StandardRestore(abstract) for name, abstract in items.items()}))
    except Exception as err:  # orbax raises many types for unreadable files
      raise ValueError(f"checkpoint at {directory} (step {step}) is unreadable, corrupt or does "
                       f"not match the network: {type(err).__name__}: {err}") from err


def _abstract(tree, sharding=None):
  # [distributed] With a target sharding (default: where each leaf of ``tree`` lives) orbax
  # restores onto the current devices, whatever devices wrote the checkpoint.
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a),
                                     sharding=sharding or getattr(a, "sharding", None)), tree)


def restore_checkpoint(directory: str, config: TrainConfig, template: TrainState,
                       data: Dataset, mesh: Optional[jax.sharding.Mesh] = None
                       ) -> Tuple[TrainState, Dataset, Dict[str, Any]]:
  """Restore the latest checkpoint after checking its configuration against ``config``.

  With a ``mesh`` the arrays are restored replicated over it, whatever devices wrote them.
  """
  # [distributed] target sharding of the restored arrays (no mesh: where template/data live)
  sharding = None if mesh is None else distributed.replicated_sharding(mesh)
  meta = read_checkpoint_meta(directory)
  if meta is None:
    raise FileNotFoundError(f"no checkpoint found in {directory}")
  check_compatible(directory, meta, config)
  count = meta["num_iterates"]
  restored = _restore_items(directory, meta["step"], state=_abstract(template, sharding))
  iterates = load_stage_iterates(directory, np.zeros(data.iterates.shape, data.x_star.dtype),
                                 count)
  return (_as_train_state(restored.state),
          data._replace(iterates=jnp.asarray(iterates), num_iterates=jnp.int32(count)), meta)


def _as_train_state(restored) -> TrainState:
  return restored if isinstance(restored, TrainState) else TrainState(*restored)


def restore_state(directory: str, config, template: TrainState) -> TrainState:
  """The ``TrainState`` of the latest checkpoint in ``directory``, after checking that it was
  written with ``config`` (``template``: a state of the right structure, e.g. ``init_state``)."""
  meta = read_checkpoint_meta(directory)
  if meta is None:
    raise FileNotFoundError(f"no checkpoint found in {directory}")
  check_compatible(directory, meta, config)
  return _as_train_state(_restore_items(directory, meta["step"],
                                        state=_abstract(template)).state)


def load_policy(checkpoint_dir: str, config,
                in_shape: Tuple[int, int]) -> policies.LearnedPolicy:
  """A ``LearnedPolicy`` from the latest checkpoint of a run with ``config`` (greedy or
  unrolled)."""
  state = restore_state(checkpoint_dir, config, init_state(config, in_shape))
  return policies.LearnedPolicy({"params": state.params, "batch_stats": state.batch_stats},
                                config.net)


# ------------------------------------------------------------------------------------------------
# The training loop.

class TrainResult(NamedTuple):
  variables: Dict[str, Any]   # {"params", "batch_stats"}: for LearnedPolicy
  losses: np.ndarray          # (num_stages * steps_per_stage,) training loss per step (NaN if resumed past)
  seconds: float              # wall time of this call


def train(config: TrainConfig, images: np.ndarray, *, checkpoint_dir: Optional[str] = None,
          checkpoint_every: int = 100, cache_dir: Optional[str] = None,
          stop_after_steps: Optional[int] = None, log_every: int = 50,
          mesh: Optional[jax.sharding.Mesh] = None) -> TrainResult:
  """Greedy cumulative training (Algorithm 2) on ``images`` ``(N, H, W)``.

  With ``checkpoint_dir`` the run saves every ``checkpoint_every`` steps and at the end of each
  stage, and resumes from the latest checkpoint there (refusing one from another configuration).
  ``stop_after_steps`` ends the call early at that global step (to simulate an interruption).
  ``mesh`` (``jsgp.distributed.make_mesh``): data-parallel training, each minibatch split over
  the mesh's devices (the batch size must divide evenly); a checkpoint written on any number of
  devices resumes on any other. ``None``: one device, as before.
  """
  start = time.time()
  if mesh is not None:  # [distributed] fail before any work
    distributed.check_batch_divisible(config.batch_size, mesh)
  data = make_dataset(config, images, cache_dir, config.num_stages)
  state = init_state(config, data.problems.op.in_shape)
  if checkpoint_dir and read_checkpoint_meta(checkpoint_dir) is not None:
    state, data, meta = restore_checkpoint(checkpoint_dir, config, state, data, mesh)
    logging.info("resumed from %s at step %d (stage %d)", checkpoint_dir, int(state.step),
                 meta["stage"])
  if mesh is not None:  # [distributed] state and training set on every device
    state, data = distributed.replicate((state, data), mesh)
  train_step = make_train_step(config) if mesh is None else make_train_step(config, mesh)
  total = config.num_stages * config.steps_per_stage
  losses = np.full((total,), np.nan, np.float32)
  step = int(state.step)
  made = int(data.num_iterates)  # stages whose iterates exist (host copy; no device sync)
  if checkpoint_dir and step == 0:
    save_stage_iterates(checkpoint_dir, 0, data.iterates[0])
  window_start, window_step = time.time(), step
  while step < total:
    stage = step // config.steps_per_stage
    state, loss = train_step(state, data)
    step += 1
    if step % log_every == 0 or step % config.steps_per_stage == 0 or step == total:
      losses[step - 1] = float(loss)  # synchronises, so the rate below is compute, not dispatch
      rate = (step - window_step) * config.batch_size / max(time.time() - window_start, 1e-9)
      eta = (total - step) * config.batch_size / max(rate, 1e-9)
      logging.info("stage %d/%d step %d/%d loss %.4g  %.1f images/s  ETA %.0fs", stage + 1,
                   config.num_stages, step, total, losses[step - 1], rate, eta)
      window_start, window_step = time.time(), step
    stage_done = step % config.steps_per_stage == 0
    if stage_done and made == stage + 1 and stage + 1 < config.num_stages:
      variables = {"params": state.params, "batch_stats": state.batch_stats}
      nxt = advance(config.net, variables, data.problems, data.iterates[stage])
      data = data._replace(iterates=_store_iterates(data.iterates, made, nxt),
                           num_iterates=jnp.int32(made + 1))
      if mesh is not None:  # [distributed] keep the training set replicated
        data = distributed.replicate(data, mesh)
      if checkpoint_dir:
        save_stage_iterates(checkpoint_dir, made, nxt)
      made += 1
    if checkpoint_dir and (stage_done or step % checkpoint_every == 0):
      save_checkpoint(checkpoint_dir, config, state, made, stage, stage_done)
    if stop_after_steps is not None and step >= stop_after_steps:
      break
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  if mesh is not None:  # [distributed] host copies: usable on any device afterwards
    variables = jax.device_get(variables)
  return TrainResult(variables=variables, losses=losses, seconds=time.time() - start)


def config_from_checkpoint(checkpoint_dir: str):
  """The ``TrainConfig`` (greedy) or ``UnrolledConfig`` recorded in the latest checkpoint of ``checkpoint_dir``."""
  meta = read_checkpoint_meta(checkpoint_dir)
  if meta is None:
    raise FileNotFoundError(f"no checkpoint found in {checkpoint_dir}")
  saved = dict(meta["config"])
  task = dict(saved.pop("task"))
  task["image_shape"] = tuple(task["image_shape"])
  kind = UnrolledConfig if "unroll_steps" in saved else TrainConfig
  known = {f.name for f in dataclasses.fields(kind)}
  unknown = set(saved) - known
  if unknown:
    raise CheckpointMismatch(f"checkpoint at {checkpoint_dir} has settings this version of "
                             f"jsgp does not know: {sorted(unknown)}")
  return kind(task=Task(**task), net=nets.UNetConfig(**saved.pop("net")), **saved)


def load_trained_policy(checkpoint_dir: str) -> policies.LearnedPolicy:
  """A ``LearnedPolicy`` from a checkpoint, with the configuration it was trained with.

  The network is convolutional (the step head pools globally), so the policy applies to canvases
  of any size divisible by ``2**depth``, not only the training size.
  """
  config = config_from_checkpoint(checkpoint_dir)
  return load_policy(checkpoint_dir, config, config.task.synthesis.in_shape)

