"""The relation-inferring GNN (Neural Relational Inference style) and its decoder.

Kipf, Fetaya, Wang, Welling & Zemel, *Neural Relational Inference for Interacting
Systems*, ICML 2018 (arXiv 1802.04687); applied to C. elegans by Wang, Sapra, George &
Silva, Front. Artif. Intell. 2021 (arXiv 2010.08569).

**Encoder** (factor-graph MLP encoder of NRI). Each neuron's window becomes a node
embedding :math:`h_i`; each directed pair (sender s, receiver r) gets edge features
:math:`e_{sr} = f_e([h_s, h_r], c_{sr})`; an edge→node→edge pass adds context; a linear
layer gives logits over K edge types, :math:`q(z_{sr} | x) = \\mathrm{softmax}(\\ell_{sr})`.
:math:`c_{sr}` are the lagged correlations :math:`\\mathrm{corr}(x_s(t-l), x_r(t))`,
:math:`l = 0..L-1`, over a causal *context*: the ``context_frames`` frames that end at the
window's last input frame (never before the start of the window's segment, so never in
another fold's data). A 16-frame window alone carries too little evidence about a
coupling; correlations over minutes (512 frames by default) carry much more, and a
product of two activities is something the pairwise MLP would otherwise have to
approximate. :math:`c_{sr}` also holds the pair's partial correlation over the context
(:func:`partial_correlations`), which discounts shared inputs, and its lag-1 Granger
coefficient (:func:`granger_coefficients`), which is also directed.
Training samples :math:`z` with a Gumbel-softmax (temperature ``tau``, hard or soft);
evaluation uses the posterior probabilities. The KL divergence to a sparsity prior
(``prior``, e.g. 90 % "no edge") regularises the graph, and :class:`ContextDecoder`
makes the graph explain the context's dynamics as well as the window's forecast.

**Decoder** (:class:`RelationalConv`). Type 0 means "no edge" and carries no message;
each other type k has its own message function, summed at the receiver:

.. math::
    m_r = \\sum_{k \\ge 1} O_k \\sum_{s \\ne r} z_{srk}\\, \\mathrm{ReLU}(A_k h_r + B_k h_s + b_k),
    \\qquad h_r \\leftarrow h_r + g([h_r, m_r]).

Heads: forecast predicts each neuron's next-frame change; behaviour pools the node
states (attention or mean) and classifies. Node features come from activity, so the
model runs on any number of neurons, and relabelling the neurons permutes the edges
and forecasts with them and leaves the behaviour logits unchanged. For the tasks in
``identity``, the decoder also adds a learned embedding of each node's neuron name
(``node_ids``: indices into the training worms' names; 0 = unnamed or unseen, no
embedding), so that its read-out can tell AVB from AIB, which activity alone cannot
(see ``GNNConfig.identity``). The names travel with the neurons, so the symmetry above
still holds.

The first layer of every pairwise MLP is split into a sender and a receiver part, so
the (B, N, N, ·) tensors are formed once by broadcasting, and its last layer is applied
composed with the linear map that follows it (the encoder's skip and logits layers), so
fewer matrix products run per pair. ``RelationalConv`` computes the
same messages densely (all pairs, batched) or sparsely with PyG's ``MessagePassing``
over an ``edge_index``; the benchmark compares both.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from wormgnn.models.common import ModelOutput

log = logging.getLogger("wormgnn.nri")


@dataclass
class GNNConfig:
    """``models.gnn`` in config.yaml, and the fixed-graph models that share its decoder
    (``gnn_connectome`` and the ablations ``gnn_shuffled``, ``gnn_full``, ``gnn_nograph``)."""

    node_set: str = "shared"  # shared | all
    hidden: int = 64
    # Per-pair width: the (B, N, N, ·) tensors dominate the cost. 16 trains 1.4× faster
    # than 32 on the CPU; on the synthetic worm (15 epochs) edge AUROC 0.808 vs 0.812,
    # and the forecast scores within 0.006.
    message: int = 16
    layers: int = 1
    edge_types: int = 2  # including type 0 = "no edge"
    tau: float = 0.5
    hard: bool = False
    prior: list[float] = field(default_factory=lambda: [0.9, 0.1])
    kl_weight: float = 0.05
    pooling: str = "attention"  # attention | mean
    dropout: float = 0.0
    impl: str = "dense"  # dense | sparse (PyG MessagePassing); same maths
    # Candidate senders per receiver: each receiver keeps the ``senders`` nodes whose pair
    # evidence over the context is largest (:func:`sender_candidates`), and only those
    # pairs are scored and carry messages; the others have edge probability 0. None: 16
    # on the ``all`` node set (110-130 ROIs), every pair on ``shared``; 0: every pair.
    senders: int | None = None
    # Frames of its own history each node's decoder state sees (None: the whole window).
    # Fewer frames make the forecast lean on messages, as in NRI's Markovian decoder.
    decoder_frames: int | None = None
    # Encoder evidence about each pair over this many past frames (the loader supplies
    # them; at least the window itself): lagged correlations at lags 0..context_lags-1,
    # the partial correlation and the lag-1 Granger coefficient.
    context_frames: int = 512
    context_lags: int = 4
    # Weight of the context loss (:class:`ContextDecoder`); 0 turns it off.
    context_weight: float = 1.0
    # Tasks in which a learned embedding of each named neuron joins its decoder state.
    # Behaviour: forward and reversal neurons are two anti-correlated groups whose
    # activity alone does not say which is which. On the real lowo fixture (two folds)
    # macro-F1 rose from 0.84/0.81 without it to 0.89-0.90/0.90-0.93 (seeds 0-2), above
    # `linear`'s 0.887/0.898. Forecast: it fits the one training worm's neurons, and the
    # score fell from 0.056..0.207 to -0.020..0.087 (h1..h5, fold 0), so it is off.
    identity: list[str] = field(default_factory=lambda: ["behaviour"])

    def __post_init__(self) -> None:
        unknown = set(self.identity) - {"forecast", "behaviour"}
        if unknown:
            raise ValueError(
                f"identity: unknown task(s) {sorted(unknown)}; use forecast or behaviour"
            )
        if self.senders is not None and self.senders < 0:
            raise ValueError(f"senders: {self.senders} must be >= 0 (0: every pair)")
        if self.sender_count and self.impl == "sparse":
            raise ValueError("senders: candidate senders need impl: dense")

    @property
    def sender_count(self) -> int:
        """Candidate senders per receiver (0: every pair), with ``senders: null`` resolved."""
        if self.senders is not None:
            return self.senders
        return 16 if self.node_set == "all" else 0


def _mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class PairwiseMLP(nn.Module):
    r""":math:`f([h_s, h_r]) = V\,\mathrm{ReLU}(U_s h_s + U_r h_r + b)` for all pairs, the
    first layer split into a sender and a receiver projection so that only one matrix
    product runs per pair. Its methods return the hidden layer :math:`\mathrm{ReLU}(\cdot)`
    (B, N_s, N_r, hidden): :class:`RelationEncoder` applies :math:`V` composed with the
    linear map that follows it (:func:`composed`), one product per pair instead of two."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.send = nn.Linear(in_dim, hidden, bias=False)
        self.recv = nn.Linear(in_dim, hidden)
        self.out = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    @property
    def last(self) -> nn.Linear:
        """:math:`V`, the layer after the hidden one."""
        return self.out[1]

    def hidden(self, h: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Every pair: h (B, N, F), extra (B, N_s, N_r, hidden) → (B, N_s, N_r, hidden)."""
        pre = self.send(h)[:, :, None] + self.recv(h)[:, None, :]  # (B, N_s, N_r, hidden)
        pre += extra  # in place: the (B, N, N, hidden) tensors bound the CPU's speed
        return torch.relu_(pre)

    def candidates(
        self, h: torch.Tensor, senders: torch.Tensor, extra: torch.Tensor
    ) -> torch.Tensor:
        """Each receiver's candidate senders, receiver-major: h (B, N, F), senders (B,
        N_r, S) indices, extra (B, N_r, S, hidden) → (B, N_r, S, hidden)."""
        pre = gather_nodes(self.send(h), senders) + self.recv(h)[:, :, None]
        pre += extra
        return torch.relu_(pre)

    def self_pairs(self, h: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """The pairs (r, r): h (B, N, F), extra (B, N, hidden) → (B, N, hidden)."""
        return torch.relu_(self.send(h) + self.recv(h) + extra)


def composed(outer: nn.Linear, inner: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``outer(inner(x))``, one linear map (a bias-free layer's is 0).
    On the (B, N, N, ·) pair tensors this is one matrix product instead of two; the
    parameters, and so training in exact arithmetic, are those of the two layers."""
    weight = outer.weight @ inner.weight
    bias = outer.weight.new_zeros(outer.out_features)
    if inner.bias is not None:
        bias = bias + outer.weight @ inner.bias
    if outer.bias is not None:
        bias = bias + outer.bias
    return weight, bias


def gather_nodes(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-node rows ``t`` (B, N, ...) at ``index`` (B, N_r, S) → (B, N_r, S, ...)."""
    batch = torch.arange(t.shape[0], device=t.device)[:, None, None]
    return t[batch, index]


class RelationalConv(nn.Module):
    """One decoder message-passing step with one message function per edge type, over
    all pairs of a padded batch (:class:`wormgnn.models.sparse.SparseRelationalConv` is
    the same layer over a PyG ``edge_index``).

    Args:
        hidden: node state size F.
        message: message size M.
        n_types: message-carrying edge types T (all types but "no edge").

    Shapes: h (B, N, F), z (B, N_s, N_r, T) → (B, N, F).
    """

    def __init__(self, hidden: int, message: int, n_types: int):
        super().__init__()
        self.hidden, self.message_dim, self.n_types = hidden, message, n_types
        self.recv = nn.Linear(hidden, n_types * message)
        self.send = nn.Linear(hidden, n_types * message, bias=False)
        self.out_weight = nn.Parameter(torch.empty(n_types, message, hidden))
        self.out_bias = nn.Parameter(torch.empty(hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.recv.reset_parameters()
        self.send.reset_parameters()
        nn.init.xavier_uniform_(self.out_weight)
        nn.init.zeros_(self.out_bias)

    def forward(
        self, h: torch.Tensor, z: torch.Tensor, senders: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``senders`` (B, N_r, S): each receiver's candidate senders; ``z`` is then
        receiver-major (B, N_r, S, T), weights of those pairs only."""
        b, n, _ = h.shape
        # Receiver-major (B, N_r, N_s, ·), summed over senders as a broadcast product and
        # sum. With torch 2.13 on one CPU thread (64 windows, M = 16, forward and
        # backward), that is 2.5-3 times faster than the einsum's batched (1 × N_s)(N_s
        # × M) products, which are too small to use the matrix unit well: 9.2 → 2.9 ms on
        # 21 nodes with 2 edge types, 18.1 → 6.5 ms on 40, 25.1 → 9.4 ms on 130
        # receivers × 16 candidate senders. A fixture epoch of gnn_full's forecast went
        # from 2.5 to 1.9 s, the gnn's from 4.4 to 3.5 s. The transposed z is made
        # contiguous: with the transposed view, the product and its backward ran on a
        # permuted layout. Contiguous, six epochs of the fixture's gnn forecast (fold 0,
        # `within`, one thread, the two versions side by side, three times) took
        # 10.2-10.4 s against 12.3-12.4, its behaviour 6.1-6.7 against 6.7-6.8, and
        # gnn_full's forecast (no encoder) 6.0-6.4 against 6.0-6.2, no change. The sum
        # over senders then runs in memory order: the same to about 1 ulp, not bit for bit.
        a = self.recv(h)[:, :, None]  # receivers (B, N_r, 1, T * M)
        if senders is None:
            s = self.send(h)[:, None]  # senders (B, 1, N_s, T * M)
            z = z.transpose(1, 2).contiguous()  # (B, N_r, N_s, T)
        else:
            s = gather_nodes(self.send(h), senders)  # (B, N_r, S, T * M)
        return self.read_out(message_sum(a, s, z))  # (B, N_r, T, M) summed messages

    def read_out(self, agg: torch.Tensor) -> torch.Tensor:
        """Summed messages (..., T, M) → the node update's input (..., F)."""
        return torch.einsum("...tm,tmh->...h", agg, self.out_weight) + self.out_bias


def message_sum_eager(a: torch.Tensor, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Each receiver's messages summed over its senders, weighted by edge type:
    ``a`` (B, N_r, 1, T * M) receiver and ``s`` (B, 1 or N_r, S, T * M) sender parts,
    ``z`` (B, N_r, S, T) weights → (B, N_r, T, M)."""
    b, n, n_types = a.shape[0], a.shape[1], z.shape[-1]
    msg = torch.relu_(a + s).view(b, n, s.shape[2], n_types, -1)
    return (z[..., None] * msg).sum(2)


class CompiledMessageSum:
    """:func:`message_sum_eager` compiled by ``torch.compile`` (TorchInductor) into one
    fused loop, forward and backward, where gradients are taken on the CPU (training
    steps): eagerly, each of its steps writes and reads a (B, N_r, S, T * M) temporary.
    Measured with torch 2.13 on one CPU thread (64 windows, M = 16, one edge type,
    forward and backward) the sum alone took 1.5-1.8 → 0.34-0.40 ms on 21 nodes and
    6.8-7.4 → 1.0 ms on 40; a training epoch of the fixture's forecast (fold 0,
    ``within``, run one after the other) 1.25 → 1.02 s for ``gnn_full`` and 2.08 → 1.81 s
    for the ``gnn``; its ``gnn`` select job, the two versions side by side, 127 → 112 s.
    A process pays about 2-4 s to compile it once (TorchInductor's cache warm; more the
    first time on a machine). The sizes are dynamic
    from the first call, so every batch and node count runs the same kernel (a batch's
    rows do not depend on the others, tested) and a run's numbers do not depend on the
    shapes its process saw before. The sum over senders runs in another order than
    eager's: the same to about 1 ulp. Without gradients (validation, evaluation: too
    short to repay the compile), off the CPU (no GPU was at hand to test it), with
    ``WORMGNN_EAGER=1``, or where it cannot compile (no C++ compiler; a warning), the
    eager function runs."""

    def __init__(self) -> None:
        self.compiled = None
        self.eager = os.environ.get("WORMGNN_EAGER", "") not in ("", "0")

    def __call__(self, a: torch.Tensor, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.eager or a.device.type != "cpu" or not torch.is_grad_enabled():
            return message_sum_eager(a, s, z)
        try:
            if self.compiled is None:
                self.compiled = torch.compile(message_sum_eager, dynamic=True)
            return self.compiled(a, s, z)
        except Exception as err:  # noqa: BLE001 - any compiler failure: run eagerly
            self.eager = True
            log.warning("gnn: torch.compile failed (%s); message sums run eagerly", err)
            return message_sum_eager(a, s, z)


message_sum = CompiledMessageSum()


def dense_to_sparse_edges(z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All valid directed pairs of a padded batch as a PyG ``edge_index`` over the
    flattened nodes, with their (E, T) edge weights."""
    b, n = mask.shape
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=mask.device)
    bi, si, ri = pair.nonzero(as_tuple=True)
    edge_index = torch.stack([bi * n + si, bi * n + ri])
    return edge_index, z[bi, si, ri]


class RelationalDecoder(nn.Module):
    """Node embedding from the window (plus the name's embedding, for ``n_names`` known
    names), ``layers`` relational message-passing steps, and a forecast or behaviour
    head. Shapes: x (B, N, W, C), z (B, N, N, T), node_ids (B, N) → pred."""

    def __init__(
        self,
        window: int,
        in_channels: int,
        out_dim: int,
        task: str,
        cfg: GNNConfig,
        n_names: int = 0,
    ):
        super().__init__()
        self.task, self.cfg = task, cfg
        h = cfg.hidden
        self.frames = min(cfg.decoder_frames or window, window)
        self.embed = _mlp([self.frames * in_channels, h, h], cfg.dropout)
        # row 0: unnamed or unseen neurons, kept at zero
        self.names = nn.Embedding(n_names + 1, h, padding_idx=0) if n_names else None
        conv = RelationalConv
        if cfg.impl == "sparse":  # PyG only where it is used: its import costs 2 s a job
            from wormgnn.models.sparse import SparseRelationalConv as conv
        self.convs = nn.ModuleList(
            conv(h, cfg.message, cfg.edge_types - 1) for _ in range(cfg.layers)
        )
        self.updates = nn.ModuleList(_mlp([2 * h, h, h], cfg.dropout) for _ in range(cfg.layers))
        if task == "forecast":
            self.head = nn.Linear(h, 1)
        else:
            self.attention = nn.Linear(h, 1)
            self.head = _mlp([h, h, out_dim], cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | RelationalConv):
                module.reset_parameters()
        last = self.head if isinstance(self.head, nn.Linear) else self.head[-1]
        nn.init.zeros_(last.weight)  # start at persistence / uniform logits
        nn.init.zeros_(last.bias)
        if self.names is not None:
            nn.init.zeros_(self.names.weight)  # start identity-blind

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        z: torch.Tensor | None,
        node_ids: torch.Tensor | None = None,
        senders: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``z`` None: no edges at all (``gnn_nograph``). The summed message is then zero,
        so each step's input is the read-out's bias, exactly, without scoring the pairs.
        ``senders``: candidate senders (:class:`RelationalConv`)."""
        b, n = mask.shape
        h = self.embed(x[:, :, -self.frames :].reshape(b, n, -1))  # (B, N, F)
        if self.names is not None and node_ids is not None:
            h = h + self.names(node_ids)
        if self.cfg.impl == "sparse" and z is not None:
            edge_index, z_edges = dense_to_sparse_edges(z, mask)
        for conv, update in zip(self.convs, self.updates, strict=True):
            if z is None:
                m = conv.out_bias.expand(b, n, -1)
            elif self.cfg.impl == "sparse":
                m = conv(h.reshape(b * n, -1), edge_index, z_edges).view(b, n, -1)
            else:
                m = conv(h, z, senders)
            h = h + update(torch.cat([h, m], dim=-1))
        if self.task == "forecast":
            return self.head(h).squeeze(-1)  # (B, N) next-frame change
        if self.cfg.pooling == "attention":
            score = self.attention(h).squeeze(-1).masked_fill(~mask, float("-inf"))
            weights = torch.softmax(score, dim=1)  # (B, N)
        else:
            weights = mask.float() / mask.sum(1, keepdim=True)
        return self.head((weights[:, :, None] * h).sum(1))  # (B, K)


def standardise_context(context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score each node's context over its valid frames. ``context`` (B, N, L), NaN at
    frames outside the context (shared by all nodes of a sample) → (z-scores, 0 outside;
    (B, L) float mask of the valid frames)."""
    valid = ~torch.isnan(context)
    frames = valid[:, 0].float()  # (B, L): node 0 is real in every sample
    count = frames.sum(-1).clamp(min=1)[:, None, None]
    values = torch.nan_to_num(context)
    centred = (values - values.sum(-1, keepdim=True) / count) * valid
    return centred / (centred.pow(2).sum(-1, keepdim=True) / count).sqrt().clamp(min=1e-3), frames


def lagged_correlations(z: torch.Tensor, frames: torch.Tensor, lags: int) -> torch.Tensor:
    """Correlation of each sender's past with each receiver's present.

    ``z, frames``: the context as :func:`standardise_context` returns it, from (B, N, L)
    activity, NaN at frames outside the context (before its segment's start); every
    node of a sample shares those frames. Returns (B, N_s, N_r, lags): ``[..., l]`` =
    corr(x_s(t - l), x_r(t)) over the frames where both exist.
    """
    length = z.shape[-1]
    out = []
    for lag in range(min(lags, length - 1) if length > 1 else 1):
        both = (frames[:, : length - lag] * frames[:, lag:]).sum(-1).clamp(min=1)
        prod = torch.einsum("bst,brt->bsr", z[..., : length - lag], z[..., lag:])
        out.append(prod / both[:, None, None])
    while len(out) < lags:  # a context shorter than the lags: no evidence at those lags
        out.append(torch.zeros_like(out[0]))
    return torch.stack(out, dim=-1)


def partial_correlations(u: torch.Tensor, frames: torch.Tensor, ridge: float = 0.1) -> torch.Tensor:
    """Each pair's correlation given all the other nodes, over the context: from the
    precision matrix of the z-scored context, shrunk by ``ridge``. Pairwise correlation
    also links two neurons that share an input or a partner; partial correlation mostly
    does not. ``u, frames`` as in :func:`lagged_correlations` (padded nodes are zero)
    → (B, N, N), zero on the diagonal."""
    count = frames.sum(-1).clamp(min=1)[:, None, None]
    eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
    precision = torch.linalg.inv(torch.einsum("bst,brt->bsr", u, u) / count + ridge * eye)
    diag = precision.diagonal(dim1=1, dim2=2).clamp(min=1e-6).sqrt()
    return -precision / (diag[:, :, None] * diag[:, None, :]) * (1 - eye)


def granger_coefficients(u: torch.Tensor, frames: torch.Tensor, ridge: float = 0.1) -> torch.Tensor:
    """Each sender's coefficient in the ridge regression of each receiver's
    frame-to-frame change on every node's previous frame, over the context (lag-1
    Granger, conditional on all nodes and on the receiver's own level). Unlike the
    correlations it is directed. ``u, frames`` as in :func:`lagged_correlations` →
    (B, N_s, N_r); the diagonal is each node's own coefficient."""
    ok = (frames[:, 1:] * frames[:, :-1])[:, None]  # (B, 1, L - 1): both frames valid
    past = u[..., :-1] * ok
    change = (u[..., 1:] - u[..., :-1]) * ok
    count = ok.sum(-1, keepdim=True).clamp(min=1)
    gram = past @ past.transpose(1, 2) / count
    eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
    return torch.linalg.solve(gram + ridge * eye, past @ change.transpose(1, 2) / count)


class RelationEncoder(nn.Module):
    """NRI's MLP encoder: node → edge → node → edge, then edge-type logits; each pair
    also sees its lagged and partial correlations and its Granger coefficient over the
    context (:func:`lagged_correlations`, :func:`partial_correlations`,
    :func:`granger_coefficients`).
    Shapes: x (B, N, W, C), mask (B, N), evidence (B, N_s, N_r, lags + 2) from
    :func:`context_summary` (the pair features are it and its magnitude) → logits
    (B, N_s, N_r, K)."""

    def __init__(self, window: int, in_channels: int, cfg: GNNConfig):
        super().__init__()
        h = cfg.hidden
        self.lags = cfg.context_lags
        self.embed = _mlp([window * in_channels, h, h], cfg.dropout)
        m = cfg.message
        self.pair_in = nn.Linear(2 * self.lags + 4, m, bias=False)
        self.pair_out = nn.Linear(2 * self.lags + 4, cfg.edge_types, bias=False)
        self.edge1 = PairwiseMLP(h, m, m)
        self.node2 = _mlp([m, h, h], cfg.dropout)
        self.edge2 = PairwiseMLP(h, m, m)
        self.skip = nn.Linear(m, m, bias=False)
        self.logits = nn.Linear(m, cfg.edge_types)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, summary: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``summary``: :func:`context_summary`. With candidate senders in it, the logits
        are those of each receiver's candidates, receiver-major (B, N_r, S, K)."""
        b, n = mask.shape
        h = self.embed(x.reshape(b, n, -1))
        if "senders" in summary:
            return self._candidates(h, mask, summary)
        pair = (mask[:, :, None] & mask[:, None, :]).float()[..., None]  # (B, N_s, N_r, 1)
        into, direct = self._evidence(summary["evidence"])  # (B, N_s, N_r, ·)
        r1 = self.edge1.hidden(h, into)  # edge1's hidden layer; its edges e = V r1 + c
        if not mask.all():  # padded nodes send nothing (a fixed node set has none)
            r1 = r1 * pair
        # edge → receiver node: the mean of e over the senders, from r1's mean (on padded
        # receivers this differs from the mean of masked e, and nothing reads them)
        count = mask.sum(1).clamp(min=1)[:, None, None]
        h2 = self.node2(self.edge1.last(r1.sum(1) / count))
        return self._edge_logits(h2, r1, direct, self.edge2.hidden)

    def _evidence(self, evidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A pair's features (the evidence and its magnitude) into edge1's hidden layer and
        straight into the logits, in one matrix product."""
        weight = torch.cat([self.pair_in.weight, self.pair_out.weight])
        both = F.linear(_pair_features(evidence), weight)
        return both[..., : self.pair_in.out_features], both[..., self.pair_in.out_features :]

    def _edge_logits(self, h2, r1, direct, hidden2) -> torch.Tensor:
        """``logits(edge2(h2, skip(e)))`` with e = edge1's edges, from edge1's hidden layer
        ``r1``; ``hidden2`` is edge2's hidden layer over the same pairs. (Pairs with a
        padded node get other logits than from masked e; nothing reads them.)"""
        r2 = hidden2(h2, F.linear(r1, *composed(self.skip, self.edge1.last)))
        return F.linear(r2, *composed(self.logits, self.edge2.last)) + direct

    def _candidates(
        self, h: torch.Tensor, mask: torch.Tensor, summary: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The same encoder over each receiver's candidate senders. The edge → node step
        also takes the pair (r, r), as the dense one does, and averages over the pairs it
        sums: with every other node a candidate, this is the dense encoder exactly."""
        senders, valid = summary["senders"], summary["sender_mask"][..., None]  # (B, N_r, S, 1)
        into, direct = self._evidence(summary["sender_evidence"])  # (B, N_r, S, ·)
        own, _ = self._evidence(summary["self_evidence"])  # (B, N, ·)
        r1 = self.edge1.candidates(h, senders, into) * valid
        r_self = self.edge1.self_pairs(h, own)  # (padded receivers: read by nothing)
        pairs = valid.sum(2) + 1  # (B, N_r, 1): the candidates and (r, r)
        h2 = self.node2(self.edge1.last((r1.sum(2) + r_self) / pairs))

        def hidden2(h2: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
            return self.edge2.candidates(h2, senders, extra)

        return self._edge_logits(h2, r1, direct, hidden2)


def _pair_features(evidence: torch.Tensor) -> torch.Tensor:
    """The encoder's pair features: the evidence and its magnitude."""
    return torch.cat([evidence, evidence.abs()], dim=-1)


class ContextDecoder(nn.Module):
    r"""Makes the inferred graph explain the context, not only the window's next frames.

    The forecast alone gives the encoder a weak signal: a neuron's next ΔF/F frame is
    mostly its own smooth history plus imaging noise, and its inputs add little to it.
    Over the hundreds of frames of the context their contribution adds up, as in Granger
    causality. So the context is also modelled with the inferred graph: each receiver's
    frame-to-frame change :math:`\Delta u_r(t)`, after its own last ``lags`` frames
    (coefficients :math:`a`, shared), is regressed on its senders' previous frame
    :math:`u_s(t-1)`, each sender's column scaled by its edge weight
    :math:`w_{sr} = \sum_{k \ge 1} z_{srk}`:

    .. math::
        e_r = \Delta u_r - \textstyle\sum_p a_p u_r(\cdot - p), \qquad
        \mathrm{loss}_r = \min_\beta \tfrac{1}{T} \lVert e_r - X_r \beta \rVert^2
        + \lambda \lVert \beta \rVert^2, \quad X_r = [\, w_{sr} u_s(\cdot - 1) \,]_s,

    solved in closed form (ridge ``ridge``), so every edge gets its own signed coefficient
    and the senders are weighed jointly (conditional, not pairwise, evidence: a common
    input or a two-step path explains little once the direct sender is in). The loss is
    the mean over receivers, weighted by ``context_weight``; without a sparsity cost
    every extra sender lowers it a little, so ``kl_weight`` must price an edge (about
    0.05). ``u`` is the z-scored context; it ends at the window's last input frame, so
    this never sees a forecast target. Only the first ``samples`` windows of a batch are
    scored (the training loader shuffles): neighbouring windows share most of their
    context, and this keeps the loss to about a tenth of a GNN step's time on the CPU.

    The loss is computed from :meth:`statistics` of the context, which do not change
    during training, so the loader computes them once per window.

    Shapes: stats (:meth:`statistics`), z (B, N_s, N_r, T), mask (B, N) → scalar.
    """

    samples = 8

    def __init__(self, lags: int, ridge: float = 0.05):
        super().__init__()
        self.lags, self.ridge = lags, ridge
        self.own = nn.Parameter(torch.zeros(lags))

    @staticmethod
    def statistics(u: torch.Tensor, frames: torch.Tensor, lags: int) -> dict[str, torch.Tensor]:
        r"""The loss's sufficient statistics, a function of the data alone: with
        :math:`v_r(t) = [\Delta u_r(t), u_r(t-1), \dots, u_r(t-p)]` over the scored
        frames, ``cross`` :math:`D_{rsk} = \overline{v_{rk}(t)\, u_s(t-1)}` and ``moments``
        :math:`M_r = \overline{v_r v_r^\top}`. Then :math:`e_r = c^\top v_r` with
        :math:`c = [1, -a]`, so :math:`(X_r^\top e_r / T)_s = w_{sr} \sum_k D_{rsk} c_k`,
        :math:`\lVert e_r \rVert^2 / T = c^\top M_r c`, and :math:`D_{rs1}` is the
        senders' Gram matrix. ``u, frames`` as :func:`standardise_context` returns them (padded
        nodes are zero, so their statistics are too) → cross (B, N_r, N_s, p + 1),
        moments (B, N, p + 1, p + 1): the nodes lead, as :data:`SUMMARY_NODE_DIMS` says."""
        b, n, length = u.shape
        p = lags
        if length <= p:  # no frame to score: zero statistics give a zero loss
            return {
                "cross": u.new_zeros(b, n, n, p + 1),
                "moments": u.new_zeros(b, n, p + 1, p + 1),
            }
        ok = (frames[:, p:] * frames[:, :-p])[:, None, :, None]  # (B, 1, L - p, 1)
        count = ok[:, 0, :, 0].sum(-1).clamp(min=1)[:, None, None, None]  # (B, 1, 1, 1)
        change = u[..., p:] - u[..., p - 1 : -1]
        past = [u[..., p - i : length - i] for i in range(1, p + 1)]
        v = torch.stack([change, *past], dim=-1) * ok  # (B, N, L - p, p + 1)
        sender = v[..., 1]  # u_s(t - 1) on the scored frames
        return {
            "cross": torch.einsum("brtk,bst->brsk", v, sender) / count,
            "moments": torch.einsum("bntk,bntl->bnkl", v, v) / count,
        }

    def forward(
        self, stats: dict[str, torch.Tensor], z: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        s = self.samples
        moments, z, mask = stats["moments"][:s], z[:s], mask[:s]
        coef = torch.cat([torch.ones_like(self.own[:1]), -self.own])  # c = [1, -a]
        if "sender_gram" in stats:  # candidate senders: z is receiver-major (B, N_r, S, T)
            cross = stats["sender_cross"][:s]  # (B, N_r, S, p + 1)
            w = z.sum(-1)  # (B, N_r, S)
            gram = unpack_symmetric(stats["sender_gram"][:s], w.shape[-1])  # (B, N_r, S, S)
        else:
            cross = stats["cross"][:s]  # (B, N_r, N_s, p + 1)
            gram = cross[:, None, ..., 1]  # (B, 1, N_s, N_s): u_s(t - 1) u_q(t - 1)
            w = z.sum(-1).transpose(1, 2)  # (B, N_r, N_s)
        residual_cross = torch.einsum("brsk,k->brs", cross, coef)  # (B, N_r, N_s)
        residual_sq = torch.einsum("bnkl,k,l->bn", moments, coef, coef)  # (B, N_r)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        system = w[..., :, None] * gram * w[..., None, :] + self.ridge * eye
        rhs = w * residual_cross  # X_r^T e_r / T
        explained = (rhs * torch.linalg.solve(system, rhs[..., None])[..., 0]).sum(-1)
        loss = residual_sq - explained  # (B, N_r)
        return (loss * mask).sum() / mask.sum().clamp(min=1)


#: Per tensor of :func:`context_summary`, how many dimensions after the batch's are
#: nodes (the loader pads them to a batch's largest worm).
SUMMARY_NODE_DIMS = {
    "evidence": 2,
    "cross": 2,
    "moments": 1,
    "senders": 1,
    "sender_mask": 1,
    "sender_evidence": 1,
    "self_evidence": 1,
    "sender_cross": 1,
    "sender_gram": 1,
}


def sender_candidates(
    evidence: torch.Tensor, count: int, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each receiver's ``count`` candidate senders: the other valid nodes with the largest
    summed magnitude of pair evidence (lagged and partial correlations, Granger term)
    over the context. ``evidence`` (B, N_s, N_r, E), ``mask`` (B, N) or None (all valid)
    → senders (B, N_r, count) indices and their (B, N_r, count) bool validity (False
    for padded receivers, and past the N - 1 other nodes of a small worm)."""
    b, n = evidence.shape[:2]
    score = evidence.abs().sum(-1).transpose(1, 2)  # (B, N_r, N_s)
    invalid = torch.eye(n, dtype=torch.bool, device=evidence.device)[None]
    if mask is not None:
        invalid = invalid | ~mask[:, None, :]
    top, senders = score.masked_fill(invalid, float("-inf")).topk(min(count, n - 1), dim=-1)
    valid = torch.isfinite(top)
    if mask is not None:
        valid &= mask[:, :, None]
    if senders.shape[-1] < count:  # fewer other nodes than candidates
        senders = F.pad(senders, (0, count - senders.shape[-1]))
        valid = F.pad(valid, (0, count - valid.shape[-1]))
    return senders, valid


def context_summary(
    context: torch.Tensor,
    lags: int,
    samples: int | None = None,
    senders: int = 0,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Everything the ``gnn`` reads from its context, a function of the data alone, so
    the loader computes it once per window and reuses it every epoch
    (:class:`wormgnn.data.WindowLoader`): ``evidence`` (B, N_s, N_r, lags + 2), the
    encoder's pair features (lagged correlations, partial correlation, Granger term),
    and :meth:`ContextDecoder.statistics` (of the first ``samples`` windows only, when
    given: all the loss reads; none for 0). ``context`` (B, N, L), NaN outside.

    With ``senders`` > 0, only each receiver's candidate senders
    (:func:`sender_candidates`; ``mask`` (B, N) the valid nodes, or None for all): their
    indices ``senders`` and float ``sender_mask`` (B, N_r, S), ``sender_evidence`` (B,
    N_r, S, lags + 2), ``self_evidence`` (B, N, lags + 2) of each pair (r, r), and the
    statistics restricted to them: ``sender_cross`` (B, N_r, S, p + 1), ``sender_gram``
    (B, N_r, S (S + 1) / 2), the upper triangle of each receiver's senders' Gram matrix
    (:func:`unpack_symmetric`; half the bytes of the square, the largest tensor of the
    loader's cache), and ``moments``. A window's summary then grows as N·S², not N²."""
    u, frames = standardise_context(context)
    corr = torch.cat(
        [
            lagged_correlations(u, frames, lags),
            partial_correlations(u, frames)[..., None],
            granger_coefficients(u, frames)[..., None],
        ],
        dim=-1,
    )
    stats = {} if samples == 0 else ContextDecoder.statistics(u[:samples], frames[:samples], lags)
    if not senders:
        return {"evidence": corr, **stats}
    index, valid = sender_candidates(corr, senders, mask)
    batch = torch.arange(corr.shape[0], device=corr.device)[:, None, None]
    receiver = torch.arange(corr.shape[2], device=corr.device)[None, :, None]
    out = {
        "senders": index,
        "sender_mask": valid.to(corr.dtype),  # float: the loader zero-pads it
        "sender_evidence": corr[batch, index, receiver],  # corr is [b, s, r]
        "self_evidence": corr.diagonal(dim1=1, dim2=2).transpose(1, 2),
    }
    if stats:
        m = stats["cross"].shape[0]  # the first `samples` windows
        index, batch = index[:m], batch[:m]
        gram = stats["cross"][..., 1]  # (B, N, N)
        out["sender_cross"] = stats["cross"][batch, receiver, index]  # cross is [b, r, s]
        upper = torch.triu_indices(senders, senders, device=corr.device)
        out["sender_gram"] = gram[batch, index[..., upper[0]], index[..., upper[1]]]
        out["moments"] = stats["moments"]
    return out


def unpack_symmetric(upper: torch.Tensor, size: int) -> torch.Tensor:
    """Symmetric (..., size, size) matrices from their upper triangles (..., size (size +
    1) / 2), row-major as :func:`torch.triu_indices` lists them."""
    rows, cols = torch.triu_indices(size, size, device=upper.device)
    position = torch.empty(size, size, dtype=torch.long, device=upper.device)
    order = torch.arange(rows.numel(), device=upper.device)
    position[rows, cols] = order
    position[cols, rows] = order
    return upper[..., position]


def softmax_over_types(logits: torch.Tensor, log: bool = False) -> torch.Tensor:
    """(log-)softmax over the last axis (the K edge types) of (B, N, N, K) logits,
    computed with the types leading: on the CPU, torch's softmax over a last axis of size
    2 runs row by row, and this is 3× faster with its backward (5.2 → 1.6 ms for a
    64-window batch of 40 nodes), about 5 % of a GNN step."""
    major = logits.movedim(-1, 0).contiguous()  # (K, B, N, N)
    out = torch.log_softmax(major, dim=0) if log else torch.softmax(major, dim=0)
    return out.movedim(0, -1)


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool) -> torch.Tensor:
    """A Gumbel-softmax sample over the last axis, as ``F.gumbel_softmax``, but with the
    noise drawn as -log(-log U): five times faster on the CPU than its exponential
    draws, which cost 3 % of a GNN step. ``hard``: one-hot forward, soft gradient."""
    uniform = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny)  # in (0, 1)
    soft = softmax_over_types((logits - torch.log(-torch.log(uniform))) / tau)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return one_hot - soft.detach() + soft


def valid_pairs(mask: torch.Tensor) -> torch.Tensor:
    """(B, N, N) bool: both nodes real and sender ≠ receiver."""
    n = mask.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)
    return mask[:, :, None] & mask[:, None, :] & ~eye


class RelationalGNN(nn.Module):
    """The ``gnn`` model: infer the graph from the window, then decode over it.

    Args:
        window: frames W; in_channels: C; out_dim: 1 (forecast) or K classes; task;
        cfg: :class:`GNNConfig`; n_names: how many neuron names ``node_ids`` index
        (0: none; the decoder then has no name embedding).

    Shapes:
        x (B, N, W, C), mask (B, N), context (B, N, L) or None (the window's ΔF/F
        channel), node_ids (B, N) or None (all unnamed) → pred (B, N) or (B, K);
        edge_prob (B, N, N). ``summary``: :func:`context_summary` of the context, when
        the loader has it (then ``context`` is not needed; the two give the same model).
    """

    reuses_edges = True

    def __init__(
        self,
        window: int,
        in_channels: int,
        out_dim: int,
        task: str,
        cfg: GNNConfig,
        n_names: int = 0,
    ):
        super().__init__()
        if len(cfg.prior) != cfg.edge_types or cfg.edge_types < 2:
            raise ValueError(
                f"gnn: prior {cfg.prior} must give one probability per edge type (>= 2)"
            )
        self.cfg = cfg
        self.encoder = RelationEncoder(window, in_channels, cfg)
        self.decoder = RelationalDecoder(window, in_channels, out_dim, task, cfg, n_names)
        self.context_decoder = ContextDecoder(cfg.context_lags) if cfg.context_weight > 0 else None
        self.register_buffer("log_prior", torch.log(torch.tensor(cfg.prior, dtype=torch.float32)))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        graph: torch.Tensor | None = None,
        edges: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        node_ids: torch.Tensor | None = None,
        summary: dict[str, torch.Tensor] | None = None,
        senders: torch.Tensor | None = None,
    ) -> ModelOutput:
        if edges is not None:  # a rollout step: keep the graph inferred from the observed window
            out = self.decoder(x, mask, edges, node_ids, senders)
            return ModelOutput(out, edges=edges, senders=senders)
        if summary is None:
            if context is None:
                context = x[..., 0]  # no longer history: the window is the context
            samples = ContextDecoder.samples if self.context_decoder is not None else 0
            summary = context_summary(
                context, self.cfg.context_lags, samples, self.cfg.sender_count, mask
            )
        senders = summary.get("senders")
        width = 0 if senders is None else senders.shape[-1]
        if width != self.cfg.sender_count:
            raise ValueError(
                f"gnn: a context summary for senders={width} given to a model with "
                f"senders={self.cfg.sender_count} (0: every pair)"
            )
        # (B, N_s, N_r, K), or (B, N_r, S, K) over each receiver's candidate senders
        logits = self.encoder(x, mask, summary)
        valid = valid_pairs(mask) if senders is None else summary["sender_mask"] > 0
        log_q = softmax_over_types(logits, log=True)
        q = log_q.exp()
        if self.training:
            z = gumbel_softmax(logits, self.cfg.tau, self.cfg.hard)
        else:
            z = q
        z = z * valid[..., None]
        kl = ((q * (log_q - self.log_prior)).sum(-1) * valid).sum() / valid.sum().clamp(min=1)
        pred = self.decoder(x, mask, z[..., 1:], node_ids, senders)
        edge_prob = (1.0 - q[..., 0]) * valid
        if senders is not None:  # pairs outside the candidates: probability 0
            dense = edge_prob.new_zeros(mask.shape[0], mask.shape[1], mask.shape[1])
            edge_prob = dense.scatter_add(2, senders, edge_prob).transpose(1, 2)  # [b, s, r]
        context_loss = None
        if self.context_decoder is not None:
            context_loss = self.context_decoder(summary, z[..., 1:], mask)
        return ModelOutput(
            pred,
            edge_prob=edge_prob,
            kl=kl,
            edges=z[..., 1:],
            context_loss=context_loss,
            senders=senders,
        )


class ConnectomeGNN(nn.Module):
    """The ``gnn``'s decoder and read-out on a fixed graph: ``gnn_connectome`` (the
    anatomical graph) and the graph ablations, which differ only in ``graph``:

    - ``"given"``: the graph of each batch (``gnn_connectome``; ``gnn_shuffled``, the
      connectome with its neuron labels permuted);
    - ``"none"``: no edges (``gnn_nograph``): every message is zero, so a node's forecast
      depends on its own window alone;
    - ``"full"``: every directed pair of valid nodes (``gnn_full``).

    Shapes: x (B, N, W, C), mask (B, N), graph (B, N_s, N_r) in {0, 1} (``"given"``
    only), node_ids (B, N) or None → pred.
    """

    GRAPHS = ("given", "none", "full")

    def __init__(
        self,
        window: int,
        in_channels: int,
        out_dim: int,
        task: str,
        cfg: GNNConfig,
        n_names: int = 0,
        graph: str = "given",
    ):
        super().__init__()
        if graph not in self.GRAPHS:
            raise ValueError(f"graph must be one of {self.GRAPHS}, got {graph!r}")
        self.graph = graph
        self.cfg = replace(cfg, edge_types=2)  # one edge type, plus "no edge"
        self.decoder = RelationalDecoder(window, in_channels, out_dim, task, self.cfg, n_names)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        graph: torch.Tensor | None = None,
        node_ids: torch.Tensor | None = None,
    ) -> ModelOutput:
        if self.graph == "none":  # no pair is scored: the decoder passes no message
            edge_prob = x.new_zeros(mask.shape[0], mask.shape[1], mask.shape[1])
            return ModelOutput(self.decoder(x, mask, None, node_ids), edge_prob=edge_prob)
        pairs = valid_pairs(mask)  # (B, N, N)
        if self.graph == "full":
            z = pairs.to(x.dtype)
        elif graph is None:
            raise ValueError("this gnn needs the fixed graph of each batch (graph=...)")
        else:
            z = graph * pairs
        z = z[..., None]  # (B, N, N, 1): the one edge type
        return ModelOutput(self.decoder(x, mask, z, node_ids), edge_prob=z[..., 0])
