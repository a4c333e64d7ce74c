"""fourier: the paper's protocol (section 6).

  python -m experiments.fourier --flagfile=experiments/configs/fourier_demo.flags
"""
from experiments import cli, protocol, settings

if __name__ == "__main__":
  cli.run_main(settings.ProtocolConfig, protocol.run, task="fourier")
