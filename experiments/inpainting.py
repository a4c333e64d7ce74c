"""inpainting: the paper's protocol (section 6).

  python -m experiments.inpainting --flagfile=experiments/configs/inpainting_demo.flags
"""
from experiments import cli, protocol, settings

if __name__ == "__main__":
  cli.run_main(settings.ProtocolConfig, protocol.run, task="inpainting")
