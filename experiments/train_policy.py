"""Train a stepsize policy through DRS (``--mode``) and write it as a jsgp policy file.

  python -m experiments.train_policy --flagfile=experiments/configs/policy_inpainting.flags

trains ``--arch`` on ``--n_train`` training images (BSDS500 train split at ``--data_dir``, the real
CT slices' train split for ``ct``, every image of a plain folder, or the embedded set), each with its own sampling rate, noise
and ``lam`` drawn from the ranges (``jsgp.training.policy``), and writes ``<out>.msgpack`` /
``<out>.json`` (``jsgp.pretrained.save``; the manifest records every flag, the mode and budget
``jsgp.pretrained`` runs it with). The shipped policies in
``jsgp/pretrained_data`` were written by the flagfiles ``experiments/configs/policy_*.flags`` with
``--out=jsgp/pretrained_data/<task>``. Interrupted runs resume from ``--checkpoint_dir``.
"""
from __future__ import annotations

import dataclasses
import os
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_enum("task", "inpainting", ["inpainting", "fourier", "deblur", "ct"], "Task.")
flags.DEFINE_enum("arch", "coefficient_mlp", ["subband_mlp", "subband_table", "coefficient_mlp",
                                              "coarse_unet", "unet"],
                  "Policy architecture (default: the shipped policies').")
flags.DEFINE_string("data_dir", "embedded", "BSDS500 (its train split; CT slices for ct), a "
                    "folder of your own images (all of them train), or 'embedded' for the "
                    "scikit-image samples.")
flags.DEFINE_integer("image_size", 64, "Training image side.")
flags.DEFINE_integer("n_train", 64, "Training images (first of the train split).")
flags.DEFINE_integer("problems_per_image", 1, "Problems simulated per training image, each with "
                     "its own draw of rate, mask, noise and lam (more data from the same "
                     "images).", lower_bound=1)
flags.DEFINE_integer("num_steps", 400, "Optimiser steps.")
flags.DEFINE_integer("batch_size", 8, "Problems per step.")
flags.DEFINE_integer("hidden", None, "Hidden width of the MLP architectures (default: the "
                     "architecture's own).")
flags.DEFINE_integer("policy_steps", 10, "Policy iterations H the policy is trained through.")
flags.DEFINE_integer("solver_budget", None, "Policy iterations jsgp.pretrained.solver runs the "
                     "policy for (the manifest's policy_steps, DRS max_policy_steps); default "
                     "--policy_steps. Set by measurement: a policy may keep helping past its "
                     "training horizon; 0: the hand-off runs from the start (where no policy step "
                     "pays for itself).", lower_bound=0)
flags.DEFINE_enum("mode", "accelerated", ["safeguarded", "accelerated"],
                  "The DRS mode the policy is trained through.")
flags.DEFINE_enum("solver_mode", None, ["safeguarded", "relaxation", "accelerated"],
                  "The DRS mode jsgp.pretrained.solver runs the policy in (the manifest's mode); "
                  "default --mode. Set by measurement.")
flags.DEFINE_enum("solver_handoff", "mfista", ["mfista", "douglas_rachford"],
                  "The method jsgp.pretrained.solver hands off to after the policy phase (the "
                  "manifest's handoff; jsgp.pretrained.HANDOFFS). Set by measurement: "
                  "douglas_rachford needs a measurement with a cheap (I + t A^T A)^-1 "
                  "(inpainting, partial Fourier, deblurring; not CT).")
flags.DEFINE_float("learning_rate", 3e-3, "Adam learning rate.")
flags.DEFINE_integer("reference_iters", 2000, "Iterations of the x* solves.")
flags.DEFINE_list("rate_range", ["0.3", "0.7"], "Sampling rates drawn per image.")
flags.DEFINE_list("noise_range", ["0", "5"], "Noise std (0-255) drawn per image.")
flags.DEFINE_list("lam_range", ["0.5", "2"], "lam multipliers drawn per image (log-uniform).")
flags.DEFINE_float("lam", None, "Base lam (default: the paper's for the task).")
flags.DEFINE_string("pattern", "uniform", "Fourier sampling pattern.")
flags.DEFINE_integer("n_views", 144, "CT views.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("out", None, "Output prefix (writes <out>.msgpack and <out>.json).")
flags.DEFINE_string("init_from", None, "Fine-tune: start from this policy source's policy for "
                    "--task ('pretrained' or a folder of policy files; its network must be "
                    "--arch/--hidden's) instead of a fresh network.")
flags.DEFINE_string("checkpoint_dir", None, "Checkpoints (resume) directory.")
flags.DEFINE_string("cache_dir", "out/cache", "x* cache directory.")
flags.mark_flag_as_required("out")

RECORDED_FLAGS = ("task", "arch", "data_dir", "image_size", "n_train", "num_steps", "batch_size",
                  "hidden", "policy_steps", "mode", "learning_rate", "reference_iters",
                  "rate_range", "noise_range", "lam_range", "lam", "pattern", "n_views", "seed",
                  "init_from", "solver_budget", "problems_per_image")
N_CT_TRAIN = 15  # the first 15 of the 20 real slices; the last 5 are held out


def training_images(task: str, data_dir: str, size: int, n: int):
  """``(images, description)``: the training images (``(N, size, size)``) and what the manifest
  records as the training data."""
  from jsgp import data  # pylint: disable=import-outside-toplevel
  if data.is_embedded(data_dir):
    if task == "ct":
      raise ValueError("ct trains on the real slices: pass --data_dir=<CT png16 folder>")
    images = data.load_images(data_dir, "train", size, n)
    return images, f"embedded train split, {len(images)} images"
  name = os.path.basename(os.path.normpath(data_dir))
  if task == "ct":
    images = data.load_ct_slices(data_dir, size, min(n, N_CT_TRAIN))
  elif data.is_bsds500_layout(data_dir):
    images = data.load_images(data_dir, "train", size, n)
  else:  # a user's own images, all of them training
    images = data.load_image_folder(data_dir, size, n)
    return images, f"{name} (every image of the folder, up to --n_train), {len(images)} images"
  return images, f"{name} train split, {len(images)} images"


def repeat_images(images, described: str, problems_per_image: int):
  """``(images repeated problems_per_image times (N * k, H, W), description)``: each copy becomes
  its own problem (``jsgp.training.policy`` draws settings, mask and noise per problem)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  if problems_per_image == 1:
    return images, described
  return (np.repeat(images, problems_per_image, axis=0),
          f"{described}, {problems_per_image} problems each")


def starting_policy(task: str, source, net):
  """``(variables, sha256)`` of ``source``'s policy for ``task`` (``--init_from``), or
  ``(None, "")`` without a source; a clear error when it has none or another network."""
  if not source:
    return None, ""
  from jsgp import pretrained  # pylint: disable=import-outside-toplevel
  prefix = pretrained.find(source, task)
  if prefix is None:
    raise ValueError(f"--init_from={source!r} has no {task} policy")
  learned, record = pretrained.load(prefix)
  if learned.config != net:
    raise ValueError(f"--init_from={source!r}: its {task} policy is {learned.config}, not the "
                     f"--arch/--hidden network {net}; pass the flags it was trained with")
  return learned.variables, record["sha256"]


def solver_budget() -> int:
  """The budget written as the manifest's ``policy_steps`` (what ``jsgp.pretrained.solver`` runs):
  ``--solver_budget``, else the training horizon ``--policy_steps``."""
  return FLAGS.policy_steps if FLAGS.solver_budget is None else FLAGS.solver_budget


def solver_settings():
  """``(budget, mode, handoff)`` that the manifest records for ``jsgp.pretrained.solver``."""
  return solver_budget(), FLAGS.solver_mode or FLAGS.mode, FLAGS.solver_handoff


def build_config():
  from jsgp import policy_nets  # pylint: disable=import-outside-toplevel
  from jsgp.problems import Task  # pylint: disable=import-outside-toplevel
  from jsgp.training.policy import PolicyTrainingConfig  # pylint: disable=import-outside-toplevel
  task = Task(FLAGS.task, image_shape=(FLAGS.image_size,) * 2, lam=FLAGS.lam,
              pattern=FLAGS.pattern, n_views=FLAGS.n_views)
  net = policy_nets.architecture(FLAGS.arch, FLAGS.hidden)
  pair = lambda values: tuple(float(v) for v in values)
  return PolicyTrainingConfig(
      task=task, net=net, policy_steps=FLAGS.policy_steps, num_steps=FLAGS.num_steps,
      batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
      reference_iters=FLAGS.reference_iters, rate_range=pair(FLAGS.rate_range),
      noise_range=pair(FLAGS.noise_range), lam_range=pair(FLAGS.lam_range), mode=FLAGS.mode)


def main(argv):
  del argv
  from jsgp import pretrained  # pylint: disable=import-outside-toplevel
  from jsgp.training.policy import train_policy  # pylint: disable=import-outside-toplevel
  config = build_config()
  initial, init_sha256 = starting_policy(FLAGS.task, FLAGS.init_from, config.net)
  config = dataclasses.replace(config, init_sha256=init_sha256)
  images, described = training_images(FLAGS.task, FLAGS.data_dir, FLAGS.image_size,
                                      FLAGS.n_train)
  images, described = repeat_images(images, described, FLAGS.problems_per_image)
  logging.info("training %s policy for %s on %d images of %dpx", FLAGS.arch, FLAGS.task,
               len(images), FLAGS.image_size)
  start = time.time()
  result = train_policy(config, images, checkpoint_dir=FLAGS.checkpoint_dir,
                        cache_dir=FLAGS.cache_dir, initial=initial)
  budget, mode, handoff = solver_settings()
  manifest = dict(
      task=FLAGS.task, policy_steps=budget, mode=mode, handoff=handoff, training=config.to_dict(),
      flags={name: FLAGS[name].value for name in RECORDED_FLAGS},
      data=described,
      trained_size=FLAGS.image_size, size_multiple=1, min_size=16,
      final_loss=float(result.losses[-1]) if len(result.losses) else None,
      train_seconds=round(time.time() - start, 1))
  path = pretrained.save(FLAGS.out, result.variables, config.net, manifest)
  print(f"wrote {path} (loss {manifest['final_loss']:.3f}, {manifest['train_seconds']:.0f}s)")


if __name__ == "__main__":
  app.run(main)
