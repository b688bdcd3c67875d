"""A structure-agnostic LSTM over the window's frames (``shared`` node set only).

Each frame's vector of all neurons is one time step; the last hidden state predicts
every neuron's next-frame change (forecast, rolled out for H > 1) or the class logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wormgnn.models.common import ModelOutput


@dataclass
class LSTMConfig:
    """``models.lstm`` in config.yaml."""

    hidden: int = 128
    layers: int = 1
    dropout: float = 0.0


class WindowLSTM(nn.Module):
    r"""LSTM baseline: :math:`h_t = \mathrm{LSTM}(x_t, h_{t-1})`, :math:`\hat y = W h_t`.

    Args:
        n_nodes: neurons N (fixed).
        in_channels: channels C per frame.
        out_dim: N for forecast, K classes for behaviour.
        cfg: :class:`LSTMConfig`.

    Shapes:
        x (B, N, W, C), mask (B, N) → pred (B, N) or (B, K).
    """

    def __init__(self, n_nodes: int, in_channels: int, out_dim: int, cfg: LSTMConfig):
        super().__init__()
        self.n_nodes, self.in_channels, self.out_dim, self.cfg = n_nodes, in_channels, out_dim, cfg
        self.lstm = nn.LSTM(
            n_nodes * in_channels,
            cfg.hidden,
            num_layers=cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.head = nn.Linear(cfg.hidden, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lstm.reset_parameters()
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, graph: torch.Tensor | None = None
    ) -> ModelOutput:
        b, n, w, c = x.shape
        seq = x.permute(0, 2, 1, 3).reshape(b, w, n * c)  # (B, W, N*C)
        out, _ = self.lstm(seq)
        return ModelOutput(self.head(out[:, -1]))
