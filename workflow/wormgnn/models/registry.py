"""Model names (the ``{model}`` wildcard), their config dataclasses and constructors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from wormgnn import files
from wormgnn.models.baselines import LinearConfig
from wormgnn.models.lstm import LSTMConfig, WindowLSTM
from wormgnn.models.mlp import MLPConfig, WindowMLP
from wormgnn.models.nri import ConnectomeGNN, GNNConfig, RelationalGNN


@dataclass
class PersistenceConfig:
    """``persistence`` copies each node's last frame, so it runs on either node set."""

    node_set: str = "shared"


MODEL_CONFIGS: dict[str, type] = {
    "persistence": PersistenceConfig,
    "linear": LinearConfig,
    "mlp": MLPConfig,
    "lstm": LSTMConfig,
    "gnn": GNNConfig,
    "gnn_connectome": GNNConfig,
    "gnn_nograph": GNNConfig,
    "gnn_full": GNNConfig,
    "gnn_shuffled": GNNConfig,
}
#: The gnn's decoder on a fixed graph: which graph (:class:`ConnectomeGNN`'s ``graph``).
FIXED_GRAPH_MODELS = {
    "gnn_connectome": "given",  # the anatomical connectome
    "gnn_shuffled": "given",  # the connectome with neuron labels permuted
    "gnn_nograph": "none",
    "gnn_full": "full",
}
GNN_MODELS = ("gnn", *FIXED_GRAPH_MODELS)
NEURAL_MODELS = ("mlp", "lstm", *GNN_MODELS)
FORECAST_ONLY = ("persistence",)


def model_config(name: str, values: dict[str, Any] | None) -> Any:
    """The model's dataclass: defaults, overridden by ``values`` (unknown keys are errors)."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"model {name!r} is unknown; choose one of {sorted(MODEL_CONFIGS)}")
    return files.settings(MODEL_CONFIGS[name], values, f"models.{name}")


def node_set_of(name: str, cfg: Any) -> str:
    return getattr(cfg, "node_set", "shared")


def build_model(
    name: str,
    task: str,
    cfg: Any,
    *,
    n_nodes: int | None,
    window: int,
    in_channels: int,
    n_classes: int,
    n_names: int = 0,
) -> nn.Module:
    """Construct a neural model for ``task`` (forecast: one output per node). ``n_names``:
    the neuron names the GNNs' ``node_ids`` index (with ``identity``)."""
    if name not in NEURAL_MODELS:
        raise ValueError(f"{name} is not a neural model")
    out_dim = n_classes if task == "behaviour" else (n_nodes or 1)
    if name in ("mlp", "lstm"):
        if n_nodes is None:
            raise ValueError(f"{name} needs a fixed node count: use the shared node set")
        if name == "mlp":
            return WindowMLP(n_nodes, window, in_channels, out_dim, cfg)
        return WindowLSTM(n_nodes, in_channels, out_dim, cfg)
    gnn_out = n_classes if task == "behaviour" else 1
    n_names = n_names if task in cfg.identity else 0
    if name == "gnn":
        return RelationalGNN(window, in_channels, gnn_out, task, cfg, n_names)
    graph = FIXED_GRAPH_MODELS[name]
    return ConnectomeGNN(window, in_channels, gnn_out, task, cfg, n_names, graph=graph)
