"""Training and evaluation of one fold: determinism, resume, isolation, metrics."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from wormgnn import evaluate, files, metrics, train
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


@pytest.mark.parametrize("model", ["mlp", "lstm", "gnn", "gnn_connectome", "gnn_nograph"])
def test_training_reads_no_memory_before_writing_it(tiny_results, tmp_path, monkeypatch, model):
    """Deterministic mode's fill of new tensors with NaN is off for speed; with it on,
    every fit is the same to the bit, so no result depends on uninitialised memory."""
    runs = {}
    for fill in (False, True):
        monkeypatch.setattr(train, "FILL_UNINITIALIZED", fill)
        out = tmp_path / str(fill)
        out.mkdir()
        run = _run(model, training={"max_epochs": 2})
        run_training(
            run,
            *(tiny_results[k] for k in ("traces", "labels", "folds")),
            out / "m.pt",
            out / "h.csv",
        )
        runs[fill] = load_checkpoint(out / "m.pt")["state_dict"]
    assert torch.utils.deterministic.fill_uninitialized_memory  # the second run's
    for key, tensor in runs[False].items():
        assert torch.equal(tensor, runs[True][key]), key


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
        ("gnn_shuffled", "behaviour"),
        ("gnn_full", "forecast"),
        ("gnn_nograph", "forecast"),
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


def _cli(tiny, run, traces, out):
    """The `python -m wormgnn.train` command of ``run`` writing into ``out``."""
    return [
        sys.executable,
        "-m",
        "wormgnn.train",
        "--traces",
        str(traces),
        "--labels",
        str(tiny["labels"]),
        "--folds",
        str(tiny["folds"]),
        "--run",
        json.dumps(dataclasses.asdict(run)),
        "--threads",
        "1",
        "--model-file",
        str(out / "model.pt"),
        "--history",
        str(out / "history.csv"),
    ]


def _wait_for_epoch(partial, epoch, proc, traces_digest=None, timeout=120):
    """Wait until ``proc`` has written a partial checkpoint of at least ``epoch`` (fitted
    on traces with ``traces_digest``, when given)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if partial.exists():
            saved = torch.load(partial, weights_only=False)
            digest = saved["fingerprint"]["inputs"]["traces"]
            if saved["state"]["epoch"] >= epoch and traces_digest in (None, digest):
                return
        time.sleep(0.05)
    raise AssertionError(f"{partial} never reached epoch {epoch}")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_killed_training_resumes_where_it_stopped(tiny_results, tmp_path, device):
    """On a GPU the Gumbel noise and dropout come from the device's generator, which the
    resume point must restore as well."""
    run = _run("gnn", training={"max_epochs": 8, "patience": 50, "device": device})
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    killed.mkdir()
    straight.mkdir()
    partial = killed / "model.pt.partial"
    cmd = _cli(tiny_results, run, tiny_results["traces"], killed)
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    _wait_for_epoch(partial, 3, proc)
    proc.kill()
    proc.wait()
    assert not (killed / "model.pt").exists(), "the run finished before it could be killed"
    epoch_at_kill = torch.load(partial, weights_only=False)["state"]["epoch"]
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"resuming from the checkpoint of epoch {epoch_at_kill}" in resumed.stderr
    assert f"seed 0 on {device} " in resumed.stderr
    assert f"epoch {epoch_at_kill + 1:3d}" in resumed.stderr and "epoch   1 " not in resumed.stderr
    assert not partial.exists()
    subprocess.run(_cli(tiny_results, run, tiny_results["traces"], straight), check=True,
                   capture_output=True)  # fmt: skip
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


def test_sigterm_stops_training_and_a_changed_input_starts_afresh(tiny_results, tmp_path):
    """SIGTERM ends the job with a message and the last epoch's checkpoint; a restart
    after the traces changed must not resume from weights fitted on the old traces."""
    traces = tmp_path / "traces.h5"
    traces.write_bytes(tiny_results["traces"].read_bytes())
    run = _run("gnn", training={"max_epochs": 50, "patience": 50, "batch_size": 32})
    out = tmp_path / "out"
    out.mkdir()
    partial = out / "model.pt.partial"
    cmd = _cli(tiny_results, run, traces, out)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(partial, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM received: stopping at the next batch" in stderr
    assert "error: stopped by SIGTERM; rerun to resume" in stderr.splitlines()[-1]
    saved = torch.load(partial, weights_only=False)
    assert saved["state"]["epoch"] >= 2 and not (out / "model.pt").exists()
    assert saved["fingerprint"]["inputs"]["traces"] == files.sha256(traces)

    with h5py.File(traces, "r+") as h5:  # as if preprocessing had been rerun differently
        h5["worms/1/traces"][...] = h5["worms/1/traces"][()] * 1.01
    restarted = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(partial, 1, restarted, files.sha256(traces))
    restarted.send_signal(signal.SIGTERM)
    _, stderr = restarted.communicate(timeout=60)
    assert "its input files have changed since (traces); starting afresh" in stderr
    assert "resuming from the checkpoint" not in stderr and "epoch   1 " in stderr


def test_sigterm_stops_at_the_next_batch_and_resumes_to_the_same_model(
    tiny_results, tmp_path, monkeypatch
):
    run = _run("gnn", training={"max_epochs": 3, "patience": 50})
    straight = tmp_path / "straight"
    straight.mkdir()
    args = (tiny_results["traces"], tiny_results["labels"], tiny_results["folds"])
    run_training(run, *args, straight / "model.pt", straight / "history.csv")

    calls = {"epoch": 0, "batch": 0, "after_signal": 0, "signalled": False}
    real_loss = train.batch_loss
    real_epoch = train.train_epoch

    def counting_epoch(*a, **kw):
        calls["epoch"] += 1
        calls["batch"] = 0
        return real_epoch(*a, **kw)

    def loss_then_signal(model, *a, **kw):
        if model.training:
            calls["batch"] += 1
            if calls["signalled"]:
                calls["after_signal"] += 1
            if calls["epoch"] == 2 and calls["batch"] == 3:
                calls["signalled"] = True
                os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(model, *a, **kw)

    monkeypatch.setattr(train, "batch_loss", loss_then_signal)
    monkeypatch.setattr(train, "train_epoch", counting_epoch)
    out = tmp_path / "stopped"
    out.mkdir()
    with pytest.raises(train.Stopped, match="SIGTERM"):
        run_training(run, *args, out / "model.pt", out / "history.csv")
    assert calls["after_signal"] == 0  # the batch under way finished; no other started
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is undone
    assert torch.load(out / "model.pt.partial", weights_only=False)["state"]["epoch"] == 1
    monkeypatch.undo()
    run_training(run, *args, out / "model.pt", out / "history.csv")
    a, b = load_checkpoint(out / "model.pt"), load_checkpoint(straight / "model.pt")
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key])
    assert a["meta"]["inputs_sha256"]["traces"] == files.sha256(tiny_results["traces"])


def test_the_code_fingerprint_covers_every_module_training_imports():
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, wormgnn.train; "
            "print('\\n'.join(m.__file__ for n, m in sys.modules.items() "
            "if n.startswith('wormgnn.')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    package = Path(train.__file__).resolve().parent
    covered = [package / entry for entry in train.TRAINING_CODE]
    for module in map(Path, listing):
        assert any(module == c or c in module.parents for c in covered), module


def test_an_orphaned_training_job_stops_by_itself(tiny_results, tmp_path):
    """Snakemake killed with -9: its job (bash -> python) loses its grandparent and must
    stop at the next batch, keeping the checkpoint, instead of running on unseen."""
    run = _run("gnn", training={"max_epochs": 200, "patience": 200, "batch_size": 32})
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "train.log"
    helper = Path(train.__file__).resolve().parents[1] / "scripts" / "log_to.sh"
    job = f'set -euo pipefail; source "{helper}"; log_to "{log}" "$@"'
    cmd = _cli(tiny_results, run, tiny_results["traces"], out)
    # a stand-in for Snakemake: it runs the job's shell and waits for it
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])"]
        + ["bash", "-c", job, "job"]
        + cmd
    )
    _wait_for_epoch(out / "model.pt.partial", 1, stand_in)
    stand_in.kill()
    stand_in.wait()
    deadline = time.time() + 60
    while time.time() < deadline and "error: stopped" not in log.read_text():
        time.sleep(0.1)
    text = log.read_text()
    assert "error: stopped: the workflow that started this job is gone; rerun to resume" in text
    assert "the process that started this job is gone: stopping" in text
    assert (out / "model.pt.partial").exists() and not (out / "model.pt").exists()


def _seed_args(tiny, run, out, seeds, files_per_seed):
    """``train``/``evaluate`` arguments for ``seeds`` in one job, each seed's files in
    ``out/seed<s>/``."""
    args = ["--traces", str(tiny["traces"]), "--labels", str(tiny["labels"])]
    args += ["--folds", str(tiny["folds"]), "--run", json.dumps(dataclasses.asdict(run))]
    args += ["--seeds", *map(str, seeds)]
    for option, name in files_per_seed.items():
        args += [option, *(str(out / f"seed{s}" / name) for s in seeds)]
    return args


TRAIN_FILES = {"--model-file": "model.pt", "--history": "history.csv"}
EVAL_FILES = {"--metrics": "metrics.json", "--predictions": "predictions.h5"}


def _history(path):
    """history.csv without its timing columns."""
    rows = [r.split(",") for r in path.read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name not in ("seconds", "train_windows_per_s")]
    return [[r[i] for i in keep] for r in rows]


@pytest.mark.parametrize("model", ["gnn", "linear"])
def test_a_folds_seeds_in_one_job_are_each_seed_alone(tiny_results, tmp_path, model):
    """One job trains and evaluates seeds 0 and 1 in turn: seed 1's model, history and
    metrics are those of a job for seed 1 alone, bit for bit."""
    run = _run(model)
    together, alone = tmp_path / "together", tmp_path / "alone"
    train.main(_seed_args(tiny_results, run, together, [0, 1], TRAIN_FILES))
    train.main(_seed_args(tiny_results, run, alone, [1], TRAIN_FILES))
    eval_files = {"--model-file": "model.pt", **EVAL_FILES}
    evaluate.main(_seed_args(tiny_results, run, together, [0, 1], eval_files))
    evaluate.main(_seed_args(tiny_results, run, alone, [1], eval_files))
    a, b = (load_checkpoint(d / "seed1" / "model.pt") for d in (together, alone))
    assert a["run"]["seed"] == b["run"]["seed"] == 1
    key = "state_dict" if model == "gnn" else "linear"
    for name in a[key]:
        torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=0)
    assert _history(together / "seed1/history.csv") == _history(alone / "seed1/history.csv")
    ma, mb = (files.read_json(d / "seed1" / "metrics.json") for d in (together, alone))
    assert ma == mb and ma["seed"] == 1
    seed0 = files.read_json(together / "seed0" / "metrics.json")
    assert seed0["seed"] == 0
    if model == "gnn":  # another seed, another model
        assert seed0["per_horizon"] != ma["per_horizon"]
    assert not list(together.rglob("*.partial"))  # every seed done: no resume points left


def test_a_failed_seed_leaves_the_finished_ones_to_be_rewritten_without_training(
    tiny_results, tmp_path, monkeypatch, capfd
):
    """Seed 1 fails after seed 0 finished; Snakemake removes the job's outputs. The rerun
    writes seed 0's files again from its resume point, without an epoch of training."""
    run = _run("gnn")
    out = tmp_path / "job"
    args = _seed_args(tiny_results, run, out, [0, 1], TRAIN_FILES)
    train.main(_seed_args(tiny_results, run, tmp_path / "straight", [0], TRAIN_FILES))
    real = train.run_training

    def seed_1_fails(run, *rest, **kw):
        if run.seed == 1:
            raise ValueError("seed 1 failed")
        return real(run, *rest, **kw)

    monkeypatch.setattr(train, "run_training", seed_1_fails)
    with pytest.raises(SystemExit, match="seed 1 failed"):
        train.main(args)
    monkeypatch.setattr(train, "run_training", real)
    for name in TRAIN_FILES.values():  # what Snakemake does with a failed job's outputs
        (out / "seed0" / name).unlink()
    assert (out / "seed0" / "model.pt.partial").exists()
    capfd.readouterr()
    train.main(args)
    seed0_log, seed1_log = capfd.readouterr().err.split("seed 1 (2 of 2)")
    assert "resuming from the checkpoint of epoch" in seed0_log
    assert "epoch   1 " not in seed0_log  # seed 0 trained no epoch again
    assert "epoch   1 " in seed1_log
    a, b = (load_checkpoint(d / "seed0" / "model.pt") for d in (out, tmp_path / "straight"))
    for name in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][name], b["state_dict"][name], rtol=0, atol=0)
    assert _history(out / "seed0/history.csv") == _history(tmp_path / "straight/seed0/history.csv")
    assert not list(out.rglob("*.partial"))


def test_each_seed_needs_its_own_files(tiny_results, tmp_path):
    run = _run("linear")
    args = _seed_args(tiny_results, run, tmp_path, [0, 1], TRAIN_FILES)
    short = args[: args.index("--history") + 2]  # one history for two seeds
    with pytest.raises(SystemExit, match="--history: 1 path"):
        train.main(short)
    twice = _seed_args(tiny_results, run, tmp_path, [0, 0], TRAIN_FILES)
    with pytest.raises(SystemExit, match="given twice"):
        train.main(twice)
    assert not list(tmp_path.rglob("model.pt"))
