"""The benchmark command on tiny data: every record, the table and the target checks."""

import json

from wormgnn import bench


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
        ]
    )
    result = json.loads((tmp_path / "bench.json").read_text())
    labels = [r["label"] for r in result["records"]]
    assert labels == ["linear", "lstm", "gnn", "gnn_sparse"]
    for record in result["records"]:
        assert record["windows_per_s"] > 0 and record["epoch_s"] > 0 and record["peak_rss_mb"] > 100
    targets = {t["target"] for t in result["targets"]}
    assert "gnn throughput >= 1/5 of lstm (shared nodes)" in targets
    assert "| cpu | gnn_sparse |" in (tmp_path / "bench.md").read_text()


def test_target_checks():
    records = [
        {"device": "cuda", "label": "lstm", "windows_per_s": 1000.0, "epoch_s": 1.0},
        {"device": "cuda", "label": "gnn", "windows_per_s": 150.0, "epoch_s": 6.0},
    ]
    checks = {c["target"]: c for c in bench.check_targets(records)}
    assert not checks["gnn throughput >= 1/5 of lstm (shared nodes)"]["passed"]
    assert not checks["gnn epoch of a Kato-sized lowo fold < 5 s"]["passed"]
