"""Snakemake over NWB sources and pools: planning (what is not planned, and why), config
errors, and a real run of a pool of the synthetic worm (as NWB) and the two real Flavell
recordings through lodo to aggregates."""

import csv

import numpy as np
import pytest
from conftest import TINY_SYNTHETIC, run_snakemake, tiny_config, write_config, write_nwb
from wormgnn import files

pytestmark = pytest.mark.workflow

SYN_NWB = {"source": "synthetic", "synthetic": {**TINY_SYNTHETIC, "format": "nwb"}}


def unlabelled_nwb(folder, n=2):
    """NWB worms with traces only: no names, no behaviour."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        write_nwb(
            folder / f"w{i}.nwb", 100 + rng.normal(size=(300, 10)), rate=2.0, labels=[""] * 10
        )
    return folder


def test_pool_with_a_scheme_a_member_cannot_show_is_a_config_error(tmp_path):
    config = tiny_config(
        {
            "syn": SYN_NWB,
            "lab": {"source": "nwb", "path": str(tmp_path / "*.nwb")},
            "both": {"source": "pool", "members": ["syn", "lab"]},
        },
        labels={"scheme": "kato4"},
    )
    result = run_snakemake(
        tmp_path, "-n", configfile=write_config(tmp_path / "c.yaml", config), check=False
    )
    assert result.returncode != 0
    assert (
        "pool both: member lab (source nwb) cannot be labelled by labels.scheme kato4"
        in result.stdout
    )
    assert "fwdrev" in result.stdout


def test_an_nwb_path_that_matches_nothing_is_named(tmp_path):
    config = tiny_config({"lab": {"source": "nwb", "path": str(tmp_path / "none" / "*.nwb")}})
    result = run_snakemake(
        tmp_path, "-n", configfile=write_config(tmp_path / "c.yaml", config), check=False
    )
    assert result.returncode != 0 and "matches no NWB file" in result.stdout


def test_without_behaviour_or_shared_neurons_the_plan_says_why(tmp_path):
    """NWB worms without behaviour or names: forecast jobs on `all` only, and the run
    says which jobs it did not plan and why."""
    folder = unlabelled_nwb(tmp_path / "lab")
    config = tiny_config(
        {"lab": {"source": "nwb", "path": str(folder)}},
        labels={"scheme": "fwdrev"},
        experiment={
            "models": ["persistence", "linear", "gnn"],
            "protocols": ["lowo", "lodo"],
            "seeds": [0],
            "window": 8,
            "horizon": 2,
        },
        models={"persistence": {"node_set": "all"}, "gnn": {"node_set": "all"}},
        training={"max_epochs": 1, "device": "cpu"},
    )
    cfg = write_config(tmp_path / "c.yaml", config)
    run_snakemake(tmp_path, "--until", "make_folds", configfile=cfg)
    plan = run_snakemake(tmp_path, "-n", configfile=cfg).stdout
    assert "behaviour jobs are not planned: worms [0, 1] have no behaviour" in plan
    assert "models on the shared node set are not planned: linear" in plan
    assert "protocol(s) lodo not planned" in plan
    jobs = [line.split()[-1] for line in plan.splitlines() if line.startswith("    wildcards:")]
    assert "train" in plan and "behaviour" not in " ".join(jobs)
    assert "model=linear" not in plan and "model=gnn" in plan


@pytest.mark.realdata
def test_pool_of_synthetic_nwb_and_real_flavell_through_lodo(tmp_path, flavell_dir):
    config = tiny_config(
        {
            "syn": SYN_NWB,
            "flavell": {"source": "nwb", "path": str(flavell_dir)},
            "both": {"source": "pool", "members": ["syn", "flavell"]},
        },
        labels={"scheme": "fwdrev"},
        preprocess={"baseline_window_s": 60},
        experiment={
            "tasks": ["forecast"],
            "protocols": ["lodo"],
            "models": ["persistence", "gnn"],
            "seeds": [0],
            "window": 8,
            "horizon": 2,
        },
        models={
            "persistence": {"node_set": "all"},
            "gnn": {"node_set": "all", "hidden": 16, "message": 8, "context_frames": 64},
        },
        training={"max_epochs": 1, "device": "cpu", "batch_size": 64},
    )
    config["targets"]["datasets"] = ["both"]
    cfg = write_config(tmp_path / "c.yaml", config)
    run_snakemake(tmp_path, configfile=cfg)
    res = tmp_path / "results" / "both"
    pre = files.read_json(res / "preprocessed" / "summary.json")
    assert [w["member"] for w in pre["worms"]] == ["syn"] * 3 + ["flavell"] * 2
    assert pre["fps"] == pytest.approx(1.3574, abs=1e-3)  # the slowest worm: Flavell's first
    assert pre["n_shared_neurons"] == 0
    raw = files.read_json(tmp_path / "results" / "syn" / "preprocessed" / "summary.json")
    assert raw["format"] == "nwb" and raw["worms"][0]["file"] == "sub-syn-00_ophys.nwb"
    folds = files.read_json(res / "folds.json")
    assert [f["test_member"] for f in folds["lodo"]] == ["syn", "flavell"]
    with open(res / "forecast" / "lodo" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["model"] for r in rows} == {"persistence", "gnn"}
    assert (res / "forecast" / "lodo" / "stats.json").is_file()
    for k in (0, 1):
        metrics = files.read_json(res / f"forecast/lodo/gnn/fold{k}/seed0/metrics.json")
        assert metrics["node_set"] == "all"
    figures = {"forecast_score", "forecast_traces", "comparison", "graph", "rulegraph"}
    assert {p.stem for p in (res / "figures").glob("*.png")} == figures
