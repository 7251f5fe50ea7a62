"""ganforge: train, evaluate and show generative adversarial networks."""

import os

__version__ = "0.1.0"

# Nothing is ever unpickled, also inside libraries: torch-fidelity and torch's hub load
# weights with weights_only=False; this makes every load of the process weights-only
# (tensors and plain containers; any other global is refused). The opposite setting is removed,
# as torch refuses to run with both.
os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
