"""Reporting: result summaries, Markdown tables, JSON, and the PNG figures (one matplotlib
set-up for every figure of the experiments, the unrolled study and the benchmark)."""
from __future__ import annotations

import contextlib
import json
import os
from typing import Dict, Sequence

import jax.numpy as jnp
import numpy as np

from experiments import methods
from jsgp.metrics import nmse_db


@contextlib.contextmanager
def figure(path: str, ncols: int = 1, size=(6, 4), title: str = ""):
  """A matplotlib figure (Agg backend) of ``ncols`` axes, saved to ``path`` as PNG on exit;
  yields the axes (a list)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, ncols, figsize=size)
  try:
    yield list(np.atleast_1d(axes))
    if title:
      fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.92) if title else None)  # keep the axes' titles clear
    fig.savefig(path, dpi=120)
  finally:
    plt.close(fig)


def write_json(path: str, value) -> None:
  with open(path, "w") as f:
    json.dump(value, f, indent=1, default=_json_default)


def _json_default(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.bool_):
    return bool(value)
  if isinstance(value, tuple):
    return list(value)
  raise TypeError(f"not JSON serialisable: {type(value)}")


# ------------------------------------------------------------------------------------------------
# The protocol's outputs.

def summarize(runs) -> Dict[str, dict]:
  """Per method: label, reported iteration, mean/std NMSE there, seconds, the mean curve."""
  out = {}
  for name, r in runs.items():
    direct = methods.REGISTRY[name].kind == "direct"
    final = r.nmse_curve[:, 0] if direct else r.nmse_curve[:, r.iters]
    out[name] = {"label": methods.label(name), "iters": r.iters,
                 "nmse_mean": float(final.mean()), "nmse_std": float(final.std()),
                 "seconds": r.seconds,
                 "compile_seconds": None if np.isnan(r.compile_seconds) else r.compile_seconds,
                 "nmse_curve_mean": [float(v) for v in r.nmse_curve.mean(axis=0)]}
  return out


def plot_curves(path: str, case: str, runs) -> None:
  """Mean NMSE vs iteration of every method; horizontal lines for the converged reference and
  the direct U-Net."""
  with figure(path) as (ax,):
    for name, r in runs.items():
      spec = methods.REGISTRY[name]
      mean = r.nmse_curve.mean(axis=0)
      if spec.kind in ("direct", "reference"):
        value = mean[0] if spec.kind == "direct" else mean[-1]
        ax.axhline(value, ls="--", lw=1, label=f"{spec.label} ({value:.2f} dB)",
                   color=spec.color)
      else:
        ax.plot(np.arange(len(mean)), mean, label=spec.label, color=spec.color)
    ax.set_xlabel("iteration")
    ax.set_ylabel("NMSE (dB)")
    ax.set_title(f"NMSE vs iteration, {case}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_recovered(path: str, case: str, problems, test_images, runs) -> None:
  """The first test image: original, initial estimate and each method's recovery."""
  import jax  # pylint: disable=import-outside-toplevel
  first = jax.tree_util.tree_map(lambda a: a[0], problems)
  panels = [("original", np.asarray(test_images[0])),
            ("input estimate", np.asarray(first.initial_image()))]
  for name, r in runs.items():
    direct = methods.REGISTRY[name].kind == "direct"
    image = r.x[0] if direct else np.asarray(first.image(jnp.asarray(r.x[0])))
    nmse = float(nmse_db(jnp.asarray(image), jnp.asarray(test_images[0])))
    suffix = "" if direct else f"@{r.iters}"
    panels.append((f"{methods.label(name)}{suffix}\n{nmse:.2f} dB", image))
  with figure(path, len(panels), (2.6 * len(panels), 3), case) as axes:
    for ax, (title, image) in zip(axes, panels):
      ax.imshow(np.clip(image, 0, np.percentile(test_images[0], 99.9)), cmap="gray")
      ax.set_title(title, fontsize=8)
      ax.axis("off")


def write_tables(out_dir: str, task, results: Dict[str, Dict[str, dict]], meta: dict,
                 method_names: Sequence[str], learned_iters: int) -> str:
  """``results.md``: NMSE at the reported iterations, at equal iterations, and wall-clock."""
  cases = list(results)
  names = [m for m in method_names if any(m in results[c] for c in cases)]
  lines = [f"# {task.name}: NMSE (dB), mean ± std over {meta['n_test']} test images",
           "", f"Trained at {meta['train_case']}; {meta['n_train']} training images, "
           f"{task.image_shape[0]}x{task.image_shape[1]}.", "",
           "| Method | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
  for m in names:
    cells = []
    for c in cases:
      r = results[c].get(m)
      cells.append("" if r is None else f"{r['nmse_mean']:.2f} ± {r['nmse_std']:.2f}")
    direct = methods.REGISTRY[m].kind == "direct"
    suffix = "" if direct else f"@{results[cases[0]][m]['iters']}"
    lines.append(f"| {methods.label(m)}{suffix} | " + " | ".join(cells) + " |")
  iterative = [m for m in names if methods.REGISTRY[m].kind not in ("direct", "reference")]
  ks = sorted({k for k in (10, learned_iters) if k <= learned_iters})
  lines += ["", "At equal iterations (the paper's figures compare methods at iteration 10): "
            "mean NMSE (dB) at k = " + ", ".join(map(str, ks)) + ":", "",
            "| Method | " + " | ".join(f"{c} @{k}" for c in cases for k in ks) + " |",
            "|---" * (len(cases) * len(ks) + 1) + "|"]
  for m in iterative:
    lines.append(f"| {methods.label(m)} | " + " | ".join(
        f"{results[c][m]['nmse_curve_mean'][k]:.2f}" if m in results[c] else ""
        for c in cases for k in ks) + " |")
  lines += ["", "Wall-clock (s) of one batched solve over all test images (warm, one jit call; "
            "FISTA (converged): one run including compilation and per-iteration NMSE):",
            "", "| Method | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
  for m in names:
    lines.append(f"| {methods.label(m)} | " + " | ".join(
        f"{results[c][m]['seconds']:.3f}" if m in results[c] else "" for c in cases) + " |")
  if meta.get("train_seconds"):
    lines += ["", "Training time, or checkpoint loading with --reuse_checkpoint (s): " + ", ".join(
        f"{methods.label(k)} {v:.0f}" for k, v in meta["train_seconds"].items())]
  table = "\n".join(lines) + "\n"
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(table)
  return table
