"""deblur: the paper's protocol (section 6).

  python -m experiments.deblur --flagfile=experiments/configs/deblur_demo.flags
"""
from experiments import cli, protocol, settings

if __name__ == "__main__":
  cli.run_main(settings.ProtocolConfig, protocol.run, task="deblur")
