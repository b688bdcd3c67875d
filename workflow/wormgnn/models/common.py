"""What every neural model returns, and the autoregressive forecast rollout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ModelOutput:
    """``pred``: forecast (B, N) next-frame change of ΔF/F, or behaviour logits (B, K).
    ``edge_prob``: (B, N, N) inferred probability of an edge sender → receiver (GNN).
    ``kl``: scalar KL divergence of the edge posterior from its prior (GNN).
    ``edges``: (B, N, N, T) the edge weights the decoder used, reusable by a rollout.
    ``context_loss``: scalar error of the inferred graph's model of the context (GNN).
    ``senders``: (B, N_r, S) each receiver's candidate senders, when ``edges`` holds
    only theirs, receiver-major (B, N_r, S, T); a rollout passes both back."""

    pred: torch.Tensor
    edge_prob: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    edges: torch.Tensor | None = None
    context_loss: torch.Tensor | None = None
    senders: torch.Tensor | None = None


def model_inputs(
    context: torch.Tensor | None = None,
    node_ids: torch.Tensor | None = None,
    summary: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Keyword arguments passing a batch's context or its summary (``gnn``) and node
    names (``gnn``, ``gnn_connectome`` with ``identity``) to the models that read them;
    the loader builds none of them for the other models, which are called without them."""
    given = (("context", context), ("node_ids", node_ids), ("summary", summary))
    return {k: v for k, v in given if v is not None}


def rollout(
    model: torch.nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor,
    graph: torch.Tensor | None,
    horizon: int,
    **inputs: torch.Tensor,
) -> tuple[torch.Tensor, ModelOutput]:
    """Forecast ``horizon`` frames by feeding each prediction back as the newest frame.

    Shapes: ``x`` (B, N, W, 1) → predictions (B, N, H). Also returns the first step's
    output, whose ``edge_prob``/``kl`` describe the graph inferred from the observed window
    (and its ``context``, for models that read one). ``inputs``: :func:`model_inputs`.
    Models that infer a graph (``reuses_edges``) infer it once, from the observed window,
    and keep it for the whole rollout, as NRI's decoder does.
    """
    preds = []
    window = x
    first = None
    for _ in range(horizon):
        if first is not None and getattr(model, "reuses_edges", False):
            out = model(window, mask, graph, edges=first.edges, senders=first.senders, **inputs)
        else:
            out = model(window, mask, graph, **inputs)
        if first is None:
            first = out
        nxt = window[:, :, -1, 0] + out.pred  # (B, N)
        preds.append(nxt)
        window = torch.cat([window[:, :, 1:], nxt[:, :, None, None]], dim=2)
    return torch.stack(preds, dim=-1), first
