"""``Sequential``: modules (or any callables) applied one after the other."""

from __future__ import annotations

from umx.nn.layers.base import Module


class Sequential(Module):
    """Calls its layers in order, each on the previous one's output.

    Args:
        *modules: modules or plain callables (e.g. ``nn.relu``), kept in the list ``layers``.
    """

    def __init__(self, *modules):
        super().__init__()
        self.layers = list(modules)

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
