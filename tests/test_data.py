"""Windows, splits and node sets: built with views, and with no leakage across splits."""

import numpy as np
import pytest
import torch
from wormgnn.data import (
    WindowLoader,
    fold_segments,
    load_dataset,
    name_vocabulary,
    split_validation,
    window_starts,
)


@pytest.fixture(scope="module")
def forecast_ds(tiny_results):
    return load_dataset(tiny_results["traces"], tiny_results["labels"], "forecast", "shared", 8, 3)


def test_windows_are_the_frames_they_claim(forecast_ds):
    ds = forecast_ds
    loader = WindowLoader(ds, {0: [(0, 100)], 1: [(20, 60)]}, 16, shuffle=False)
    batch = next(iter(loader))
    for b in range(batch.x.shape[0]):
        w, s = int(batch.worm[b]), int(batch.start[b])
        frames = ds.worms[w].x
        torch.testing.assert_close(batch.x[b], frames[s : s + 8].permute(1, 0, 2))
        torch.testing.assert_close(batch.y[b], frames[s + 8 : s + 11, :, 0].T)
    assert loader.n_windows == (100 - 11 + 1) + (40 - 11 + 1)


def test_windows_never_cross_segment_borders(forecast_ds):
    starts = dict(window_starts(forecast_ds, {0: [(0, 30), (50, 70)]}))
    s = starts[0]
    assert set(s) == set(range(0, 20)) | set(range(50, 60))


def test_validation_is_carved_from_training_behind_a_gap():
    train = {0: [(0, 100), (150, 400)], 3: [(0, 200)]}
    fit, val = split_validation(train, 0.2, gap=11)
    assert val == {0: [(330, 400)], 3: [(160, 200)]}
    assert fit == {0: [(0, 100), (150, 319)], 3: [(0, 149)]}


def test_fold_segments_and_errors(tiny_results):
    train, test = fold_segments(tiny_results["folds"], "lowo", 1)
    assert list(test) == [1] and 1 not in train
    with pytest.raises(ValueError, match="has 3 folds, not fold 7"):
        fold_segments(tiny_results["folds"], "lowo", 7)


def test_node_sets_and_label_neurons(tiny_results):
    behaviour = load_dataset(
        tiny_results["traces"], tiny_results["labels"], "behaviour", "shared", 8, 3
    )
    forecast = load_dataset(
        tiny_results["traces"], tiny_results["labels"], "forecast", "shared", 8, 3
    )
    every = load_dataset(tiny_results["traces"], tiny_results["labels"], "behaviour", "all", 8, 3)
    names = behaviour.worms[0].names
    assert names == sorted(names) and all(w.names == names for w in behaviour.worms.values())
    assert not any(n.startswith(("AVA", "SMDV", "SMDD", "RIB")) for n in names)
    assert any(n.startswith("AVA") for n in forecast.worms[0].names)
    assert behaviour.in_channels == 2 and forecast.in_channels == 1
    assert every.n_nodes is None and len({w.n_nodes for w in every.worms.values()}) > 1
    # behaviour windows end on labelled frames only
    loader = WindowLoader(behaviour, {0: [(0, behaviour.worms[0].x.shape[0])]}, 64, False)
    assert all(int(y) >= 0 for b in loader for y in b.y)


def test_padded_batches_mix_node_counts(tiny_results):
    ds = load_dataset(tiny_results["traces"], tiny_results["labels"], "forecast", "all", 8, 3)
    loader = WindowLoader(
        ds,
        {0: [(0, 30)], 1: [(0, 30)]},
        64,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    batch = next(iter(loader))
    sizes = batch.mask.sum(1)
    assert set(sizes.tolist()) == {ds.worms[0].n_nodes, ds.worms[1].n_nodes}
    assert batch.x.shape[1] == max(ds.worms[0].n_nodes, ds.worms[1].n_nodes)
    assert torch.all(batch.x[~batch.mask] == 0)
    np.testing.assert_array_equal(
        np.sort(batch.start.numpy()[batch.worm.numpy() == 0]), np.arange(20)
    )


def test_node_names_index_the_training_worms_names(tiny_results):
    ds = load_dataset(tiny_results["traces"], tiny_results["labels"], "forecast", "all", 8, 3)
    vocabulary = name_vocabulary(ds, {1: [(0, 30)], 2: [(0, 30)]})  # worm 0 is the test worm
    assert vocabulary == sorted(set(ds.worms[1].names + ds.worms[2].names) - {""})
    unseen = [n for n in ds.worms[0].names if n and n not in vocabulary]
    assert unseen and "" in ds.worms[0].names  # the tiny worms differ in who is named
    loader = WindowLoader(ds, {0: [(0, 12)], 1: [(0, 12)]}, 64, False, vocabulary=vocabulary)
    batch = next(iter(loader))
    for b in range(batch.x.shape[0]):
        names = ds.worms[int(batch.worm[b])].names
        expected = [vocabulary.index(n) + 1 if n in vocabulary else 0 for n in names]
        assert batch.node_ids[b, : len(names)].tolist() == expected
        assert (batch.node_ids[b, len(names) :] == 0).all()  # padding
    assert batch.inputs.keys() == {"node_ids"}
    assert next(iter(WindowLoader(ds, {0: [(0, 12)]}, 4, False))).node_ids is None


def test_context_ends_at_the_window_and_stays_in_its_segment(forecast_ds):
    ds = forecast_ds
    segments = {0: [(0, 40), (60, 120)], 1: [(10, 50)]}
    loader = WindowLoader(ds, segments, 512, shuffle=False, context=24)
    batch = next(iter(loader))
    assert batch.context.shape == (loader.n_windows, batch.x.shape[1], 24)
    for b in range(loader.n_windows):
        w, s = int(batch.worm[b]), int(batch.start[b])
        first = max(a for a, _ in segments[w] if a <= s)
        begin = max(first, s + 8 - 24)
        ctx = batch.context[b]
        # the last 8 context frames are the window's ΔF/F; before the segment: NaN
        torch.testing.assert_close(ctx[:, -8:], batch.x[b, :, :, 0])
        torch.testing.assert_close(
            ctx[:, 24 - (s + 8 - begin) :], ds.worms[w].x[begin : s + 8, :, 0].T
        )
        assert torch.isnan(ctx[:, : 24 - (s + 8 - begin)]).all()
    # a window at frame 60 sees nothing of frames 40..59 (a gap or another split)
    at_60 = (batch.worm == 0) & (batch.start == 60)
    assert torch.isnan(batch.context[at_60][0, :, :-8]).all()
    # without context, none is built; a context shorter than the window is the window
    assert next(iter(WindowLoader(ds, segments, 4, False))).context is None
    assert WindowLoader(ds, segments, 4, False, context=3).context == 8


def test_shuffled_connectome_keeps_the_degrees_and_moves_the_wiring(forecast_ds):
    """gnn_shuffled's graph: the same degree sequences as the connectome among the
    shared neurons, other pairs connected, one permutation per seed for every worm."""
    from wormgnn.connectome import load_connectome
    from wormgnn.data import connectome_graphs

    conn = load_connectome()
    true = connectome_graphs(forecast_ds, conn)[0]
    first = connectome_graphs(forecast_ds, conn, shuffle_seed=0)
    assert true.sum() > 3  # the shared neurons are wired
    for graph in first.values():
        torch.testing.assert_close(graph, first[0])  # one wiring for every worm
    shuffled = first[0]
    assert sorted(shuffled.sum(0).tolist()) == sorted(true.sum(0).tolist())  # in-degrees
    assert sorted(shuffled.sum(1).tolist()) == sorted(true.sum(1).tolist())  # out-degrees
    assert not torch.equal(shuffled, true)
    torch.testing.assert_close(connectome_graphs(forecast_ds, conn, shuffle_seed=0)[0], shuffled)
    assert not torch.equal(connectome_graphs(forecast_ds, conn, shuffle_seed=1)[0], shuffled)


def test_cached_context_summaries_give_the_model_of_the_context_itself(tiny_results):
    """The loader's per-window summaries (computed once, padded per batch) and a context
    summarised per batch give the same gnn: padded worms of different sizes included."""
    import functools

    from wormgnn.data import ContextSummary
    from wormgnn.models import build_model
    from wormgnn.models.nri import SUMMARY_NODE_DIMS, context_summary
    from wormgnn.models.registry import model_config

    ds = load_dataset(tiny_results["traces"], tiny_results["labels"], "forecast", "all", 8, 3)
    assert len({worm.n_nodes for worm in ds.worms.values()}) > 1  # padding is exercised
    segments = {w: [(0, 90)] for w in ds.worms}
    plain = next(iter(WindowLoader(ds, segments, 32, False, context=40)))
    assert plain.summary is None and set(plain.inputs) == {"context"}
    for senders in (0, 3):  # every pair; three candidate senders per receiver
        compute = functools.partial(context_summary, lags=4, senders=senders)
        summary = ContextSummary(compute, SUMMARY_NODE_DIMS)
        loader = WindowLoader(ds, segments, 32, False, context=40, summary=summary)
        for rows in loader.cached.values():  # no row keeps a larger tensor alive
            storage = {row.untyped_storage().data_ptr(): row.untyped_storage() for row in rows}
            per_chunk = {ptr: chunk.nbytes() for ptr, chunk in storage.items()}
            assert sum(per_chunk.values()) == sum(row.nbytes for row in rows)
        cached = next(iter(loader))
        assert cached.context is None and set(cached.inputs) == {"summary"}
        torch.manual_seed(0)
        cfg = model_config("gnn", {"node_set": "all", "context_frames": 40, "senders": senders})
        model = build_model(
            "gnn", "forecast", cfg, n_nodes=None, window=8, in_channels=1, n_classes=3
        ).eval()
        a = model(cached.x, cached.mask, **cached.inputs)
        b = model(plain.x, plain.mask, **plain.inputs)
        torch.testing.assert_close(a.pred, b.pred, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.edge_prob, b.edge_prob, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.context_loss, b.context_loss, atol=1e-5, rtol=1e-4)
        assert (a.edge_prob > 0).sum(1).max() <= (senders or a.edge_prob.shape[1])
    with pytest.raises(ValueError, match="senders"):  # a summary of another layout
        dense = model_config("gnn", {"node_set": "all", "context_frames": 40, "senders": 0})
        build_model("gnn", "forecast", dense, n_nodes=None, window=8, in_channels=1, n_classes=3)(
            cached.x, cached.mask, **cached.inputs
        )
    # without a context loss the summary holds the evidence alone, and still agrees
    no_loss = ContextSummary(
        functools.partial(context_summary, lags=4, samples=0), SUMMARY_NODE_DIMS
    )
    lean = next(iter(WindowLoader(ds, segments, 32, False, context=40, summary=no_loss)))
    assert set(lean.summary) == {"evidence"}
    torch.manual_seed(0)
    cfg0 = model_config(
        "gnn", {"node_set": "all", "senders": 0, "context_frames": 40, "context_weight": 0.0}
    )
    model0 = build_model(
        "gnn", "forecast", cfg0, n_nodes=None, window=8, in_channels=1, n_classes=3
    ).eval()
    torch.testing.assert_close(
        model0(lean.x, lean.mask, **lean.inputs).pred,
        model0(plain.x, plain.mask, **plain.inputs).pred,
        atol=1e-5,
        rtol=1e-4,
    )
    # over the memory limit the loader summarises per batch instead
    small = ContextSummary(summary.compute, SUMMARY_NODE_DIMS, max_bytes=1000)
    fallback = WindowLoader(ds, segments, 32, False, context=40, summary=small)
    assert fallback.cached is None and next(iter(fallback)).context is not None


def test_a_summary_cache_computes_each_set_of_windows_once(forecast_ds):
    """Loaders over the same windows and settings take the cached summaries (the same
    rows, not recomputed); other windows, context lengths or settings compute their own."""
    import functools

    from wormgnn.data import ContextSummary, SummaryCache
    from wormgnn.models.nri import SUMMARY_NODE_DIMS, context_summary

    calls = []

    def counted(context, **settings):
        calls.append(context.shape[0])
        return context_summary(context, **settings)

    def summary(lags):
        compute = functools.partial(counted, lags=lags, senders=0)
        return ContextSummary(compute, SUMMARY_NODE_DIMS, settings=(("lags", lags),))

    cache, segments = SummaryCache(), {0: [(0, 60)], 1: [(10, 70)]}
    first = WindowLoader(
        forecast_ds, segments, 16, False, context=24, summary=summary(4), cache=cache
    )
    n_calls = len(calls)
    assert n_calls > 0 and sum(calls) == first.n_windows
    shuffled = WindowLoader(
        forecast_ds, segments, 16, True, torch.Generator().manual_seed(0), context=24,
        summary=summary(4), cache=cache,
    )  # fmt: skip
    assert len(calls) == n_calls  # nothing recomputed
    assert shuffled.cached is first.cached
    a = next(iter(first))
    again = WindowLoader(forecast_ds, segments, 16, False, context=24, summary=summary(4))
    b = next(iter(again))  # computed afresh, without the cache: the same bits
    for key in a.summary:
        assert torch.equal(a.summary[key], b.summary[key])
    for other in (
        {"segments": {0: [(0, 60)]}},  # other windows
        {"context": 32},
        {"summary": summary(2)},  # other settings
    ):
        kwargs = {"segments": segments, "context": 24, "summary": summary(4)} | other
        before = len(calls)
        loader = WindowLoader(forecast_ds, kwargs["segments"], 16, False, context=kwargs["context"],
                              summary=kwargs["summary"], cache=cache)  # fmt: skip
        assert len(calls) > before and loader.cached is not first.cached


def test_a_fraction_of_the_windows_per_pass_drawn_afresh(forecast_ds):
    segments = {0: [(0, 100)], 1: [(0, 100)]}
    loader = WindowLoader(
        forecast_ds, segments, 16, True, torch.Generator().manual_seed(0), fraction=0.25
    )
    assert loader.n_windows == 180 and loader.windows_per_pass == 45 and len(loader) == 3
    passes = [
        {(int(w), int(s)) for batch in loader for w, s in zip(batch.worm, batch.start, strict=True)}
        for _ in range(2)
    ]
    assert [len(p) for p in passes] == [45, 45]  # no window twice in a pass
    assert passes[0] != passes[1]  # a fresh draw
    with pytest.raises(ValueError, match="only shuffled"):
        WindowLoader(forecast_ds, segments, 16, False, fraction=0.5)
