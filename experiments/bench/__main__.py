"""``python -m experiments.bench [--quick] [...]``: see ``experiments.bench``."""
from absl import app, flags

from experiments import cli
from experiments.bench import BenchConfig, run_bench
from experiments.bench.config import QUICK


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = cli.config_or_usage_error(BenchConfig)
  explicit = {name for name in QUICK if flags.FLAGS[name].present}
  run_bench(config.with_quick(explicit))


if __name__ == "__main__":
  cli.define_flags(BenchConfig)
  app.run(main)
