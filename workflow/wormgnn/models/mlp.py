"""A structure-agnostic multilayer perceptron on the flattened window.

Works on the ``shared`` node set only: its input size fixes the number and order of
neurons. Forecast: predicts every neuron's next-frame change (rolled out for H > 1).
Behaviour: predicts the class logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wormgnn.models.common import ModelOutput


@dataclass
class MLPConfig:
    """``models.mlp`` in config.yaml."""

    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1


class WindowMLP(nn.Module):
    r"""MLP baseline: :math:`\hat y = f_\theta(\mathrm{vec}(X_{t-W+1:t}))`.

    Args:
        n_nodes: neurons N (fixed).
        window: frames W.
        in_channels: channels C per frame.
        out_dim: N for forecast, K classes for behaviour.
        cfg: :class:`MLPConfig`.

    Shapes:
        x (B, N, W, C), mask (B, N) → pred (B, N) or (B, K).
    """

    def __init__(self, n_nodes: int, window: int, in_channels: int, out_dim: int, cfg: MLPConfig):
        super().__init__()
        self.n_nodes, self.window, self.in_channels, self.out_dim = (
            n_nodes,
            window,
            in_channels,
            out_dim,
        )
        self.cfg = cfg
        dims = [n_nodes * window * in_channels] + [cfg.hidden] * cfg.layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(cfg.dropout)]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(dims[-1], out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        nn.init.zeros_(self.head.weight)  # start at persistence / uniform logits
        nn.init.zeros_(self.head.bias)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, graph: torch.Tensor | None = None
    ) -> ModelOutput:
        flat = x.reshape(x.shape[0], -1)  # (B, N*W*C)
        return ModelOutput(self.head(self.body(flat)))
