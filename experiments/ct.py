"""ct: the paper's protocol (section 6).

  python -m experiments.ct --flagfile=experiments/configs/ct_demo.flags
"""
from experiments import cli, protocol, settings

if __name__ == "__main__":
  cli.run_main(settings.ProtocolConfig, protocol.run, task="ct")
