"""Model anatomy on tiny hand-made inputs: shapes, gradients, equivariance, padding."""

import pytest
import torch
from wormgnn.models import build_model, rollout
from wormgnn.models.nri import (
    CompiledMessageSum,
    ContextDecoder,
    RelationalConv,
    _pair_features,
    context_summary,
    dense_to_sparse_edges,
    granger_coefficients,
    gumbel_softmax,
    lagged_correlations,
    message_sum,
    message_sum_eager,
    standardise_context,
    unpack_symmetric,
)
from wormgnn.models.registry import model_config
from wormgnn.models.sparse import SparseRelationalConv

B, N, W, K = 3, 7, 6, 3


def _inputs(task, n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = 1 if task == "forecast" else 2
    x = torch.randn(B, n, W, c, generator=g)
    mask = torch.ones(B, n, dtype=torch.bool)
    graph = (torch.rand(B, n, n, generator=g) < 0.3).float()
    return x, mask, graph


def _model(name, task, n=N, n_names=0, **params):
    torch.manual_seed(0)
    cfg = model_config(name, params)
    return build_model(
        name,
        task,
        cfg,
        n_nodes=n,
        window=W,
        in_channels=1 if task == "forecast" else 2,
        n_classes=K,
        n_names=n_names,
    )


ABLATIONS = ["gnn_shuffled", "gnn_full", "gnn_nograph"]


@pytest.mark.parametrize("name", ["mlp", "lstm", "gnn", "gnn_connectome", *ABLATIONS])
@pytest.mark.parametrize("task", ["forecast", "behaviour"])
def test_forward_and_backward_shapes(name, task):
    model = _model(name, task)
    x, mask, graph = _inputs(task)
    if task == "forecast":
        pred, first = rollout(model, x, mask, graph, horizon=4)
        assert pred.shape == (B, N, 4)
    else:
        first = model(x, mask, graph)
        pred = first.pred
        assert pred.shape == (B, K)
    loss = pred.pow(2).mean() + (first.kl if first.kl is not None else 0)
    # heads start at zero (persistence / uniform), so push them off it first
    for p in model.parameters():
        p.data.add_(0.01)
    if task == "forecast":
        pred, out = rollout(model, x, mask, graph, 4)
    else:
        out = model(x, mask, graph)
        pred = out.pred
    regularisers = [r for r in (out.kl, out.context_loss) if r is not None]
    loss = pred.pow(2).mean() + sum(regularisers)
    loss.backward()
    # gnn_nograph scores no pair: its message functions (all but the bias) get no gradient
    unused = {"recv.weight", "recv.bias", "send.weight", "out_weight"}
    grads = [
        p.grad
        for n, p in model.named_parameters()
        if not (name == "gnn_nograph" and ".convs." in n and n.split(".convs.")[1][2:] in unused)
    ]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if name.startswith("gnn"):
        assert first.edge_prob.shape == (B, N, N)
        assert torch.all(first.edge_prob.diagonal(dim1=1, dim2=2) == 0)


@pytest.mark.parametrize("task", ["forecast", "behaviour"])
def test_gnn_is_permutation_equivariant(task):
    model = _model("gnn", task).eval()
    for p in model.parameters():  # move the zero-initialised heads
        p.data.add_(0.05 * torch.randn_like(p))
    x, mask, _ = _inputs(task)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    out = model(x, mask)
    out_p = model(x[:, perm], mask[:, perm])
    torch.testing.assert_close(out_p.edge_prob, out.edge_prob[:, perm][:, :, perm])
    if task == "forecast":
        torch.testing.assert_close(out_p.pred, out.pred[:, perm])
    else:
        torch.testing.assert_close(out_p.pred, out.pred, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gnn_connectome", *ABLATIONS])
@pytest.mark.parametrize("task", ["forecast", "behaviour"])
def test_fixed_graph_gnns_are_permutation_equivariant(name, task):
    """Relabelling the nodes (and the given graph with them) permutes the forecasts and
    the edges, and leaves the behaviour logits unchanged."""
    model = _model(name, task).eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, mask, graph = _inputs(task)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    out = model(x, mask, graph)
    out_p = model(x[:, perm], mask[:, perm], graph[:, perm][:, :, perm])
    torch.testing.assert_close(out_p.edge_prob, out.edge_prob[:, perm][:, :, perm])
    expected = out.pred[:, perm] if task == "forecast" else out.pred
    torch.testing.assert_close(out_p.pred, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ABLATIONS)
def test_fixed_graph_gnns_are_deterministic(name):
    x, mask, graph = _inputs("forecast")
    a = rollout(_model(name, "forecast"), x, mask, graph, 3)[0]
    b = rollout(_model(name, "forecast"), x, mask, graph, 3)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def _sensitivity(name):
    """Which nodes' forecasts change when node 0's input changes: (B, N) booleans."""
    model = _model(name, "forecast").eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, mask, graph = _inputs("forecast")
    x2 = x.clone()
    x2[:, 0] += 1.0
    return (model(x2, mask, graph).pred - model(x, mask, graph).pred).abs() > 1e-6


def test_gnn_nograph_passes_no_message():
    changed = _sensitivity("gnn_nograph")  # whatever graph the batch carries
    assert changed[:, 0].all() and not changed[:, 1:].any()
    assert _model("gnn_nograph", "forecast")(*_inputs("forecast")).edge_prob.sum() == 0


@pytest.mark.parametrize("task", ["forecast", "behaviour"])
def test_gnn_nograph_skips_the_pairs_exactly(task):
    """Without edges the decoder does not score the pairs: the same output, to the bit,
    as message passing over an all-zero graph, and the same gradients."""
    decoder = _model("gnn_nograph", task).decoder
    for p in decoder.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, mask, _ = _inputs(task)
    zeros = torch.zeros(x.shape[0], N, N, 1)
    skipped, scored = decoder(x, mask, None), decoder(x, mask, zeros)
    torch.testing.assert_close(skipped, scored, rtol=0, atol=0)
    grads = []
    for out in (skipped, scored):
        decoder.zero_grad()
        out.sum().backward(retain_graph=True)
        grads.append(
            {n: p.grad.clone() for n, p in decoder.named_parameters() if p.grad is not None}
        )
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=0, atol=0)
    # the message functions get no gradient without edges, and only zeros with them
    assert all(grads[1][n].abs().sum() == 0 for n in grads[1] if n not in grads[0])


def test_gnn_full_connects_every_pair():
    assert _sensitivity("gnn_full").all()
    x, mask, graph = _inputs("forecast")
    mask[:, -1] = False  # a padded node: no edges to or from it, none to itself
    edges = _model("gnn_full", "forecast")(x, mask, graph).edge_prob
    expected = (1 - torch.eye(N)) * mask[:, :, None] * mask[:, None, :]
    torch.testing.assert_close(edges, expected.float())


@pytest.mark.parametrize(
    ("name", "task"), [("gnn", "behaviour"), ("gnn", "forecast"), ("gnn_connectome", "behaviour")]
)
def test_gnn_name_embedding_travels_with_the_neurons(name, task):
    model = _model(name, task, n_names=N + 2, identity=[task]).eval()
    for p in model.parameters():  # move the zero-initialised heads and name embedding
        p.data.add_(0.05 * torch.randn_like(p))
    model.decoder.names.weight.data[0] = 0  # the padding row, which training never moves
    x, mask, graph = _inputs(task)
    ids = torch.arange(1, N + 1).expand(B, N)  # every node named
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))

    def run(x, graph, ids):
        if task == "forecast":
            return rollout(model, x, mask, graph, 3, node_ids=ids)[0]
        return model(x, mask, graph, node_ids=ids).pred

    out = run(x, graph, ids)
    # relabelling the neurons, names included: forecasts permute, logits stay
    out_p = run(x[:, perm], graph[:, perm][:, :, perm], ids[:, perm])
    torch.testing.assert_close(out_p, out[:, perm] if task == "forecast" else out)
    # the names matter: the same activity under other names gives another output
    assert not torch.allclose(run(x, graph, ids[:, perm]), out, atol=1e-4)
    # name 0 (unnamed, or unseen in training) has no embedding: as if without names
    torch.testing.assert_close(run(x, graph, torch.zeros_like(ids)), run(x, graph, None))
    assert _model(name, task, n_names=N, identity=[]).decoder.names is None
    with pytest.raises(ValueError, match="unknown task"):
        _model(name, task, identity=["behavior"])


def test_variable_node_counts_in_one_padded_batch():
    model = _model("gnn", "behaviour").eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    small = torch.randn(1, 4, W, 2)
    large = torch.randn(1, 9, W, 2)
    batch = torch.zeros(2, 9, W, 2)
    batch[0, :4], batch[1] = small[0], large[0]
    mask = torch.tensor([[True] * 4 + [False] * 5, [True] * 9])
    out = model(batch, mask)
    alone_small = model(small, torch.ones(1, 4, dtype=torch.bool))
    alone_large = model(large, torch.ones(1, 9, dtype=torch.bool))
    torch.testing.assert_close(out.pred[0], alone_small.pred[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pred[1], alone_large.pred[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.edge_prob[0, :4, :4], alone_small.edge_prob[0])
    assert torch.all(out.edge_prob[0, 4:] == 0) and torch.all(out.edge_prob[0, :, 4:] == 0)


def test_gumbel_softmax_samples_the_edge_type_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, -0.5, 0.3]]).expand(40000, 3)
    soft = gumbel_softmax(logits, tau=0.5, hard=False)
    torch.testing.assert_close(soft.sum(-1), torch.ones(40000))
    # Gumbel-max: the sample's argmax follows softmax(logits) at any temperature
    freq = torch.bincount(soft.argmax(-1), minlength=3) / 40000
    torch.testing.assert_close(freq, torch.softmax(logits[0], -1), atol=0.01, rtol=0)
    leaf = logits[:4].clone().requires_grad_()
    hard = gumbel_softmax(leaf, tau=0.5, hard=True)
    assert set(hard.detach().flatten().tolist()) == {0.0, 1.0}
    assert (hard.detach().sum(-1) == 1).all()
    (hard * torch.arange(3.0)).sum().backward()  # straight-through: the soft sample's gradient
    assert leaf.grad.abs().sum() > 0


def test_dense_and_sparse_message_passing_agree():
    torch.manual_seed(0)
    conv = RelationalConv(hidden=8, message=5, n_types=2)
    sparse_conv = SparseRelationalConv(hidden=8, message=5, n_types=2)
    sparse_conv.load_state_dict(conv.state_dict())
    h = torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(6, dtype=torch.bool)
    z = torch.rand(2, 6, 6, 2) * pair[..., None]
    dense = conv(h, z)
    edge_index, z_edges = dense_to_sparse_edges(z, mask)
    sparse = sparse_conv(h.reshape(12, 8), edge_index, z_edges).view(2, 6, 8)
    torch.testing.assert_close(dense[mask], sparse[mask], atol=1e-5, rtol=1e-5)


def test_sparse_implementation_gives_the_same_model_output():
    dense = _model("gnn", "forecast").eval()
    sparse = _model("gnn", "forecast", impl="sparse").eval()
    sparse.load_state_dict(dense.state_dict())
    for p in dense.parameters():
        p.data.add_(0.05)
    sparse.load_state_dict(dense.state_dict())
    x, mask, _ = _inputs("forecast")
    torch.testing.assert_close(dense(x, mask).pred, sparse(x, mask).pred, atol=1e-5, rtol=1e-5)


def test_connectome_gnn_uses_only_the_given_edges():
    model = _model("gnn_connectome", "forecast").eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, mask, _ = _inputs("forecast")
    graph = torch.zeros(B, N, N)
    graph[:, 0, 1] = 1.0  # only 0 -> 1
    base = model(x, mask, graph).pred
    x2 = x.clone()
    x2[:, 0] += 1.0  # change the sender: only the receiver 1 (and 0 itself) may change
    changed = (model(x2, mask, graph).pred - base).abs() > 1e-6
    assert changed[:, 1].all()
    assert not changed[:, 2:].any()


def test_fixed_size_baselines_refuse_the_all_node_set():
    with pytest.raises(ValueError, match="shared node set"):
        build_model(
            "mlp",
            "forecast",
            model_config("mlp", {}),
            n_nodes=None,
            window=W,
            in_channels=1,
            n_classes=K,
        )
    with pytest.raises(ValueError, match="unknown setting"):
        model_config("gnn", {"hiden": 3})


def test_decoder_frames_limit_each_nodes_own_history():
    model = _model("gnn_connectome", "forecast", decoder_frames=2).eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, mask, _ = _inputs("forecast")
    empty = torch.zeros(B, N, N)
    older = x.clone()
    older[:, :, : W - 2] += 3.0  # frames before the last two
    torch.testing.assert_close(model(older, mask, empty).pred, model(x, mask, empty).pred)
    newer = x.clone()
    newer[:, :, -1] += 3.0
    assert not torch.allclose(model(newer, mask, empty).pred, model(x, mask, empty).pred)


def test_lagged_correlations_find_the_sender_and_the_lag():
    g = torch.Generator().manual_seed(0)
    t = 400
    source = torch.randn(t + 3, generator=g)
    receiver = source[1:-2] + 0.3 * torch.randn(t, generator=g)  # x_r(t) = x_s(t - 2) + noise
    sender, other = source[3:], torch.randn(t, generator=g)
    context = torch.stack([sender, receiver, other])[None]  # (1, 3, T)
    context[..., :50] = float("nan")  # before the segment's start
    corr = lagged_correlations(*standardise_context(context), lags=4)[0]  # (N_s, N_r, lags)
    assert corr.shape == (3, 3, 4)
    assert corr[0, 1, 2] > 0.9  # sender's past explains the receiver at lag 2 ...
    assert corr[1, 0].abs().max() < 0.2  # ... and not the other way round
    assert corr[0, 2].abs().max() < 0.2 and corr[2, 1].abs().max() < 0.2
    torch.testing.assert_close(corr[0, 0, 0], torch.tensor(1.0))  # z-scored: unit variance
    # a NaN-free context gives the plain (biased) Pearson correlation at lag 0
    full = torch.stack([sender, receiver])[None]
    expected = torch.corrcoef(full[0])[0, 1]
    lag0 = lagged_correlations(*standardise_context(full), 1)[0, 0, 1, 0]
    torch.testing.assert_close(lag0, expected)


def test_gnn_reads_its_context_and_stays_equivariant_with_it():
    model = _model("gnn", "forecast").eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, mask, _ = _inputs("forecast")
    g = torch.Generator().manual_seed(1)
    context = torch.cat([torch.randn(B, N, 20, generator=g), x[..., 0]], dim=-1)
    context[0, :, :5] = float("nan")
    out = model(x, mask, context=context)
    assert not torch.allclose(out.edge_prob, model(x, mask).edge_prob)  # the context is used
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    out_p = model(x[:, perm], mask[:, perm], context=context[:, perm])
    torch.testing.assert_close(out_p.edge_prob, out.edge_prob[:, perm][:, :, perm])
    torch.testing.assert_close(out_p.pred, out.pred[:, perm])


def _lag1_network(weights, noise, t, seed=0):
    """(1, N, T) context of x(t) = W x(t - 1) + noise · ε(t); ``weights[r, s]`` is
    sender s's effect on receiver r, its diagonal each node's own AR(1) coefficient."""
    weights, noise = torch.tensor(weights), torch.tensor(noise)
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(noise), t)
    for k in range(1, t):
        x[:, k] = weights @ x[:, k - 1] + noise * torch.randn(len(noise), generator=g)
    return x[None]


def _coupled_pair(t=600, seed=0):
    """(1, 3, T) context: node 0 drives node 1 one frame later; node 2 is independent.
    Each node is an AR(1) process, so its own past explains part of its change."""
    return _lag1_network([[0.8, 0, 0], [0.9, 0.5, 0], [0, 0, 0.8]], [1.0, 0.5, 1.0], t, seed)


def _context_loss(decoder, context, z, mask):
    u, frames = standardise_context(context)
    return decoder(ContextDecoder.statistics(u, frames, decoder.lags), z, mask)


def _direct_context_loss(decoder, context, z, mask):
    """The loss as its docstring writes it, from the residuals themselves."""
    u, frames = standardise_context(context)
    length, p = u.shape[-1], decoder.lags
    ok = (frames[:, p:] * frames[:, :-p])[:, None, :] * mask[:, :, None]
    count = ok[:, :1].sum(-1, keepdim=True).clamp(min=1)
    past = torch.stack([u[..., p - i : length - i] for i in range(1, p + 1)], dim=-1)
    residual = (u[..., p:] - u[..., p - 1 : -1] - past @ decoder.own) * ok
    sender = past[..., 0] * ok
    gram = torch.einsum("bst,bqt->bsq", sender, sender) / count
    cross = torch.einsum("bst,brt->brs", sender, residual) / count
    w = z.sum(-1).transpose(1, 2)
    eye = torch.eye(gram.shape[-1])
    system = w[..., :, None] * gram[:, None] * w[..., None, :] + decoder.ridge * eye
    rhs = w * cross
    explained = (rhs * torch.linalg.solve(system, rhs[..., None])[..., 0]).sum(-1)
    loss = residual.pow(2).sum(-1) / count[..., 0] - explained
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def test_context_decoder_from_statistics_is_the_direct_loss():
    torch.manual_seed(1)
    decoder = ContextDecoder(lags=3)
    decoder.own.data = torch.tensor([0.3, -0.2, 0.1])
    context = torch.randn(2, 5, 120)
    context[1, :, :30] = float("nan")  # the second window's segment starts later
    z = torch.rand(2, 5, 5, 2)
    mask = torch.tensor([[True] * 5, [True] * 4 + [False]])
    context[1, 4] = 0.0  # a padded node, as the loader pads
    torch.testing.assert_close(
        _context_loss(decoder, context, z, mask),
        _direct_context_loss(decoder, context, z, mask),
        atol=1e-5,
        rtol=1e-5,
    )


def test_context_decoder_prefers_the_true_sender_and_direction():
    context = _coupled_pair()
    mask = torch.ones(1, 3, dtype=torch.bool)
    decoder = ContextDecoder(lags=2)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=0.05)
    true = torch.zeros(1, 3, 3, 1)
    true[0, 0, 1] = 1.0  # sender 0 → receiver 1
    for _ in range(200):  # fit the receivers' own-history coefficients with the true graph
        optimiser.zero_grad()
        _context_loss(decoder, context, true, mask).backward()
        optimiser.step()
    with torch.no_grad():
        reverse = true.transpose(1, 2).clone()  # 1 → 0
        wrong = torch.zeros(1, 3, 3, 1)
        wrong[0, 2, 1] = 1.0  # the independent node → 1
        losses = {
            name: float(_context_loss(decoder, context, z, mask))
            for name, z in {"true": true, "reverse": reverse, "wrong": wrong}.items()
        }
        losses["none"] = float(_context_loss(decoder, context, torch.zeros_like(true), mask))
    # node 1 is one of three nodes whose changes are scored, so its gain is diluted
    assert losses["true"] < 0.9 * min(losses["reverse"], losses["wrong"], losses["none"])


def test_context_decoder_ignores_frames_outside_the_context():
    torch.manual_seed(0)
    decoder = ContextDecoder(lags=3)
    context = _coupled_pair(t=200)
    z = torch.rand(1, 3, 3, 2)
    mask = torch.ones(1, 3, dtype=torch.bool)
    padded = torch.cat([torch.full((1, 3, 40), float("nan")), context], dim=-1)
    torch.testing.assert_close(
        _context_loss(decoder, padded, z, mask), _context_loss(decoder, context, z, mask)
    )
    # a padded node changes nothing either
    extra = torch.cat([padded, torch.randn(1, 1, padded.shape[-1])], dim=1)
    z4 = torch.zeros(1, 4, 4, 2)
    z4[:, :3, :3] = z
    mask4 = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(
        _context_loss(decoder, extra, z4, mask4), _context_loss(decoder, context, z, mask)
    )


def test_gnn_context_loss_reaches_the_encoder_and_can_be_turned_off():
    x, mask, _ = _inputs("forecast")
    assert _model("gnn", "forecast", context_weight=0.0)(x, mask).context_loss is None
    model = _model("gnn", "forecast", edge_types=3, prior=[0.9, 0.05, 0.05])
    out = model(x, mask)
    assert out.context_loss is not None and out.context_loss.ndim == 0
    out.context_loss.backward()
    assert model.encoder.logits.weight.grad.abs().sum() > 0


def test_granger_coefficients_find_the_direction_given_the_other_nodes():
    weights = [[0.8, 0, 0, 0], [0.6, 0.5, 0, 0], [0.6, 0, 0.5, 0], [0, 0, 0, 0.8]]
    context = _lag1_network(weights, [1.0] * 4, t=3000)  # 0 drives 1 and 2; 3 is unrelated
    context[..., :200] = float("nan")  # before the segment's start
    coef = granger_coefficients(*standardise_context(context), ridge=0.01)[0]  # (N_s, N_r)
    assert coef[0, 1] > 0.3 and coef[0, 2] > 0.3  # the sender, in its direction ...
    assert coef[1, 0].abs() < 0.05 and coef[2, 0].abs() < 0.05  # ... not the reverse
    assert coef[1, 2].abs() < 0.05 and coef[2, 1].abs() < 0.05  # co-driven: not linked
    assert coef[3, :3].abs().max() < 0.05 and coef[:3, 3].abs().max() < 0.05
    assert coef[1, 1] < -0.2  # own level: each node relaxes (change = -(1 - a) x)


def test_partial_correlations_discount_a_shared_partner():
    from wormgnn.models.nri import partial_correlations

    g = torch.Generator().manual_seed(0)
    hub = torch.randn(2000, generator=g)
    a = hub + 0.5 * torch.randn(2000, generator=g)
    b = hub + 0.5 * torch.randn(2000, generator=g)  # a and b only share the hub
    context = torch.stack([hub, a, b, torch.randn(2000, generator=g)])[None]
    context[..., :100] = float("nan")
    partial = partial_correlations(*standardise_context(context), ridge=0.01)[0]
    assert torch.corrcoef(context[0, 1:3, 100:])[0, 1] > 0.7  # pairwise: strongly linked
    assert partial[1, 2].abs() < 0.1  # given the hub: not
    assert partial[0, 1] > 0.5 and partial[0, 2] > 0.5
    torch.testing.assert_close(partial, partial.T)
    assert partial.diagonal().abs().max() == 0


def _with_context(task, n=N, padded=True):
    """Inputs with a longer context, and one padded node in the last sample."""
    x, mask, _ = _inputs(task, n)
    context = torch.randn(B, n, 40, generator=torch.Generator().manual_seed(5))
    context[0, :, :10] = float("nan")  # a context cut short by its segment's start
    if padded:
        mask[-1, -1] = False
        x[-1, -1] = 0.0
        context[-1, -1] = 0.0
    return x, mask, context


def _layer_by_layer_encoder(enc, x, mask, evidence):
    """NRI's encoder written layer by layer, every (B, N, N, ·) tensor formed: what
    RelationEncoder computes with its composed layers."""
    b, n = mask.shape
    pair = (mask[:, :, None] & mask[:, None, :]).float()[..., None]
    features = _pair_features(evidence)

    def edge(mlp, h, extra):
        pre = mlp.send(h)[:, :, None] + mlp.recv(h)[:, None, :] + extra
        return mlp.last(torch.relu(pre))

    h = enc.embed(x.reshape(b, n, -1))
    e = edge(enc.edge1, h, enc.pair_in(features)) * pair
    h2 = enc.node2(e.sum(1) / mask.sum(1)[:, None, None])
    e2 = edge(enc.edge2, h2, enc.skip(e))
    return enc.logits(e2) + enc.pair_out(features)


@pytest.mark.parametrize("task", ["forecast", "behaviour"])
def test_encoder_with_composed_layers_is_the_layer_by_layer_encoder(task):
    """The encoder applies each pairwise MLP's last layer composed with the next linear
    map; outputs and gradients equal the plain formula, padded nodes included."""
    enc = _model("gnn", task).encoder
    for p in enc.parameters():
        p.data.add_(0.1 * torch.randn_like(p))  # biases non-zero
    x, mask, context = _with_context(task)
    summary = context_summary(context, enc.lags, samples=0)
    outs = []
    for compute in (enc, lambda *a: _layer_by_layer_encoder(enc, *a)):
        enc.zero_grad()
        arg = summary if compute is enc else summary["evidence"]
        logits = compute(x, mask, arg)
        valid = (mask[:, :, None] & mask[:, None, :])[..., None]
        (logits * valid).pow(2).sum().backward()
        outs.append((logits * valid, {k: p.grad.clone() for k, p in enc.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-4)
    for name, grad in outs[0][1].items():
        torch.testing.assert_close(grad, outs[1][1][name], atol=1e-5, rtol=1e-4)


def test_relational_conv_sums_each_receivers_messages():
    """The broadcast sum over senders is the message formula, pair by pair."""
    torch.manual_seed(0)
    conv = RelationalConv(hidden=6, message=4, n_types=2)
    h = torch.randn(2, 5, 6)
    z = torch.rand(2, 5, 5, 2)  # (B, N_s, N_r, T)
    out = conv(h, z)
    for b in range(2):
        for r in range(5):
            agg = torch.zeros(2, 4)
            for s in range(5):
                msg = torch.relu(conv.recv(h[b, r]) + conv.send(h[b, s])).view(2, 4)
                agg += z[b, s, r][:, None] * msg
            torch.testing.assert_close(out[b, r], conv.read_out(agg), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("task", ["forecast", "behaviour"])
def test_every_other_node_a_candidate_sender_is_the_dense_gnn(task):
    """With S = N - 1 candidates the encoder, decoder and context loss see every pair:
    the same outputs and gradients as the dense gnn, padded nodes included."""
    dense = _model("gnn", task, senders=0)
    every = _model("gnn", task, senders=N - 1)
    for p in dense.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    every.load_state_dict(dense.state_dict())
    x, mask, context = _with_context(task)
    outs = []
    for model in (dense, every):
        model.eval()
        if task == "forecast":
            pred, out = rollout(model, x, mask, None, 3, context=context)
        else:
            out = model(x, mask, context=context)
            pred = out.pred
        model.zero_grad()
        (pred.pow(2).sum() + out.kl + out.context_loss).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        outs.append((pred, out.edge_prob, out.kl, out.context_loss, grads))
    for a, b in zip(outs[0][:4], outs[1][:4], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for name, grad in outs[0][4].items():
        torch.testing.assert_close(grad, outs[1][4][name], atol=1e-5, rtol=1e-4)


def test_candidate_senders_have_the_largest_evidence_and_carry_all_messages():
    from wormgnn.models.nri import context_summary, sender_candidates

    x, mask, context = _with_context("forecast")
    summary = context_summary(context, lags=4, senders=2, mask=mask)
    senders, valid = summary["senders"], summary["sender_mask"] > 0
    assert senders.shape == (B, N, 2) and summary["sender_gram"].shape == (B, N, 3)
    full = context_summary(context, lags=4, mask=mask)["evidence"]
    score = full.abs().sum(-1)  # [b, s, r]
    for b in range(B):
        n = int(mask[b].sum())
        for r in range(n):
            chosen = senders[b, r].tolist()
            assert r not in chosen and max(chosen) < n and valid[b, r].all()
            others = [s for s in range(n) if s != r and s not in chosen]
            assert score[b, chosen, r].min() >= score[b, others, r].max()
    assert not valid[-1, -1].any()  # a padded receiver has no candidates
    # a worm of fewer nodes than candidates: the extra slots are not valid
    idx, ok = sender_candidates(full[:, :3, :3], 4)
    assert idx.shape == (B, 3, 4) and ok.sum(-1).tolist() == [[2, 2, 2]] * B
    # only candidates send: a sender outside a receiver's candidates does not move it
    model = _model("gnn", "forecast", senders=2).eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    out = model(x, mask, summary=summary)
    outside = torch.ones(B, N, N, dtype=torch.bool)  # [b, s, r]
    for b in range(B):
        for r in range(N):
            outside[b, senders[b, r][valid[b, r]], r] = False
    assert torch.all(out.edge_prob[outside] == 0) and torch.all(out.edge_prob[~outside] > 0)
    moved = x.clone()
    moved[0, 0] += 1.0
    changed = (model(moved, mask, summary=summary).pred[0] - out.pred[0]).abs() > 1e-6
    sends_to = ~outside[0, 0]  # receivers that have node 0 as a candidate
    sends_to[0] = True  # and node 0 itself
    assert torch.equal(changed, sends_to)


def test_a_symmetric_matrix_comes_back_from_its_upper_triangle():
    full = torch.randn(2, 3, 5, 5)
    full = full + full.transpose(-1, -2)
    rows, cols = torch.triu_indices(5, 5)
    upper = full[..., rows, cols]
    assert upper.shape == (2, 3, 15)
    assert torch.equal(unpack_symmetric(upper, 5), full)
    asymmetric = torch.randn(5, 5)  # only the upper triangle is read
    torch.testing.assert_close(
        unpack_symmetric(asymmetric[rows, cols], 5), asymmetric.triu() + asymmetric.triu(1).T
    )


def test_candidate_senders_only_with_the_dense_decoder():
    with pytest.raises(ValueError, match="impl: dense"):
        model_config("gnn", {"senders": 4, "impl": "sparse"})
    assert model_config("gnn", {"node_set": "all"}).sender_count == 16
    assert model_config("gnn", {"node_set": "all", "senders": 0}).sender_count == 0
    assert model_config("gnn", {}).sender_count == 0


def _message_inputs(senders, n=N, types=2, m=4, b=B, seed=0):
    """Receiver and sender parts and edge weights of a message sum: every node a
    sender (``senders`` None) or ``senders`` candidates per receiver."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, n, 1, types * m, generator=g)
    width = n if senders is None else senders
    s = torch.randn(b, 1 if senders is None else n, width, types * m, generator=g)
    z = torch.rand(b, n, width, types, generator=g)
    return [t.requires_grad_() for t in (a, s, z)]


def _sum_and_grads(fn, a, s, z):
    out = fn(a, s, z)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    grads = torch.autograd.grad((out * weights).sum(), (a, s, z))
    return out, grads


@pytest.mark.parametrize("senders", [None, 3])
def test_compiled_message_sum_is_the_eager_one(senders):
    """The decoder's message sum runs compiled where gradients are taken on the CPU:
    the same sums and gradients as eager to float rounding, on every pair and on
    candidate senders, and it did compile (no silent fall back to eager)."""
    a, s, z = _message_inputs(senders)
    out, grads = _sum_and_grads(message_sum, a, s, z)
    assert message_sum.compiled is not None and not message_sum.eager
    ref, ref_grads = _sum_and_grads(message_sum_eager, a, s, z)
    assert out.shape == (B, N, 2, 4)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # by hand: receiver 1's type-0 message sum (its row of s is the senders')
    pre = torch.relu(a[0, 1, 0, :4] + s[0, 0 if senders is None else 1, :, :4])
    torch.testing.assert_close(out[0, 1, 0], (z[0, 1, :, 0, None] * pre).sum(0))


def test_compiled_message_sum_does_not_depend_on_the_batch_or_earlier_shapes():
    """A window's message sum is the same bits alone as in a batch, whatever shapes the
    process compiled before: one dynamic kernel, so a seed trained after another (one
    train job) gets the numbers of a job for it alone."""
    a, s, z = _message_inputs(None, n=9, b=6)
    fn = CompiledMessageSum()
    small = fn(a[4:6], s[4:6], z[4:6])
    batch = fn(a, s, z)
    other = fn(*_message_inputs(None, n=13, b=5, seed=1))  # another node count
    assert fn.compiled is not None and not fn.eager
    again = fn(a[2:5], s[2:5], z[2:5])  # after three other shapes
    assert torch.equal(batch[2:5], again)
    assert torch.equal(batch[4:6], small)  # the process's first call
    assert small.shape == (2, 9, 2, 4) and other.shape == (5, 13, 2, 4)


def test_message_sum_runs_eagerly_without_gradients_or_when_asked(monkeypatch, caplog):
    """Evaluation (no gradients) never compiles, WORMGNN_EAGER=1 turns compiling off,
    and a compiler failure falls back to eager with a warning, not a failed run."""
    a, s, z = _message_inputs(None)
    fn = CompiledMessageSum()
    with torch.no_grad():
        assert torch.equal(fn(a, s, z), message_sum_eager(a, s, z))
    assert fn.compiled is None
    monkeypatch.setenv("WORMGNN_EAGER", "1")
    off = CompiledMessageSum()
    assert torch.equal(off(a, s, z), message_sum_eager(a, s, z)) and off.compiled is None
    monkeypatch.delenv("WORMGNN_EAGER")

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    failing = CompiledMessageSum()
    with caplog.at_level("WARNING", logger="wormgnn.nri"):
        out = failing(a, s, z)
    assert failing.eager and torch.equal(out, message_sum_eager(a, s, z))
    assert "no C++ compiler" in caplog.text and "run eagerly" in caplog.text
