"""The pipeline as users run it: real `snakemake` invocations in a scratch directory."""

import json
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import (
    REPO,
    TINY_SYNTHETIC,
    run_snakemake,
    tiny_config,
    tiny_study_config,
    write_config,
)
from wormgnn import aggregate, files, train

pytestmark = pytest.mark.workflow

FAST_PREPROCESS = {"baseline_window_s": 60}
FAST_FOLDS = {"within": {"n_folds": 3, "gap_s": 10}}


def test_tiny_synthetic_pipeline_end_to_end(tmp_path):
    config = tiny_config(
        {"tiny": {"source": "synthetic", "synthetic": TINY_SYNTHETIC}},
        preprocess=FAST_PREPROCESS,
        folds=FAST_FOLDS,
    )
    cfg = write_config(tmp_path / "config.yaml", config)
    saved = os.umask(0o022)
    try:
        run_snakemake(tmp_path, configfile=cfg)
    finally:
        os.umask(saved)
    res = tmp_path / "results" / "tiny"
    outputs = [p for d in ("results", "resources") for p in (tmp_path / d).rglob("*")]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in outputs if p.is_file()}
    assert len(modes) >= 7 and set(modes.values()) == {0o644}, modes  # readable by the group
    pre = files.read_json(res / "preprocessed" / "summary.json")
    labels = files.read_json(res / "labels" / "summary.json")
    folds = files.read_json(res / "folds.json")
    assert pre["n_worms"] == 3 and len(labels["worms"]) == 3
    for worm in pre["worms"]:
        assert 24 <= worm["n_rois"] <= 30
        assert worm["trace_source"] == "raw"  # the synthetic file carries raw fluorescence
        assert worm["nan_filled"] > 0
        assert worm["fps"] == 3.0
    assert len(pre["shared_neurons"]) >= TINY_SYNTHETIC["n_core"]
    assert [f["test_worms"] for f in folds["lowo"]] == [[0], [1], [2]]
    assert len(folds["within"]) == 3
    with h5py.File(res / "labels" / "labels.h5", "r") as h5:
        assert set(np.unique(h5["worms/0/labels"][()])) <= {-1, 0, 1, 2}
    for log in (
        "logs/simulate/tiny.log",
        "logs/tiny/preprocessed.log",
        "logs/tiny/labels.log",
        "logs/tiny/folds.log",
    ):
        assert (tmp_path / log).stat().st_size > 0
    again = run_snakemake(tmp_path, "-n", configfile=cfg)
    assert "Nothing to be done" in again.stdout


def test_demo_profile_plans_the_offline_run(tmp_path):
    result = run_snakemake(tmp_path, "-n", "--profile", str(REPO / "profiles" / "demo"), cwd=REPO)
    for rule in ("simulate", "preprocess", "align_labels", "make_folds"):
        assert rule in result.stdout
    assert "download" not in result.stdout


def test_dry_run_of_the_default_config(tmp_path):
    result = run_snakemake(tmp_path, "-n", configfile=REPO / "config.yaml")
    out = result.stdout
    for rule in ("download", "preprocess", "align_labels", "make_folds"):
        assert rule in out
    assert "results/kato2015_wt_nostim/preprocessed/traces.h5" in out
    assert not (tmp_path / "resources").exists()  # a dry run downloads nothing


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (
            {"preprocesss": {}},
            "config: unknown key 'preprocesss' (did you mean 'preprocess'?) at the top "
            "level; the keys allowed there are targets, datasets, preprocess, labels",
        ),
        (
            {"preprocess": {"target_fsp": 3.0}},
            "unknown key 'target_fsp' (did you mean 'target_fps'?) under 'preprocess'",
        ),
        ({"preprocess": {"zscore": "yes"}}, "preprocess.zscore: 'yes' is not of type 'boolean'"),
        (
            {"datasets": {"tiny": {"source": "osf", "file": "x.mat", "osf_nod": "2395t"}}},
            "datasets.tiny: 'osf_node' is a required property",
        ),
        (
            {"datasets": {"tiny": {"source": "synthetic", "synthetic": {"n_wrms": 2}}}},
            "unknown key 'n_wrms' (did you mean 'n_worms'?) under 'datasets.tiny.synthetic'",
        ),
    ],
)
def test_invalid_config_stops_with_the_key_named(tmp_path, override, named):
    config = tiny_config({"tiny": {"source": "synthetic"}})
    config.update(override)
    result = run_snakemake(
        tmp_path, "-n", configfile=write_config(tmp_path / "c.yaml", config), check=False
    )
    assert result.returncode != 0
    assert named in result.stdout
    # short: the error and the schema's path, not a dump of the schema
    assert "(every key is described in the schema, workflow/schemas/config.schema.yaml)" in (
        result.stdout
    )
    assert "Failed validating" not in result.stdout and len(result.stdout.splitlines()) < 12


def test_a_search_grid_off_budget_is_refused(tmp_path):
    """Every model gets the same selection budget: a grid of another size stops the run."""
    config = tiny_config(
        {"tiny": {"source": "synthetic"}},
        experiment={"models": ["linear", "mlp"], "tasks": ["forecast"]},
        selection={"enabled": True, "budget": 2},
        models={"linear": {"search": {"alpha": [1.0, 10.0]}}, "mlp": {"search": {"hidden": [8]}}},
    )
    result = run_snakemake(
        tmp_path, "-n", configfile=write_config(tmp_path / "c.yaml", config), check=False
    )
    assert result.returncode != 0
    assert "models.mlp.search has 1 candidate(s) for forecast, but selection.budget is 2" in (
        result.stdout
    )


def test_selection_epoch_fraction_and_halving_reach_every_select_job(tmp_path):
    """``selection.epoch_fraction`` becomes select's ``--epoch-fraction`` (null: none),
    ``selection.halving`` its ``--halving``; outside (0, 1], or a rung of 0 epochs, the
    config is refused with the key named. The README's ``--config
    selection='{...}'`` overrides work: their values are typed as in a config file."""
    config = tiny_study_config(["linear", "gnn"], seeds=[0], n_worms=2)
    cfg = write_config(tmp_path / "c.yaml", config)
    run_snakemake(tmp_path, "--until", "make_folds", configfile=cfg)

    def select_commands(*extra):
        out = run_snakemake(tmp_path, "-n", "-p", *extra, configfile=cfg).stdout
        return [ln for ln in out.splitlines() if "python -m wormgnn.select" in ln]

    plain = select_commands()
    quarter = select_commands("--config", "selection={epoch_fraction: 0.25}")
    assert plain and len(quarter) == len(plain)
    assert not any("--epoch-fraction" in ln for ln in plain)
    assert all("--epoch-fraction 0.25 " in ln for ln in quarter)
    # Snakemake reads the values inside a --config mapping as strings; they are typed
    assert select_commands("--config", "selection={enabled: false}") == []
    bad = run_snakemake(
        tmp_path, "-n", "--config", "selection={epoch_fraction: 1.5}", configfile=cfg, check=False
    )
    assert bad.returncode != 0 and "selection.epoch_fraction" in bad.stdout
    raced = select_commands("--config", "selection={halving: {rung_epochs: 6, keep: 2}}")
    assert len(raced) == len(plain) and all("--halving 6 2 " in ln for ln in raced)
    assert not any(
        "--halving" in ln for ln in select_commands("--config", "selection={halving: null}")
    )
    bad = run_snakemake(
        tmp_path,
        "-n",
        "--config",
        "selection={halving: {rung_epochs: 0, keep: 2}}",
        configfile=cfg,
        check=False,
    )
    assert bad.returncode != 0 and "selection.halving.rung_epochs" in bad.stdout


def test_neural_jobs_take_a_gpu_slot_unless_training_on_the_cpu(tmp_path):
    """select and train ask for `gpu` (Slurm: one device each) and `gpu_slots` (a share of
    the local GPU, which the default profile caps); on `training.device: cpu`, neither."""
    config = tiny_study_config(["linear", "gnn"], seeds=[0], n_worms=2)
    cfg = write_config(tmp_path / "c.yaml", config)
    run_snakemake(tmp_path, "--until", "make_folds", configfile=cfg)

    def resources(device):
        out = run_snakemake(
            tmp_path, "-n", "--config", f"training={{device: {device}}}", configfile=cfg
        ).stdout
        jobs = {}
        for block in out.split("\n\n"):
            rule = next(
                (
                    ln.split()[-1][:-1]
                    for ln in block.splitlines()
                    if ln.startswith(("rule ", "localrule "))
                ),
                None,
            )
            model = next(
                (
                    ln.split("model=")[1].split(",")[0]
                    for ln in block.splitlines()
                    if "model=" in ln
                ),
                None,
            )
            line = next((ln for ln in block.splitlines() if "resources:" in ln), "")
            if rule in ("select", "train"):
                jobs[rule, model] = line
        return jobs

    auto = resources("auto")
    assert {key for key in auto} == {(r, m) for r in ("select", "train") for m in ("linear", "gnn")}
    for rule in ("select", "train"):
        assert "gpu=1" in auto[rule, "gnn"] and "gpu_slots=1" in auto[rule, "gnn"]
        assert "gpu=0" in auto[rule, "linear"] and "gpu_slots=0" in auto[rule, "linear"]
    for line in resources("cpu").values():
        assert "gpu=0" in line and "gpu_slots=0" in line


def test_unknown_target_dataset_is_named(tmp_path):
    config = tiny_config({"tiny": {"source": "synthetic"}})
    config["targets"]["datasets"] = ["tinny"]
    result = run_snakemake(
        tmp_path, "-n", configfile=write_config(tmp_path / "c.yaml", config), check=False
    )
    assert result.returncode != 0 and "['tinny']" in result.stdout


def test_bad_local_file_fails_cleanly_and_leaves_no_output(tmp_path):
    bogus = tmp_path / "WT_NoStim.mat"
    bogus.write_text("this is not a MATLAB file")
    config = tiny_config({"bad": {"source": "local", "path": str(bogus)}})
    result = run_snakemake(
        tmp_path,
        "--profile",
        str(REPO / "profiles" / "default"),
        configfile=write_config(tmp_path / "c.yaml", config),
        check=False,
    )
    assert result.returncode != 0
    # the console says what went wrong, not only the log: the module's error line, then
    # (show-failed-logs in the profile) the whole log
    error = f"error: {bogus}: not a MATLAB v7.3 (HDF5) file: it is a text file"
    assert error in result.stdout
    assert "full log: logs/bad/preprocessed.log" in result.stdout
    assert result.stdout.count(error) == 2, result.stdout
    assert not (tmp_path / "results" / "bad" / "preprocessed").exists() or not any(
        (tmp_path / "results" / "bad" / "preprocessed").iterdir()
    )
    log = (tmp_path / "logs" / "bad" / "preprocessed.log").read_text()
    assert "not a MATLAB v7.3 (HDF5) file" in log and str(bogus) in log
    assert "Traceback" not in log


def test_missing_local_file_is_reported(tmp_path):
    config = tiny_config({"gone": {"source": "local", "path": str(tmp_path / "nowhere.mat")}})
    result = run_snakemake(
        tmp_path, "-n", configfile=write_config(tmp_path / "c.yaml", config), check=False
    )
    assert result.returncode != 0 and "nowhere.mat" in result.stdout


@pytest.mark.realdata
def test_real_fixture_through_preprocess_and_labels(kato_fixture, kato_npz, tmp_path):
    config = tiny_config(
        {"kato2": {"source": "local", "path": str(kato_fixture)}},
        preprocess={"target_fps": None},
        labels={"scheme": "kato8"},
    )
    run_snakemake(tmp_path, configfile=write_config(tmp_path / "c.yaml", config))
    pre = files.read_json(tmp_path / "results/kato2/preprocessed/summary.json")
    labels = files.read_json(tmp_path / "results/kato2/labels/summary.json")
    folds = json.loads((tmp_path / "results/kato2/folds.json").read_text())
    assert pre["n_worms"] == 2
    assert [w["n_rois"] for w in pre["worms"]] == [103, 121]
    assert [w["n_frames_raw"] for w in pre["worms"]] == [3137, 3021]
    assert [w["n_frames"] for w in pre["worms"]] == [3137, 3021]  # no resampling asked
    assert pre["n_shared_neurons"] == 21
    names = [s.upper() for s in kato_npz["state_names"]]
    for worm, source in zip(labels["worms"], (0, 4), strict=True):
        counts = np.bincount(kato_npz[f"states_worm{source}"], minlength=8)
        expected = {names[i]: int(n) for i, n in enumerate(counts)}
        assert {c.upper(): n for c, n in worm["class_counts"].items()} == {
            k: v for k, v in expected.items() if k != "NOSTATE"
        }
        assert worm["n_excluded"] == expected["NOSTATE"]
    assert [f["test_worms"] for f in folds["lowo"]] == [[0], [1]]


def test_tiny_pipeline_to_figures_and_report(tmp_path):
    """Every (task, protocol, model, fold) becomes its own train and evaluate job, which
    runs its seeds, and one command carries them through aggregates and figures; then
    the report."""
    models = ["persistence", "linear", "gnn"]
    config = tiny_config(
        {"tiny": {"source": "synthetic", "synthetic": {**TINY_SYNTHETIC, "n_worms": 2}}},
        preprocess=FAST_PREPROCESS,
        folds={"within": {"n_folds": 2, "gap_s": 10}},
        experiment={
            "models": models,
            "protocols": ["lowo", "within"],
            "seeds": [0],
            "window": 8,
            "horizon": 3,
        },
        training={"max_epochs": 2, "device": "cpu"},
        models={"gnn": {"hidden": 16, "message": 16}},
    )
    cfg = write_config(tmp_path / "config.yaml", config)
    log = run_snakemake(tmp_path, "--verbose", configfile=cfg).stdout
    # The scheduler passes once per finished job (and at the start), not once a second
    # for every job finished so far (the default job-rate limit's timers, which the
    # Snakefile drops for a local run; workflow/wormgnn/scheduling.py).
    assert "job-rate limiter removed" in log
    passes = log.count("Resources before job selection")
    finished = len(re.findall(r"^Finished jobid", log, re.M))
    assert finished > 30 and passes <= finished + 1, (passes, finished)
    res = tmp_path / "results" / "tiny"
    metrics = sorted(p.relative_to(res).as_posix() for p in res.glob("*/*/*/*/*/metrics.json"))
    expected = sorted(
        f"{task}/{protocol}/{model}/fold{k}/seed0/metrics.json"
        for task in ("forecast", "behaviour")
        for protocol in ("lowo", "within")
        for model in models
        for k in (0, 1)
        if not (task == "behaviour" and model == "persistence")
    )
    assert metrics == expected
    gnn = files.read_json(res / "forecast/lowo/gnn/fold1/seed0/metrics.json")
    assert gnn["test_worms"] == [1] and gnn["edge_reference"] == "ground_truth"
    assert (res / "forecast/lowo/gnn/fold1/seed0/model.pt").exists()
    assert (tmp_path / "benchmarks/tiny/forecast/lowo/gnn/fold1/train.tsv").exists()
    assert "epoch   2" in (tmp_path / "logs/tiny/forecast/lowo/gnn/fold1/train.log").read_text()
    # aggregates: every model, every horizon, two folds each
    for task in ("forecast", "behaviour"):
        for protocol in ("lowo", "within"):
            rows = aggregate.read_summary(res / task / protocol / "summary.csv")
            n_models = 3 if task == "forecast" else 2
            assert len(rows) == n_models * (3 if task == "forecast" else 1)
            assert {r["n_runs"] for r in rows} == {2.0}
            stats = files.read_json(res / task / protocol / "stats.json")
            assert stats["comparisons"] and stats["best_baseline"]
    figures = sorted(p.name for p in (res / "figures").iterdir())
    paper = ["comparison", "confusion", "ethogram", "forecast_score", "forecast_traces", "graph"]
    assert figures == sorted(
        [f"{n}.{e}" for n in paper for e in ("pdf", "png")] + ["rulegraph.png"]
    )
    dot = (tmp_path / "results/rulegraph.dot").read_text()
    for rule in ("train", "evaluate", "aggregate", "figure_graph"):
        assert f'label = "{rule}"' in dot
    # the report holds every figure and table
    run_snakemake(tmp_path, "--report", "report.zip", configfile=cfg)
    with zipfile.ZipFile(tmp_path / "report.zip") as zf:
        names = {Path(n).name for n in zf.namelist()}
        html = zf.read(next(n for n in zf.namelist() if n.endswith("report.html"))).decode()
    assert {f"{n}.png" for n in paper} | {"rulegraph.png", "summary.csv", "stats.json"} <= names
    assert "config.yaml" in names
    # the captions name the fold the trace and ethogram figures show
    shown = re.findall(r"a held-out worm \(<tt[^>]*>lowo</tt> fold(?:\\n| )0, seed 0\)", html)
    assert len(shown) == 2, "the trace and ethogram captions do not name their fold"
    summary = run_snakemake(tmp_path, "--summary", configfile=cfg).stdout
    assert "results/tiny/forecast/lowo/summary.csv" in summary
    assert "Nothing to be done" in run_snakemake(tmp_path, "-n", configfile=cfg).stdout


@pytest.mark.parametrize(
    ("script", "status", "console"),
    [
        ("import sys; print('progress', file=sys.stderr)", 0, ""),
        (
            "import sys; print('step 1', file=sys.stderr); sys.exit('error: bad field x')",
            1,
            "error: bad field x\n  (exit status 1; full log: ",
        ),
        ("raise KeyError('lost')", 1, "KeyError: 'lost'\n  (exit status 1; full log: "),
    ],
)
def test_log_to_keeps_stderr_in_the_log_and_shows_a_failure(tmp_path, script, status, console):
    log = tmp_path / "job.log"
    helper = REPO / "workflow" / "scripts" / "log_to.sh"
    result = subprocess.run(
        [
            "bash",
            "-c",
            f'set -euo pipefail; source "{helper}"; log_to "$0" "$2" -c "$1"',
            log,
            script,
            sys.executable,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == status
    assert result.stderr.startswith(console) if console else result.stderr == ""
    assert log.read_text().strip()  # everything the command said is in the log


def test_selection_through_the_ablations_to_the_comparison_figure(tmp_path):
    """With selection on, every selected (model, fold) gets a selection.json before its
    training jobs, the runs train with the chosen point, and the study reaches the
    comparison figure with the graph ablations beside the gnn."""
    models = ["persistence", "linear", "gnn", "gnn_nograph", "gnn_full"]
    config = tiny_study_config(models, seeds=[0], n_worms=2)
    cfg = write_config(tmp_path / "config.yaml", config)
    run_snakemake(tmp_path, configfile=cfg)
    res = tmp_path / "results" / "tiny" / "forecast" / "lowo"
    for model in models[1:]:
        for fold in (0, 1):
            chosen = files.read_json(res / model / f"fold{fold}" / "selection.json")
            assert chosen["budget"] == 2 and chosen["candidates"][0]["val_worms"] == [1 - fold]
            trained = train.load_checkpoint(res / model / f"fold{fold}" / "seed0" / "model.pt")
            for key, value in chosen["chosen"].items():
                assert trained["run"]["model_params"][key] == value
    assert not (res / "persistence" / "fold0" / "selection.json").exists()
    assert (tmp_path / "results" / "tiny" / "figures" / "comparison.png").is_file()
    stats = files.read_json(res / "stats.json")
    compared = {c["model"] for c in stats["comparisons"]}
    assert {"gnn_nograph", "gnn_full"} <= compared
    # each job's torch and BLAS pools use the one thread its rule declares
    logs = tmp_path / "logs/tiny/forecast/lowo/gnn/fold0"
    assert "(1 torch threads, OMP_NUM_THREADS=1)" in (logs / "select.log").read_text()
    # one training worm: selection validated as training does, so seed 0 is its fit
    assert "seed 0: selection trained this very run" in (logs / "train.log").read_text()
