"""Pools: members merged at one frame rate, labels through the pool's scheme, lodo folds."""

import h5py
import numpy as np
import pytest
from conftest import TINY_SYNTHETIC, write_nwb
from wormgnn import align_labels, files, make_folds, pool, preprocess, simulate

PRE = preprocess.PreprocessConfig(baseline_window_s=60.0)


def member_kato(root):
    """The tiny synthetic worm (Kato layout, named neurons), three worms at ~2.9 fps."""
    root.mkdir()
    mat = root / "raw.mat"
    simulate.run(simulate.SyntheticConfig.from_dict(TINY_SYNTHETIC), "syn", mat, root / "t.h5")
    return _member(root, [mat], "kato")


def member_nwb(root):
    """Two unnamed NWB worms at 1.5 Hz with reversal bouts."""
    root.mkdir()
    rng = np.random.default_rng(0)
    paths = [
        write_nwb(
            root / f"w{i}.nwb",
            100 + rng.normal(size=(200, 12 + i)),
            rate=1.5,
            labels=[""] * (12 + i),
            bouts=np.array([[10, 30], [90, 120]]),
        )
        for i in range(2)
    ]
    return _member(root, paths, "nwb")


def _member(root, raw, fmt):
    preprocess.run(raw, root.name, PRE, root / "traces.h5", root / "pre.json", fmt=fmt)
    align_labels.run(
        raw,
        root / "traces.h5",
        align_labels.Scheme.named("fwdrev"),
        ["AVA"],
        True,
        root / "labels.h5",
        root / "labels.json",
        fmt=fmt,
    )
    return root


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    a, b = member_kato(root / "syn"), member_nwb(root / "lab")
    traces = [a / "traces.h5", b / "traces.h5"]
    summary = pool.run_traces(
        "both", ["syn", "lab"], traces, None, True, root / "t.h5", root / "s.json"
    )
    labels = pool.run_labels(
        root / "t.h5",
        ["syn", "lab"],
        traces,
        [a / "labels.h5", b / "labels.h5"],
        align_labels.Scheme.named("fwdrev"),
        ["AVA"],
        True,
        root / "l.h5",
        root / "l.json",
    )
    folds = make_folds.run(root / "t.h5", 2, 5.0, root / "folds.json", root / "l.json")
    return {"root": root, "summary": summary, "labels": labels, "folds": folds, "a": a, "b": b}


def test_pool_resamples_every_worm_to_the_slowest_raw_rate(pooled):
    s = pooled["summary"]
    assert s["fps"] == pytest.approx(1.5) and "slowest" in s["fps_rule"]
    assert [(w["member"], w["member_worm"]) for w in s["worms"]] == [
        ("syn", 0),
        ("syn", 1),
        ("syn", 2),
        ("lab", 0),
        ("lab", 1),
    ]
    assert s["n_shared_neurons"] == 0 and s["shared_neurons"] == []  # the lab names nothing
    with h5py.File(pooled["root"] / "t.h5") as h5:
        for g in h5["worms"].values():
            assert np.allclose(np.diff(g["time"][()]), 1 / 1.5)
            x = g["traces"][()]
            assert np.allclose(x.mean(axis=0), 0, atol=1e-4) and np.allclose(
                x.std(axis=0), 1, atol=1e-3
            )
        named = files.read_strings(h5["worms/0/names"])
    with h5py.File(pooled["a"] / "traces.h5") as h5:
        assert named == files.read_strings(h5["worms/0/names"])


def test_pool_labels_follow_the_members_states_in_time(pooled):
    labels = pooled["labels"]
    assert labels["has_behaviour"] and labels["classes"] == ["forward", "reversal"]
    with h5py.File(pooled["root"] / "l.h5") as pl, h5py.File(pooled["root"] / "t.h5") as pt:
        time = pt["worms/3/time"][()]
        rev = pl["worms/3/labels"][()] == 1
    # member frames 10..30 and 90..120 (1-based) at 1.5 Hz are reversals
    expected = ((time >= 9 / 1.5 - 1e-6) & (time <= 29 / 1.5 + 1e-6)) | (
        (time >= 89 / 1.5 - 1e-6) & (time <= 119 / 1.5 + 1e-6)
    )
    np.testing.assert_array_equal(rev, expected)


def test_lodo_holds_out_each_member(pooled):
    folds = pooled["folds"]
    assert [(f["test_member"], f["test_worms"], f["train_worms"]) for f in folds["lodo"]] == [
        ("syn", [0, 1, 2], [3, 4]),
        ("lab", [3, 4], [0, 1, 2]),
    ]
    assert folds["plan"] == {"n_shared_neurons": 0, "behaviour": True}
    assert len(folds["lowo"]) == 5


def test_lodo_is_absent_for_a_plain_dataset(pooled):
    folds = make_folds.run(pooled["a"] / "traces.h5", 2, 5.0, pooled["a"] / "f.json")
    assert "lodo" not in folds and "pool" in folds["plan"]["lodo_reason"]
    from wormgnn.data import fold_segments

    with pytest.raises(ValueError, match="no lodo folds"):
        fold_segments(pooled["a"] / "f.json", "lodo", 0)


def test_members_with_different_channels_are_refused(pooled, tmp_path):
    other = tmp_path / "raw"
    preprocess.run(
        pooled["b"] / "w0.nwb",
        "x",
        preprocess.PreprocessConfig(derivative=False),
        tmp_path / "t.h5",
        tmp_path / "p.json",
        fmt="nwb",
    )
    with pytest.raises(ValueError, match="member x has channels"):
        pool.run_traces(
            "p",
            ["syn", "x"],
            [pooled["a"] / "traces.h5", tmp_path / "t.h5"],
            None,
            True,
            other / "t.h5",
            other / "s.json",
        )
    assert not other.exists() or not list(other.iterdir())


def test_a_member_that_cannot_show_a_class_is_refused(pooled, tmp_path):
    a, b = pooled["a"], pooled["b"]
    traces = [a / "traces.h5", b / "traces.h5"]
    with pytest.raises(ValueError, match=r"lab worm 0.*classes \['turn'\]"):
        pool.run_labels(
            pooled["root"] / "t.h5",
            ["syn", "lab"],
            traces,
            [a / "labels.h5", b / "labels.h5"],
            align_labels.Scheme.named("kato4"),
            ["AVA"],
            True,
            tmp_path / "l.h5",
            tmp_path / "l.json",
        )
    assert not (tmp_path / "l.h5").exists()
