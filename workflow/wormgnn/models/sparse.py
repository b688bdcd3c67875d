"""The decoder's message passing over a PyG ``edge_index`` (``GNNConfig.impl: sparse``).

The same layer and parameters as :class:`wormgnn.models.nri.RelationalConv`, written as
PyG's ``MessagePassing`` over the valid pairs of a batch (:func:`dense_to_sparse_edges`):
for every edge (sender s → receiver r) and message-carrying type k,

.. math::
    m_r = \\sum_k O_k \\sum_{s \\to r} z_{srk}\\, \\mathrm{ReLU}(A_k h_r + B_k h_s + b_k).

It is kept for the benchmark's comparison with the dense default and lives apart so
that only the jobs that use it import PyG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_geometric.nn import MessagePassing

from wormgnn.models.nri import RelationalConv


class SparseRelationalConv(RelationalConv, MessagePassing):
    """:class:`RelationalConv` over an ``edge_index``.

    Shapes: h (V, F), edge_index (2, E) [sender, receiver], z (E, T) → (V, F).

    ``RelationalConv.__init__`` calls ``super().__init__()``, which here is
    ``MessagePassing``'s defaults: aggregation "sum", flow source → target (``x_j`` the
    sender, ``x_i`` the receiver).
    """

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        agg = self.propagate(edge_index, x=h, z=z)  # (V, T * M)
        return self.read_out(agg.view(-1, self.n_types, self.message_dim))

    def message(self, x_i: torch.Tensor, x_j: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # x_i: receiver states, x_j: sender states, z: (E, T) edge-type weights
        msg = F.relu(self.recv(x_i) + self.send(x_j)).view(-1, self.n_types, self.message_dim)
        return (msg * z[:, :, None]).reshape(-1, self.n_types * self.message_dim)
