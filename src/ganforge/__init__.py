"""ganforge: train, evaluate and show generative adversarial networks."""

__version__ = "0.1.0"
