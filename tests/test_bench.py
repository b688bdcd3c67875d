"""The benchmark command on tiny data: every record, the table and the target checks."""

import json

import pytest
from conftest import REPO, tiny_study_config, write_config
from wormgnn import bench, studycost


def test_bench_measures_each_model_in_its_own_process(tiny_results, tmp_path, capsys):
    bench.main(
        [
            "--data",
            str(tiny_results["root"]),
            "--out",
            str(tmp_path),
            "--devices",
            "cpu",
            "--models",
            "linear",
            "lstm",
            "gnn",
            "gnn_sparse",
            "--batches",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
        ]
    )
    result = json.loads((tmp_path / "bench.json").read_text())
    labels = [(r["task"], r["label"]) for r in result["records"]]
    models = ["linear", "lstm", "gnn", "gnn_sparse"]
    assert labels == [(t, m) for t in ("forecast", "behaviour") for m in models]
    for record in result["records"]:
        assert record["windows_per_s"] > 0 and record["epoch_s"] > 0 and record["peak_rss_mb"] > 100
        assert record["loader_s"] > 0  # the loader's one-off build (the gnn's summary cache)
        if record["label"] != "linear":  # FLOPs of a step, against a timed matrix product
            assert record["flops_per_window"] > 0 and 0 < record["efficiency"] < 1
    targets = {(t["target"], t["task"]) for t in result["targets"]}
    for task in ("forecast", "behaviour"):
        assert ("gnn throughput >= 1/5 of lstm (shared nodes)", task) in targets
    assert result["threads"] == 1
    assert "| cpu | behaviour | gnn_sparse |" in (tmp_path / "bench.md").read_text()


def test_target_checks():
    def record(task, label, rate, epoch=1.0):
        return {
            "device": "cuda",
            "task": task,
            "label": label,
            "windows_per_s": rate,
            "epoch_s": epoch,
        }

    records = [
        record("forecast", "lstm", 1000.0),
        record("forecast", "gnn", 150.0, epoch=6.0),
        record("forecast", "gnn_all", 20.0),
        record("behaviour", "lstm", 1000.0),
        record("behaviour", "gnn", 250.0, epoch=4.0),
        record("behaviour", "gnn_all", 25.0),
    ]
    checks = {(c["target"], c["task"]): c for c in bench.check_targets(records)}
    ratio = "gnn throughput >= 1/5 of lstm (shared nodes)"
    assert not checks[ratio, "forecast"]["passed"] and checks[ratio, "behaviour"]["passed"]
    every_roi = "gnn on every ROI >= 1/8 of gnn on the shared set"
    assert checks[every_roi, "forecast"]["value"] == 20.0 / 150.0
    assert checks[every_roi, "forecast"]["passed"] and not checks[every_roi, "behaviour"]["passed"]
    epoch = "gnn epoch of a Kato-sized lowo fold < 5 s"
    assert not checks[epoch, "forecast"]["passed"] and checks[epoch, "behaviour"]["passed"]


@pytest.mark.workflow
def test_study_cost_plans_measures_one_job_per_kind_and_projects(tmp_path, capfd):
    """``bench --study`` on a tiny study with selection: Snakemake's plan, one measured
    job of every kind (fold 0, first seed), and the projection from their benchmarks.
    The measuring run shows Snakemake's progress as it goes."""
    config = tiny_study_config(["persistence", "linear", "gnn"], seeds=[0, 1])
    cfg = write_config(tmp_path / "config.yaml", config)
    out = tmp_path / "bench"
    bench.main(
        [
            "--study",
            "--workdir",
            str(tmp_path),
            "--configfile",
            str(cfg),
            "--cores",
            "2",
            "--out",
            str(out),
        ]
    )
    assert "steps (100%) done" in capfd.readouterr().err
    result = json.loads((out / "study.json").read_text())
    kinds = {(k["rule"], k["model"]): k for k in result["kinds"]}
    # 3 lowo folds: per model 3 train and evaluate jobs (each of both seeds), 3 selections
    assert kinds["train", "gnn"]["planned"] == 3 and kinds["evaluate", "linear"]["planned"] == 3
    assert kinds["select", "gnn"]["planned"] == 3 and ("select", "persistence") not in kinds
    for kind in result["kinds"]:
        assert kind["measured"] == 1, kind  # fold 0 (and its selection) only
        assert kind["projected_s"] == pytest.approx(kind["mean_s"] * kind["planned"])
    for seed in (0, 1):  # fold 0's one train job wrote both seeds' files
        assert (tmp_path / f"results/tiny/forecast/lowo/gnn/fold0/seed{seed}/metrics.json").exists()
    totals = result["totals"]
    assert totals["jobs"] == 2 * 3 * 3 + 2 * 3 and totals["jobs_measured"] == 2 * 3 + 2
    assert totals["core_seconds"] == pytest.approx(
        sum(k["projected_s"] * k["threads"] for k in result["kinds"])
    )
    assert totals["wall_s_lower_bound"] == pytest.approx(totals["core_seconds"] / 2)
    assert "core-hours" in (out / "study.md").read_text()
    assert not (tmp_path / "results/tiny/forecast/lowo/gnn/fold1").exists()  # not run
    # from the benchmark files alone, without running anything
    again = studycost.run(tmp_path, ["--configfile", str(cfg)], 4, out, measure=False)
    assert again["totals"]["job_seconds"] == pytest.approx(totals["job_seconds"])


def test_study_config_files_are_named_from_the_callers_directory(tmp_path, monkeypatch):
    """Snakemake runs in ``--workdir``, so a relative ``--configfile`` is resolved where
    the user typed it; a missing one is a clear error before anything runs. A new
    ``--workdir`` is made, but ``--no-run`` needs one that holds a measured study."""
    seen = {}
    monkeypatch.setattr(studycost, "run", lambda workdir, args, *rest, **kw: seen.update(args=args))
    (tmp_path / "study.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    common = ["--study", "--workdir", str(tmp_path / "elsewhere"), "--out", str(tmp_path / "o")]
    bench.main([*common, "--configfile", "study.yaml"])
    assert seen["args"] == ["--configfile", str(tmp_path / "study.yaml")]
    assert (tmp_path / "elsewhere").is_dir()  # a new working directory is made
    seen.clear()
    with pytest.raises(SystemExit, match="no such folder to project from"):
        bench.main(["--study", "--no-run", "--workdir", "nowhere", "--out", "o"])
    with pytest.raises(SystemExit, match="no such file: nothing.yaml"):
        bench.main([*common, "--configfile", "study.yaml", "nothing.yaml"])
    assert not seen


def test_a_stopped_study_measurement_carries_on(tmp_path, monkeypatch):
    """The measuring run reruns a job that a stop cut off instead of refusing to start."""
    calls = []
    job = studycost.Job("evaluate", "d", "forecast", "lowo", "gnn", 0)
    monkeypatch.setattr(studycost, "snakemake", lambda wd, args, *more, **kw: calls.append(more))
    monkeypatch.setattr(studycost, "plan", lambda wd, args: {job: "results/d/x/metrics.json"})
    studycost.run(tmp_path, [], 2, tmp_path / "out")
    assert calls[-1] == ("--cores", "2", "--rerun-incomplete", "results/d/x/metrics.json")


def test_study_threads_are_the_rules():
    text = (REPO / "workflow" / "rules" / "models.smk").read_text()
    for rule, threads in studycost.THREADS.items():
        body = text.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
        assert f"threads: {threads}\n" in body


def test_a_study_output_names_its_job():
    job = studycost.parse_output("results/d/behaviour/within/gnn_full/fold3/seed2/metrics.json")
    assert job == studycost.Job("evaluate", "d", "behaviour", "within", "gnn_full", 3)
    assert job.benchmark == "benchmarks/d/behaviour/within/gnn_full/fold3/evaluate.tsv"
    seed0 = "results/d/behaviour/within/gnn_full/fold3/seed0/metrics.json"
    assert studycost.parse_output(seed0) == job  # one job evaluates every seed of a fold
    select = studycost.parse_output("results/d/forecast/lodo/mlp/fold0/selection.json")
    assert select.rule == "select"
    assert select.benchmark == "benchmarks/d/forecast/lodo/mlp/fold0/select.tsv"
    assert studycost.parse_output("results/d/forecast/lowo/summary.csv") is None
