"""Training and evaluation of one fold: determinism, resume, isolation, metrics."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from wormgnn import evaluate, metrics
from wormgnn.train import RunConfig, load_checkpoint, run_training

FAST = {"max_epochs": 3, "batch_size": 64, "patience": 5}


def _run(model, task="forecast", **kw):
    params = kw.pop(
        "model_params", {"hidden": 16, "message": 16} if model.startswith("gnn") else {}
    )
    return RunConfig(
        dataset="tiny",
        task=task,
        protocol=kw.pop("protocol", "lowo"),
        model=model,
        fold=kw.pop("fold", 0),
        seed=kw.pop("seed", 0),
        window=8,
        horizon=3,
        training={**FAST, **kw.pop("training", {})},
        model_params=params,
        **kw,
    )


def _train_eval(tiny, run, out):
    out.mkdir(parents=True, exist_ok=True)
    run_training(
        run, tiny["traces"], tiny["labels"], tiny["folds"], out / "model.pt", out / "history.csv"
    )
    return evaluate.run_evaluation(
        run,
        tiny["traces"],
        tiny["labels"],
        tiny["folds"],
        out / "model.pt",
        out / "metrics.json",
        out / "predictions.h5",
        tiny["truth"],
    )


def test_same_seed_same_metrics(tiny_results, tmp_path):
    a = _train_eval(tiny_results, _run("gnn"), tmp_path / "a")
    b = _train_eval(tiny_results, _run("gnn"), tmp_path / "b")
    assert a == b
    c = _train_eval(tiny_results, _run("gnn", seed=1), tmp_path / "c")
    assert c["per_horizon"] != a["per_horizon"]


@pytest.mark.parametrize(
    ("model", "task"),
    [
        ("persistence", "forecast"),
        ("linear", "forecast"),
        ("linear", "behaviour"),
        ("mlp", "behaviour"),
        ("lstm", "forecast"),
        ("gnn", "behaviour"),
        ("gnn_connectome", "forecast"),
    ],
)
def test_every_model_trains_and_evaluates(tiny_results, tmp_path, model, task):
    metrics = _train_eval(tiny_results, _run(model, task), tmp_path)
    assert metrics["test_worms"] == [0]
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) >= 2
    ckpt = load_checkpoint(tmp_path / "model.pt")  # loads with weights_only=True
    assert ckpt["run"]["model"] == model and ckpt["run"]["training"]["max_epochs"] == 3
    with h5py.File(tmp_path / "predictions.h5", "r") as h5:
        assert "worms/0/y_pred" in h5
        if task == "behaviour":  # class probabilities
            np.testing.assert_allclose(h5["worms/0/y_pred"][()].sum(1), 1.0, rtol=1e-5)
        if model.startswith("gnn"):
            assert h5["edges/0/prob"].shape[0] == h5["edges/0/prob"].shape[1]
    if task == "forecast":
        assert [h["horizon"] for h in metrics["per_horizon"]] == [1, 2, 3]
        if model == "persistence":
            assert all(h["score"] == 0 for h in metrics["per_horizon"])
    else:
        assert 0 <= metrics["macro_f1"] <= 1
        assert metrics["confusion_matrix"]["classes"] == ["forward", "reversal", "turn"]
    if model.startswith("gnn"):
        assert 0 <= metrics["edge_auroc"] <= 1 and metrics["edge_reference"] == "ground_truth"
        # the name embedding is on for behaviour only (`identity` default)
        assert (ckpt["meta"]["vocabulary"] is not None) == (task == "behaviour")


def test_gnn_on_every_roi(tiny_results, tmp_path):
    run = _run(
        "gnn", model_params={"hidden": 16, "message": 16, "node_set": "all"}, protocol="within"
    )
    metrics = _train_eval(tiny_results, run, tmp_path)
    assert metrics["node_set"] == "all" and metrics["test_worms"] == [0, 1, 2]
    with h5py.File(tmp_path / "predictions.h5", "r") as h5:
        sizes = {h5[f"edges/{w}/prob"].shape[0] for w in (0, 1, 2)}
    assert len(sizes) > 1  # a different node count per worm


def test_gnn_knows_only_the_training_worms_names(tiny_results, tmp_path):
    params = {"hidden": 16, "message": 16, "node_set": "all"}
    run = _run("gnn", "behaviour", model_params=params)
    metrics = _train_eval(tiny_results, run, tmp_path)  # lowo fold 0: tested on worm 0
    ckpt = load_checkpoint(tmp_path / "model.pt")
    names = ckpt["meta"]["names"]
    assert ckpt["meta"]["vocabulary"] == sorted(set(names["1"] + names["2"]) - {""})
    assert set(names["0"]) - set(names["1"] + names["2"]) - {""}  # some unseen names
    rows = ckpt["state_dict"]["decoder.names.weight"]
    assert rows.shape[0] == len(ckpt["meta"]["vocabulary"]) + 1 and rows[0].abs().sum() == 0
    assert metrics["test_worms"] == [0]


def test_no_test_worm_statistic_reaches_training(tiny_results, tmp_path):
    """Train, then retrain after scrambling the test worm's data: the model is the same."""
    scrambled = tmp_path / "traces.h5"
    scrambled.write_bytes(tiny_results["traces"].read_bytes())
    with h5py.File(scrambled, "r+") as h5:  # fold 0 tests on worm 0
        traces = h5["worms/0/traces"]
        traces[...] = traces[()] * 50.0 + 7.0
    for model, fitted in (("linear", "linear"), ("gnn", "state_dict")):
        run = _run(model, "behaviour")
        params = []
        for name, traces in (("clean", tiny_results["traces"]), ("scrambled", scrambled)):
            out = tmp_path / f"{model}-{name}"
            out.mkdir()
            run_training(
                run,
                traces,
                tiny_results["labels"],
                tiny_results["folds"],
                out / "model.pt",
                out / "history.csv",
            )
            params.append(load_checkpoint(out / "model.pt")[fitted])
        for key in params[0]:
            torch.testing.assert_close(params[0][key], params[1][key])


def test_killed_training_resumes_where_it_stopped(tiny_results, tmp_path):
    run = _run("gnn", training={"max_epochs": 8, "patience": 50})
    args = [
        "--traces",
        str(tiny_results["traces"]),
        "--labels",
        str(tiny_results["labels"]),
        "--folds",
        str(tiny_results["folds"]),
        "--run",
        json.dumps(dataclasses.asdict(run)),
        "--threads",
        "1",
    ]
    cmd = [sys.executable, "-m", "wormgnn.train", *args]
    killed = tmp_path / "killed"
    killed.mkdir()
    partial = killed / "model.pt.partial"
    out = ["--model-file", str(killed / "model.pt"), "--history", str(killed / "history.csv")]
    proc = subprocess.Popen(cmd + out, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.time() + 120
    while time.time() < deadline:
        if partial.exists() and torch.load(partial, weights_only=False)["state"]["epoch"] >= 3:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not (killed / "model.pt").exists(), "the run finished before it could be killed"
    epoch_at_kill = torch.load(partial, weights_only=False)["state"]["epoch"]
    resumed = subprocess.run(cmd + out, capture_output=True, text=True, check=True)
    assert f"resuming from the checkpoint of epoch {epoch_at_kill}" in resumed.stderr
    assert f"epoch {epoch_at_kill + 1:3d}" in resumed.stderr and "epoch   1 " not in resumed.stderr
    assert not partial.exists()
    straight = tmp_path / "straight"
    straight.mkdir()
    subprocess.run(
        cmd
        + ["--model-file", str(straight / "model.pt"), "--history", str(straight / "history.csv")],
        capture_output=True,
        text=True,
        check=True,
    )
    a, b = load_checkpoint(killed / "model.pt"), load_checkpoint(straight / "model.pt")
    for key in a["state_dict"]:  # resuming restores every generator: same result
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key])
    history = (killed / "history.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in history[1:]] == list(range(1, 9))


def test_forecast_metrics_by_hand():
    y = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    pred = y + np.array([[0.5, 1.0]])
    persist = y + np.array([[1.0, 1.0]])
    m = metrics.forecast_metrics(y, pred, persist)
    h1, h2 = m["per_horizon"]
    assert h1["mse"] == 0.25 and h1["mae"] == 0.5 and h1["score"] == pytest.approx(0.75)
    assert h2["mse"] == 1.0 and h2["score"] == 0.0
    assert h1["r2"] == pytest.approx(1 - 0.75 / 8)


def test_behaviour_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = metrics.behaviour_metrics(y_true, y_pred, ["f", "r", "t"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class_f1"]["r"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_edge_scores_by_hand():
    truth = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=bool)
    perfect = truth * 0.9 + 0.05
    s = metrics.edge_scores([perfect], [truth], [np.ones(3, dtype=bool)])
    assert s["edge_auroc"] == 1.0 and s["n_pairs"] == 6
    unknown = metrics.edge_scores([perfect], [truth], [np.array([True, True, False])])
    assert unknown["n_pairs"] == 2
