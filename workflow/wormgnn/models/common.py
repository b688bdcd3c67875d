"""What every neural model returns, and the autoregressive forecast rollout."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    """``pred``: forecast (B, N) next-frame change of ΔF/F, or behaviour logits (B, K).
    ``edge_prob``: (B, N, N) inferred probability of an edge sender → receiver (GNN).
    ``kl``: scalar KL divergence of the edge posterior from its prior (GNN).
    ``edges``: (B, N, N, T) the edge weights the decoder used, reusable by a rollout.
    ``context_loss``: scalar error of the inferred graph's model of the context (GNN)."""

    pred: torch.Tensor
    edge_prob: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    edges: torch.Tensor | None = None
    context_loss: torch.Tensor | None = None


def with_context(context: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Keyword arguments passing a batch's context to the models that read one (``gnn``);
    without a context the other models are called as before."""
    return {} if context is None else {"context": context}


def rollout(
    model: torch.nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor,
    graph: torch.Tensor | None,
    horizon: int,
    context: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ModelOutput]:
    """Forecast ``horizon`` frames by feeding each prediction back as the newest frame.

    Shapes: ``x`` (B, N, W, 1) → predictions (B, N, H). Also returns the first step's
    output, whose ``edge_prob``/``kl`` describe the graph inferred from the observed window
    (and its ``context``, for models that read one).
    Models that infer a graph (``reuses_edges``) infer it once, from the observed window,
    and keep it for the whole rollout, as NRI's decoder does.
    """
    preds = []
    window = x
    first = None
    for _ in range(horizon):
        if first is not None and getattr(model, "reuses_edges", False):
            out = model(window, mask, graph, edges=first.edges)
        else:
            out = model(window, mask, graph, **with_context(context))
        if first is None:
            first = out
        nxt = window[:, :, -1, 0] + out.pred  # (B, N)
        preds.append(nxt)
        window = torch.cat([window[:, :, 1:], nxt[:, :, None, None]], dim=2)
    return torch.stack(preds, dim=-1), first
