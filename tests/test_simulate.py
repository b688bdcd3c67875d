import hashlib

import h5py
import numpy as np
import pytest
from conftest import TINY_SYNTHETIC
from wormgnn import simulate
from wormgnn.connectome import load_connectome
from wormgnn.kato import load_recordings
from wormgnn.names import resolve_worm


def _simulate(tmp_path, name="syn", **overrides):
    cfg = simulate.SyntheticConfig.from_dict({**TINY_SYNTHETIC, **overrides})
    mat, truth = tmp_path / f"{name}.mat", tmp_path / f"{name}.truth.h5"
    simulate.run(cfg, name, mat, truth)
    return cfg, mat, truth


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_the_same_files(tmp_path):
    _, mat_a, truth_a = _simulate(tmp_path / "a")
    _, mat_b, truth_b = _simulate(tmp_path / "b")
    assert _sha(mat_a) == _sha(mat_b)
    assert _sha(truth_a) == _sha(truth_b)
    _, mat_c, _ = _simulate(tmp_path / "c", seed=8)
    a, c = load_recordings(mat_a)[0], load_recordings(mat_c)[0]
    assert a.raw.shape != c.raw.shape or not np.allclose(np.nan_to_num(a.raw), np.nan_to_num(c.raw))


def test_writes_the_old_osf_layout_with_raw_fluorescence(tmp_path):
    cfg, mat, truth = _simulate(tmp_path)
    worms = load_recordings(mat)
    assert len(worms) == cfg.n_worms
    n_rois = set()
    with h5py.File(truth, "r") as h5:
        neurons = [n.decode() for n in h5["neurons"][()]]
        adjacency = h5["adjacency"][()]
        roi_neuron = [h5[f"worms/{w}/roi_neuron"][()] for w in range(cfg.n_worms)]
    assert adjacency.shape == (cfg.n_neurons, cfg.n_neurons) and adjacency.dtype == bool
    assert not adjacency.diagonal().any()
    for rec, rois in zip(worms, roi_neuron, strict=True):
        assert rec.raw is not None and rec.dff is not None
        assert cfg.rois_per_worm[0] <= rec.n_rois <= cfg.rois_per_worm[1]
        assert rec.n_frames == pytest.approx(cfg.duration_s * cfg.fps, rel=0.05)
        assert np.isnan(rec.raw).sum() > 0  # lost frames to be interpolated
        assert np.nanmin(rec.raw) > 0  # fluorescence, not ΔF/F
        # photobleaching: the raw signal decays over the recording
        assert np.nanmean(rec.raw[-20:]) < np.nanmean(rec.raw[:20])
        identities = resolve_worm(rec.roi_names)
        for roi, name in enumerate(identities):
            if name:  # every identified ROI is the neuron the ground truth says
                assert name == neurons[rois[roi]]
        core = {neurons[i] for i in range(cfg.n_core)}
        assert core <= set(identities)
        n_rois.add(rec.n_rois)
    assert len({tuple(r) for r in roi_neuron}) == cfg.n_worms  # a different subset per worm


def test_graph_comes_from_the_connectome(tmp_path):
    cfg, _, truth = _simulate(tmp_path)
    with h5py.File(truth, "r") as h5:
        assert h5.attrs["source"] == "connectome:Cook2019Herm"
        neurons = [n.decode() for n in h5["neurons"][()]]
        adjacency = h5["adjacency"][()]
        weights = h5["weights"][()]
    conn = load_connectome()
    idx = conn.index()
    pos = [idx[n] for n in neurons]
    anatomical = (conn.chemical >= cfg.min_synapses) | (conn.gap >= cfg.min_synapses)
    np.testing.assert_array_equal(
        adjacency, anatomical[np.ix_(pos, pos)] & ~np.eye(len(pos), dtype=bool)
    )
    assert np.all((weights != 0) == adjacency)
    # Dale's principle: one sign per presynaptic neuron
    for row in weights:
        assert len(set(np.sign(row[row != 0]))) <= 1
    assert set(simulate.COMMAND_NEURONS) <= set(neurons)


def test_random_graph_fallback(tmp_path):
    _, mat, truth = _simulate(tmp_path, graph="random")
    with h5py.File(truth, "r") as h5:
        assert h5.attrs["source"] == "random"
        density = h5["adjacency"][()].mean()
    assert 0.02 < density < 0.1
    assert load_recordings(mat)[0].n_rois > 0


def test_behaviour_follows_the_state_machine(tmp_path):
    rng = np.random.default_rng(3)
    segments = simulate.sample_states(20000.0, rng)
    states = [s for _, s in segments]
    follow = {(a, b) for a, b in zip(states, states[1:], strict=False)}
    allowed = {(a, b) for a, nxt in simulate.TRANSITIONS.items() for b in nxt}
    assert follow <= allowed
    assert ("SLOW", "REV2") in follow and ("REV1", "VT") in follow and ("DT", "FWD") in follow
    dwell = np.diff([t for t, _ in segments])
    fwd = [d for d, s in zip(dwell, states, strict=False) if s == "FWD"]
    assert np.mean(fwd) == pytest.approx(simulate.DWELL_S["FWD"], rel=0.2)


def test_command_neurons_track_the_behaviour(tmp_path):
    _, mat, _ = _simulate(tmp_path, duration_s=600.0)
    rec = load_recordings(mat)[0]
    names = resolve_worm(rec.roi_names)
    reversal = np.isin([rec.state_names[s] for s in rec.states], ["REV1", "REV2", "REVSUS"])
    ava = np.nan_to_num(rec.dff[:, names.index("AVAL")])
    avb = np.nan_to_num(rec.dff[:, names.index("AVBL")])
    assert np.corrcoef(ava, reversal)[0, 1] > 0.2
    assert np.corrcoef(avb, reversal)[0, 1] < -0.2


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown setting.*n_wrms"):
        simulate.SyntheticConfig.from_dict({"n_wrms": 3})
    with pytest.raises(ValueError, match="n_core"):
        simulate.SyntheticConfig.from_dict({"n_core": 50, "rois_per_worm": [20, 30]})


def test_falls_back_to_a_random_graph_without_the_connectome_package(tmp_path, monkeypatch, caplog):
    def unavailable(source):
        raise simulate.ConnectomeUnavailable("the connectome package `cect` is not installed")

    monkeypatch.setattr(simulate, "load_connectome", unavailable)
    _, _, truth = _simulate(tmp_path)
    with h5py.File(truth, "r") as h5:
        assert h5.attrs["source"] == "random"
    assert "falling back to a seeded random graph" in caplog.text


def test_default_graph_is_identifiable_from_one_recording():
    """The default synthetic worm is a fair test of relation inference: the partial
    correlations of one recording's 40 core neurons already rank the true edges well
    (AUROC about 0.9; with the old dense, slow settings it was 0.74)."""
    from sklearn.metrics import roc_auc_score

    cfg = simulate.SyntheticConfig()
    net = simulate._core_order(
        simulate.build_network(cfg, np.random.default_rng(cfg.seed)), cfg.n_core
    )
    worm = simulate.simulate_worm(net, cfg, np.random.default_rng([cfg.seed, 1]))
    rois = list(worm["rois"])
    x = worm["dff"][:, [rois.index(i) for i in range(cfg.n_core)]]
    x = np.nan_to_num((x - np.nanmean(x, 0)) / np.nanstd(x, 0))
    precision = np.abs(np.linalg.inv(np.cov(x.T) + 0.05 * np.eye(cfg.n_core)))
    truth = net.adjacency[: cfg.n_core, : cfg.n_core]
    off = ~np.eye(cfg.n_core, dtype=bool)
    assert 0.03 < truth[off].mean() < 0.2  # sparse, but not empty
    assert roc_auc_score(truth[off], precision[off]) > 0.85
