"""ct: the paper's protocol (section 6). `python -m experiments.ct --flagfile=experiments/configs/ct_demo.flags`."""
from absl import app

from experiments import common


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.run_experiment("ct")


if __name__ == "__main__":
  app.run(main)
