"""Hyperparameter selection: grids, the split inside the training data, a poisoned test
worm that changes nothing, and train/evaluate applying the choice."""

import logging
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
from wormgnn import files, select, train
from wormgnn.search import grid
from wormgnn.train import RunConfig, selection_split

FAST = {"max_epochs": 2, "batch_size": 64, "patience": 2}


def test_grid_is_the_product_with_task_specific_keys():
    search = {"hidden": [8, 16], "training.weight_decay": [0.1, 1.0], "forecast": {"alpha": [1]}}
    assert len(grid(search, "behaviour")) == 4
    points = grid(search, "forecast")
    assert len(points) == 4 and points[0] == {"hidden": 8, "training.weight_decay": 0.1, "alpha": 1}
    assert grid({}, "forecast") == [{}]
    with pytest.raises(ValueError, match="hidden must list"):
        grid({"hidden": 8}, "forecast")


def test_selection_split_never_touches_the_test_data():
    train_segs = {1: [(0, 100)], 2: [(0, 80)], 3: [(0, 90)]}
    fit, val, how = selection_split(train_segs, "lowo", 0.2, 5)
    assert fit == {1: [(0, 100)], 2: [(0, 80)]} and val == {3: [(0, 90)]} and "worm 3" in how
    fit, val, how = selection_split({4: [(0, 100)]}, "lodo", 0.2, 5)
    assert val == {4: [(80, 100)]} and fit == {4: [(0, 75)]} and "last 20%" in how
    within = {1: [(0, 40), (60, 100)]}
    fit, val, _ = selection_split(within, "within", 0.25, 0)
    assert val == {1: [(80, 100)]}  # 25 % of the 80 training frames, from the end
    covered = {w for segs in (fit, val) for w in segs}
    assert covered <= set(within)


def _run(model, **params):
    return RunConfig(
        dataset="tiny",
        task="forecast",
        protocol="lowo",
        model=model,
        fold=0,
        seed=0,
        window=8,
        horizon=2,
        training=FAST,
        model_params=params,
    )


def _select(tiny, traces, out, model="mlp", search=None):
    search = search or {"hidden": [8, 16], "dropout": [0.0, 0.3]}
    run = _run(model, layers=1) if model == "mlp" else _run(model)
    return select.run_selection(run, search, traces, tiny["labels"], tiny["folds"], out)


def test_poisoned_test_worm_leaves_every_selection_unchanged(tiny_results, tmp_path):
    """Fold 0 of lowo tests on worm 0. Replacing worm 0's traces with noise must not
    change anything selection writes: it never reads the test worm."""
    poisoned = tmp_path / "poisoned.h5"
    shutil.copy(tiny_results["traces"], poisoned)
    with h5py.File(poisoned, "r+") as h5:
        x = h5["worms/0/traces"]
        x[...] = np.random.default_rng(0).normal(size=x.shape).astype(np.float32) * 5
    for model, search in (
        ("mlp", None),
        ("linear", {"forecast": {"alpha": [0.1, 10.0, 1000.0, 100000.0]}}),
    ):
        clean = _select(
            tiny_results, tiny_results["traces"], tmp_path / model / "a" / "s.json", model, search
        )
        dirty = _select(tiny_results, poisoned, tmp_path / model / "b" / "s.json", model, search)
        assert clean == dirty
        assert clean["budget"] == 4 and len({c["val_score"] for c in clean["candidates"]}) > 1
        assert all(0 not in c["fit_worms"] + c["val_worms"] for c in clean["candidates"])
        assert clean["candidates"][0]["val_worms"] == [2]  # the last training worm


def test_a_finished_candidate_is_not_trained_again_on_the_same_inputs(
    tiny_results, tmp_path, caplog
):
    out = tmp_path / "s.json"
    first = _select(tiny_results, tiny_results["traces"], out)
    caplog.set_level(logging.INFO, logger="wormgnn.select")
    again = _select(tiny_results, tiny_results["traces"], out)
    assert first == again and caplog.text.count("(done before)") == 4
    changed = tmp_path / "changed.h5"  # a training worm's traces change: train afresh
    shutil.copy(tiny_results["traces"], changed)
    with h5py.File(changed, "r+") as h5:
        h5["worms/1/traces"][...] *= 1.01
    caplog.clear()
    _select(tiny_results, changed, out)
    assert "(done before)" not in caplog.text and caplog.text.count("}: val_score") == 4


def test_train_and_evaluate_apply_the_selection(tiny_results, tmp_path):
    out = tmp_path / "fold0" / "selection.json"
    chosen = _select(tiny_results, tiny_results["traces"], out)["chosen"]
    run = train.apply_selection(_run("mlp", layers=1), out)
    assert run.model_params == {"layers": 1, **chosen}
    with pytest.raises(ValueError, match="not of this run"):
        train.apply_selection(_run("lstm"), out)
    model = tmp_path / "seed0" / "model.pt"
    args = [
        "--traces",
        str(tiny_results["traces"]),
        "--labels",
        str(tiny_results["labels"]),
        "--folds",
        str(tiny_results["folds"]),
        "--model-file",
        str(model),
        "--run",
        files.json.dumps(_as_json(_run("mlp", layers=1))),
        "--selection",
        str(out),
    ]
    train.main([*args, "--history", str(tmp_path / "h.csv")])
    assert train.load_checkpoint(model)["run"]["model_params"] == {"layers": 1, **chosen}
    from wormgnn import evaluate

    evaluate.main(
        [*args, "--metrics", str(tmp_path / "m.json"), "--predictions", str(tmp_path / "p.h5")]
    )
    assert files.read_json(tmp_path / "m.json")["model"] == "mlp"


def _train(tiny, run, selection, out):
    """train.main for seeds 0 and 1 of ``run`` under ``selection``; their files."""
    models = [out / f"seed{s}" / "model.pt" for s in (0, 1)]
    histories = [out / f"seed{s}" / "history.csv" for s in (0, 1)]
    train.main(
        [
            *("--traces", str(tiny["traces"]), "--labels", str(tiny["labels"])),
            *("--folds", str(tiny["folds"]), "--run", files.json.dumps(_as_json(run))),
            *("--selection", str(selection), "--seeds", "0", "1"),
            *("--model-file", *map(str, models), "--history", *map(str, histories)),
        ]
    )
    return models, histories


def _history(path):
    """history.csv without its timings."""
    import csv

    timed = {"seconds", "train_windows_per_s"}
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k not in timed} for row in csv.DictReader(handle)]


@pytest.mark.parametrize(
    ("protocol", "training_worms", "model", "taken"),
    [("within", 3, "mlp", True), ("lowo", 2, "mlp", False), ("lowo", 1, "gnn", True)],
)
def test_the_first_seed_takes_the_chosen_fit_only_where_it_is_the_same_run(
    tiny_results, tmp_path, protocol, training_worms, model, taken
):
    """Where selection validates on the frames training validates on (``within``; one
    training worm), the chosen candidate (first seed) is seed 0's training run: train
    takes its fit, and it equals a fresh training bit for bit. With two training worms
    selection holds one out, so every seed trains."""
    import torch

    tiny = dict(tiny_results)
    if training_worms == 1:  # lowo fold 0 of a two-worm study: test worm 0, train worm 1
        folds = files.read_json(tiny["folds"])
        fold = folds["lowo"][0]
        fold["train"] = {"1": fold["train"]["1"]}
        fold["train_worms"] = [1]
        tiny["folds"] = tmp_path / "folds.json"
        files.write_json(tiny["folds"], folds)
    run = replace(_run(model, **({"layers": 1} if model == "mlp" else {})), protocol=protocol)
    out = tmp_path / "fold0" / "selection.json"
    summary = select.run_selection(
        run, {"hidden": [8, 16]}, *(tiny[k] for k in ("traces", "labels", "folds")), out
    )
    chosen = out.parent / summary["chosen_fit"]
    assert sorted(out.parent.joinpath("selection").glob("*.pt")) == [chosen]
    models, histories = _train(tiny, run, out, tmp_path / "taken")
    # the chosen fit's history, its timings included, is copied where it is taken
    copied = [h.read_bytes() == chosen.with_suffix(".csv").read_bytes() for h in histories]
    fresh_selection = tmp_path / "elsewhere" / "selection.json"  # its chosen fit is absent
    fresh_selection.parent.mkdir()
    shutil.copy(out, fresh_selection)
    fresh_models, fresh_histories = _train(tiny, run, fresh_selection, tmp_path / "fresh")
    assert copied == [taken, False]
    for a, b in zip(models + histories, fresh_models + fresh_histories, strict=True):
        if a.suffix == ".csv":
            assert _history(a) == _history(b)
            continue
        ca, cb = train.load_checkpoint(a), train.load_checkpoint(b)
        assert ca["run"] == cb["run"] and ca["best_epoch"] == cb["best_epoch"]
        assert ca["meta"] == cb["meta"]
        for key, tensor in ca["state_dict"].items():
            assert torch.equal(tensor, cb["state_dict"][key]), key


def _as_json(run):
    from dataclasses import asdict

    return asdict(run)


def test_low_fidelity_candidates_train_on_a_share_of_windows_and_are_not_reused(
    tiny_results, tmp_path
):
    """``epoch_fraction``: each candidate trains on that share of its fit windows per
    epoch; its fit is then not the first seed's run, so none is kept and every seed of
    ``train`` trains with training's own share. A fraction that is training's own keeps
    the reuse."""
    run = replace(_run("mlp", layers=1), protocol="within")
    paths = [tiny_results[k] for k in ("traces", "labels", "folds")]
    out = tmp_path / "quarter" / "selection.json"
    summary = select.run_selection(run, {"hidden": [8, 16]}, *paths, out, epoch_fraction=0.25)
    assert summary["epoch_fraction"] == 0.25 and summary["chosen_fit"] is None
    workdir = out.parent / "selection"
    assert not list(workdir.glob("*.pt"))
    for i in range(2):
        trained = files.read_json(workdir / f"candidate{i}.json")["fingerprint"]["run"]
        assert trained["training"]["epoch_fraction"] == 0.25
    models, _ = _train(tiny_results, run, out, tmp_path / "seeds")
    for model in models:  # not taken from selection: trained on every window
        assert train.load_checkpoint(model)["run"]["training"] == run.training
    same = tmp_path / "same" / "selection.json"
    kept = select.run_selection(run, {"hidden": [8, 16]}, *paths, same, epoch_fraction=1.0)
    assert kept["chosen_fit"] is not None and kept["epoch_fraction"] == 1.0
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        select.run_selection(run, {"hidden": [8]}, *paths, tmp_path / "x.json", epoch_fraction=0)
    with pytest.raises(ValueError, match="use one of them"):
        select.run_selection(
            run,
            {"training.epoch_fraction": [0.5]},
            *paths,
            tmp_path / "y.json",
            epoch_fraction=0.25,
        )


def test_successive_halving_stops_the_rest_at_the_rung_and_leaves_the_kept_runs_unchanged(
    tiny_results, tmp_path, caplog
):
    """``halving``: every candidate trains to the rung; the ``keep`` best there train on,
    each exactly as it would alone (history and fit bit for bit), the others stop there
    and cannot be chosen. A rerun takes every result; another rung trains on those that
    stopped at the old one."""
    import torch

    training = {**FAST, "max_epochs": 5, "patience": 5}
    run = replace(_run("mlp", layers=1), protocol="within", training=training)
    search = {"hidden": [8, 16], "dropout": [0.0, 0.3]}
    paths = [tiny_results[k] for k in ("traces", "labels", "folds")]
    full = select.run_selection(run, search, *paths, tmp_path / "full" / "selection.json")
    histories = [tmp_path / "full" / "selection" / f"candidate{i}.csv" for i in range(4)]
    rung = [train.best_until(train.read_history(h), 2) for h in histories]
    kept = sorted(sorted(range(4), key=lambda i: (-rung[i], i))[:2])
    out = tmp_path / "raced" / "selection.json"
    raced = select.run_selection(run, search, *paths, out, halving=select.Halving(2, 2))
    workdir = out.parent / "selection"
    assert raced["halving"] == {"rung_epochs": 2, "keep": 2}
    assert [c["eliminated"] for c in raced["candidates"]] == [i not in kept for i in range(4)]
    assert [c["rung_score"] for c in raced["candidates"]] == rung
    for i, (a, b) in enumerate(zip(full["candidates"], raced["candidates"], strict=True)):
        if i in kept:  # trained on to the end, as in the full race
            assert (
                (a["val_score"], a["epochs"])
                == (b["val_score"], b["epochs"])
                == (
                    b["val_score"],
                    5,
                )
            )
            assert _history(workdir / f"candidate{i}.csv") == _history(histories[i])
        else:
            assert (b["val_score"], b["epochs"]) == (rung[i], 2)
            # its history to the rung is kept (for wormgnn.replay): the full run's first two
            assert _history(workdir / f"candidate{i}.csv") == _history(histories[i])[:2]
    best = max(kept, key=lambda i: full["candidates"][i]["val_score"])
    assert raced["chosen_index"] == best and raced["chosen_fit"] == f"selection/candidate{best}.pt"
    assert not list(workdir.glob("*.partial")) and len(list(workdir.glob("*.pt"))) == 1
    # the chosen fit is the run trained alone, to the bit
    cand = train.with_point(run, raced["chosen"])
    alone = tmp_path / "alone.pt"
    train.fit_neural(
        cand, train.prepare(cand, *paths, selection=True), alone, tmp_path / "alone.csv"
    )
    ours, theirs = (
        train.load_checkpoint(workdir / f"candidate{best}.pt"),
        train.load_checkpoint(alone),
    )
    for key, tensor in ours["state_dict"].items():
        assert torch.equal(tensor, theirs["state_dict"][key]), key

    caplog.set_level(logging.INFO, logger="wormgnn.select")
    caplog.clear()  # an earlier test's logging set-up may have let INFO through already
    assert select.run_selection(run, search, *paths, out, halving=select.Halving(2, 2)) == raced
    assert "at the rung (epoch" not in caplog.text  # nothing trains again
    assert caplog.text.count("(done before)") == 6  # four, then the two kept again
    caplog.clear()
    select.run_selection(run, search, *paths, out, halving=select.Halving(3, 2))
    assert caplog.text.count("at the rung (epoch 3)") == 2  # the two stopped at epoch 2
    with pytest.raises(ValueError, match="must be at least 1"):
        select.Halving(0, 2)


def test_halving_leaves_closed_form_fits_and_a_grid_within_keep_alone(tiny_results, tmp_path):
    """Nothing races where there is no epoch (``linear``) or every candidate is kept."""
    paths = [tiny_results[k] for k in ("traces", "labels", "folds")]
    linear = select.run_selection(
        _run("linear"),
        {"forecast": {"alpha": [0.1, 10.0]}},
        *paths,
        tmp_path / "linear" / "s.json",
        halving=select.Halving(1, 1),
    )
    mlp = select.run_selection(
        _run("mlp", layers=1),
        {"hidden": [8, 16]},
        *paths,
        tmp_path / "mlp" / "s.json",
        halving=select.Halving(1, 2),
    )
    for summary in (linear, mlp):
        assert summary["halving"] is None
        assert all("eliminated" not in c for c in summary["candidates"])


def test_a_selection_summarises_each_set_of_windows_once(tiny_results, tmp_path, monkeypatch):
    """The gnn's candidates, and a candidate resumed after the rung, read the same
    windows: their context summaries are computed once per set of windows (fit and
    validation), not once per candidate and resume."""
    from wormgnn.data import WindowLoader

    built = []
    summarise = WindowLoader._summarise_all

    def counted(self, summary):
        built.append(self.n_windows)
        return summarise(self, summary)

    monkeypatch.setattr(WindowLoader, "_summarise_all", counted)
    paths = [tiny_results[k] for k in ("traces", "labels", "folds")]
    run = _run("gnn", hidden=8, context_frames=24)
    raced = select.run_selection(
        run, {"hidden": [8, 16]}, *paths, tmp_path / "s.json", halving=select.Halving(1, 1)
    )
    assert [c["eliminated"] for c in raced["candidates"]].count(False) == 1
    assert len(built) == 2  # fit and validation windows (not 6: for two candidates, a resume)
