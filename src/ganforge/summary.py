"""Model summaries like Keras' ``model.summary()``: layer, output shape, parameters."""

from __future__ import annotations

import torch
from torch import nn


def summarize(
    net: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], title: str = ""
) -> str:
    """A table of the leaf layers with their output shapes and parameter counts.

    Runs one forward pass of ``example`` (a tuple of inputs for conditional nets: x, labels)
    in eval mode, without gradients, to see shapes.
    """
    inputs = example if isinstance(example, tuple) else (example,)
    rows: list[tuple[str, str, int]] = []
    hooks = []
    for name, mod in net.named_modules():
        if list(mod.children()):
            continue  # leaves only: containers would count their children twice

        def hook(m: nn.Module, _inp, out, name: str = name) -> None:
            shape = tuple(out.shape[1:]) if torch.is_tensor(out) else "?"
            n = sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad)
            rows.append((f"{name} ({type(m).__name__})", f"(N, {', '.join(map(str, shape))})", n))

        hooks.append(mod.register_forward_hook(hook))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    w1 = max([len(r[0]) for r in rows] + [12])
    w2 = max([len(r[1]) for r in rows] + [12])
    line = "-" * (w1 + w2 + 16)
    out = [title, line, f"{'Layer (type)':<{w1}}  {'Output shape':<{w2}}  {'Params':>12}", line]
    out += [f"{a:<{w1}}  {b:<{w2}}  {c:>12,}" for a, b, c in rows]
    out += [
        line,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        "",
    ]
    return "\n".join(s for s in out if s is not None)
