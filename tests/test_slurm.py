"""The tiny pipeline through a real Slurm scheduler (`.ci/slurm-up` starts one).

Skips unless SLURM_CONF names a running cluster and the Slurm executor plugin is
installed. Jobs are identified by the job-completion log that `.ci/slurm-up` configures
and by the executor's per-job Slurm logs (``.snakemake/slurm_logs/rule_<rule>/...``).
"""

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, TINY_SYNTHETIC, run_snakemake, tiny_config, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

FOLD1 = "results/tiny/forecast/lowo/gnn/fold1/seed0"


@pytest.fixture(scope="module")
def cluster():
    conf = os.environ.get("SLURM_CONF")
    if not conf or not Path(conf).is_file():
        pytest.skip("SLURM_CONF is not set: start a test cluster with .ci/slurm-up")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed")
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        pytest.skip(f"no Slurm controller answers for {conf}")
    text = Path(conf).read_text()
    return {"jobcomp": Path(re.search(r"^JobCompLoc=(\S+)", text, re.M).group(1))}


def completed_jobs(jobcomp: Path) -> dict[int, str]:
    if not jobcomp.exists():
        return {}
    jobs = re.findall(r"JobId=(\d+) .*?JobState=(\S+)", jobcomp.read_text())
    return {int(j): state for j, state in jobs}


def submitted_rules(workdir: Path, after: int) -> list[str]:
    """rule(/wildcards) of each job with an id above ``after``, from the Slurm logs."""
    found = []
    for log in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"):
        if log.stem.isdigit() and int(log.stem) > after:
            parts = log.relative_to(workdir / ".snakemake" / "slurm_logs").parts
            found.append("/".join(parts[:-1]).removeprefix("rule_"))
    return sorted(found)


def slurm(workdir, cfg, *args):
    # The executor checks job states 1 s after a submission, then 10 s later each time
    # it finds none finished (the backoff resets when one has). No job ends within 1 s,
    # and the tiny jobs (5-7 s in Slurm) are then seen at 12 s, not 14 s as after an
    # initial 2 s: about 2 s less per step of the job chain (the test run alone: 238 → 212 s).
    return run_snakemake(
        workdir,
        "--profile", str(REPO / "profiles" / "slurm"),
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
        "--slurm-keep-successful-logs",
        "--latency-wait", "5",
        "--default-resources", "slurm_account=wormgnn", "slurm_partition=debug",
        "runtime=10", "mem_mb=1500",
        "--set-resources", "train:slurm_partition=debug",
        *args,
        configfile=cfg,
    )  # fmt: skip


def test_tiny_pipeline_runs_and_reruns_one_fold_under_slurm(cluster, tmp_path):
    config = tiny_config(
        {"tiny": {"source": "synthetic", "synthetic": {**TINY_SYNTHETIC, "n_worms": 2}}},
        preprocess={"baseline_window_s": 60},
        experiment={
            "models": ["gnn"],
            "tasks": ["forecast"],
            "protocols": ["lowo"],
            "seeds": [0],
            "window": 8,
            "horizon": 2,
        },
        training={"max_epochs": 1, "device": "auto"},  # auto: gnn jobs request gpu=1
        models={"gnn": {"hidden": 8, "message": 8}},
    )
    cfg = write_config(tmp_path / "config.yaml", config)
    before = max(completed_jobs(cluster["jobcomp"]), default=0)
    slurm(tmp_path, cfg)

    jobs = {j: s for j, s in completed_jobs(cluster["jobcomp"]).items() if j > before}
    rules = submitted_rules(tmp_path, before)
    # every rule but `all` ran as a Slurm job, and each completed
    assert len(jobs) == len(rules) >= 14 and set(jobs.values()) == {"COMPLETED"}
    assert {r.split("/")[0] for r in rules} >= {
        "simulate", "preprocess", "make_folds", "train", "evaluate", "aggregate", "figure_graph",
    }  # fmt: skip
    train_log = (tmp_path / "logs/tiny/forecast/lowo/gnn/fold1/train.log").read_text()
    job = re.search(r"SLURM_JOB_ID=(\d+) on \S+, GPUs allocated: (\S+)", train_log)
    assert job and int(job.group(1)) in jobs
    assert job.group(2) != "none"  # the gpu=1 request reached sbatch as --gpus=1
    preprocess_log = (tmp_path / "logs/tiny/preprocessed.log").read_text()
    assert "GPUs allocated: none" in preprocess_log  # data rules ask for no GPU
    assert (tmp_path / "results/tiny/figures/graph.png").exists()

    # rerun one fold: only its jobs and what depends on them are submitted again
    last = max(completed_jobs(cluster["jobcomp"]))
    slurm(tmp_path, cfg, "--forcerun", f"{FOLD1}/model.pt")
    again = submitted_rules(tmp_path, last)
    assert again == sorted(
        [
            "train/tiny_forecast_lowo_gnn_1",  # the executor names logs by wildcard values
            "evaluate/tiny_forecast_lowo_gnn_1",
            "aggregate/tiny_forecast_lowo",
            "figure_forecast_score/tiny",
            "figure_comparison/tiny",
            "figure_graph/tiny",
        ]
    ), again
