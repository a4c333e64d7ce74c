"""``python -m experiments.bench [--quick] [...]``: see ``experiments.bench``."""
from absl import app, flags

from experiments import cli
from experiments.bench import BenchConfig, run_bench
from experiments.bench.config import ACCURACY, QUICK


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = cli.config_or_usage_error(BenchConfig)
  explicit = {name for name in set(QUICK) | set(ACCURACY) if flags.FLAGS[name].present}
  config = config.with_quick(explicit).with_mode(explicit)
  try:
    config.validate()
  except ValueError as err:
    raise app.UsageError(str(err)) from err
  run_bench(config)


if __name__ == "__main__":
  cli.define_flags(BenchConfig)
  app.run(main)
