"""Aggregation over folds × seeds, checked on hand-made metric files with known answers."""

import csv
import json
import math

import pytest
from wormgnn import aggregate, files
from wormgnn.aggregate import AggregateConfig


def forecast_metrics(model, fold, seed, scores, edge=None):
    m = {
        "dataset": "d",
        "task": "forecast",
        "protocol": "lowo",
        "model": model,
        "fold": fold,
        "seed": seed,
        "per_horizon": [
            {"horizon": h + 1, "score": s, "mse": 1 - s, "mae": 0.5, "r2": s}
            for h, s in enumerate(scores)
        ],
    }
    if edge is not None:
        m["edge_auroc"] = edge
        m["edge_auprc"] = None  # a null metric is left out, not averaged
    return m


def behaviour_metrics(model, fold, seed, f1):
    return {
        "dataset": "d",
        "task": "behaviour",
        "protocol": "within",
        "model": model,
        "fold": fold,
        "seed": seed,
        "macro_f1": f1,
        "accuracy": 0.9,
        "balanced_accuracy": 0.8,
        "per_class_f1": {"forward": f1, "reversal": 1.0},
    }


def write_all(tmp_path, metrics):
    paths = []
    for i, m in enumerate(metrics):
        path = tmp_path / f"metrics_{i}.json"
        path.write_text(json.dumps(m))
        paths.append(path)
    return paths


def run(tmp_path, metrics, **cfg):
    aggregate.run(
        write_all(tmp_path, metrics),
        AggregateConfig(**cfg),
        tmp_path / "summary.csv",
        tmp_path / "stats.json",
    )
    with (tmp_path / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return rows, files.read_json(tmp_path / "stats.json")


def test_mean_sd_and_t_interval_by_hand():
    # values 1, 2, 3: mean 2, sd 1, sem 1/sqrt(3), t(0.975, 2) = 4.302653
    s = aggregate.mean_ci([1.0, 2.0, 3.0], 0.95)
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0)
    half = 4.302653 / math.sqrt(3)
    assert s["ci_low"] == pytest.approx(2 - half, abs=1e-5)
    assert s["ci_high"] == pytest.approx(2 + half, abs=1e-5)
    one = aggregate.mean_ci([0.7], 0.95)
    assert one["mean"] == 0.7 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    flat = aggregate.mean_ci([0.5, 0.5], 0.95)
    assert flat["ci_low"] == flat["ci_high"] == 0.5


def test_summary_rows_per_model_and_horizon(tmp_path):
    metrics = [
        forecast_metrics("linear", f, s, [0.1 * (f + 1), 0.2]) for f in range(3) for s in (0, 1)
    ] + [forecast_metrics("gnn", f, 0, [0.3, 0.4], edge=0.6 + 0.1 * f) for f in range(3)]
    rows, _ = run(tmp_path, metrics)
    assert [(r["model"], r["horizon"]) for r in rows] == [
        ("linear", "1"),
        ("linear", "2"),
        ("gnn", "1"),
        ("gnn", "2"),
    ]
    lin1 = rows[0]
    assert (lin1["n_runs"], lin1["n_folds"], lin1["n_seeds"]) == ("6", "3", "2")
    assert float(lin1["score_mean"]) == pytest.approx(0.2)
    assert float(lin1["score_std"]) == pytest.approx(0.0894427, rel=1e-5)  # sd of .1,.1,.2,.2,.3,.3
    assert float(rows[1]["score_std"]) == 0.0 and float(rows[1]["score_ci_low"]) == 0.2
    gnn1 = rows[2]
    assert float(gnn1["edge_auroc_mean"]) == pytest.approx(0.7)
    assert "edge_auprc_mean" not in gnn1 or gnn1["edge_auprc_mean"] == ""
    assert lin1["edge_auroc_mean"] == ""  # linear reports no edges: a blank cell


def test_behaviour_summary_has_one_row_per_model_and_class_f1(tmp_path):
    metrics = [behaviour_metrics("mlp", f, 0, 0.5 + 0.1 * f) for f in range(3)]
    rows, stats = run(tmp_path, metrics)
    assert len(rows) == 1 and rows[0]["horizon"] == ""
    assert float(rows[0]["macro_f1_mean"]) == pytest.approx(0.6)
    assert float(rows[0]["f1_reversal_mean"]) == 1.0
    assert stats["metric"] == "macro_f1" and stats["best_baseline"] == {"all": "mlp"}
    assert stats["notes"] == ["no gnn runs: only the comparisons with the best baseline"]


def test_wilcoxon_with_enough_pairs(tmp_path):
    # six pairs, gnn better in all: exact two-sided Wilcoxon p = 2 / 2**6
    metrics = [forecast_metrics("linear", f, 0, [0.1]) for f in range(6)]
    metrics += [forecast_metrics("gnn", f, 0, [0.1 + 0.01 * (f + 1)]) for f in range(6)]
    _, stats = run(tmp_path, metrics)
    (c,) = [c for c in stats["comparisons"] if c["model"] == "gnn"]
    assert c["reference"] == "linear" and c["kinds"] == ["gnn_vs_model", "model_vs_best_baseline"]
    assert c["test"] == "wilcoxon_signed_rank" and c["n_pairs"] == 6 and c["wins"] == 6
    assert c["effect"] == pytest.approx(0.035)
    assert c["p_value"] == pytest.approx(2 / 64)


def test_paired_t_test_when_few_pairs(tmp_path):
    # differences 0.1, 0.2, 0.3: t = 0.2 / (0.1 / sqrt 3) = 3.4641, df 2, p = 0.07418
    metrics = [forecast_metrics("lstm", f, 0, [0.0]) for f in range(3)]
    metrics += [forecast_metrics("gnn", f, 0, [0.1 * (f + 1)]) for f in range(3)]
    _, stats = run(tmp_path, metrics)
    (c,) = stats["comparisons"]
    assert c["test"] == "paired_t_test"
    assert c["statistic"] == pytest.approx(3.4641, abs=1e-4)
    assert c["p_value"] == pytest.approx(0.07418, abs=1e-4)
    assert "fewer than 6" in c["note"]


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> 0.06
    assert aggregate.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert aggregate.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, order kept
    assert aggregate.holm([0.02]) == [0.02] and aggregate.holm([]) == []


def test_holm_correction_and_effect_intervals_in_stats(tmp_path):
    # two horizons, gnn against linear: differences 0.1, 0.2, 0.3 (p 0.07418) at h1 and
    # 0.3, 0.3, 0.31 at h2 (t = 0.30333 / (0.0057735 / sqrt 3) = 91.0, p = 0.000121)
    metrics = [forecast_metrics("linear", f, 0, [0.0, 0.0]) for f in range(3)]
    metrics += [
        forecast_metrics("gnn", f, 0, [0.1 * (f + 1), 0.3 + 0.01 * (f == 2)]) for f in range(3)
    ]
    _, stats = run(tmp_path, metrics, alpha=0.05)
    h1, h2 = sorted(stats["comparisons"], key=lambda c: c["horizon"])
    assert h1["p_value"] == pytest.approx(0.07418, abs=1e-4)
    assert h2["p_value"] == pytest.approx(1.2074e-4, rel=1e-3)
    assert h1["p_holm"] == pytest.approx(h1["p_value"])  # the larger one: times 1, kept
    assert h2["p_holm"] == pytest.approx(2 * h2["p_value"])  # the smaller: times 2
    assert (h1["significant"], h2["significant"]) == (False, True)
    # 95 % t interval of 0.1, 0.2, 0.3: 0.2 -/+ 4.302653 * 0.1 / sqrt 3
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert h1["effect_ci_low"] == pytest.approx(0.2 - half, abs=1e-6)
    assert h1["effect_ci_high"] == pytest.approx(0.2 + half, abs=1e-6)
    assert stats["alpha"] == 0.05 and "Holm over the 2 tested" in stats["correction"]


def test_untested_comparisons_are_never_significant(tmp_path):
    metrics = [forecast_metrics(m, f, 0, [0.1 * f + (m == "gnn")]) for m in ("linear", "gnn")
               for f in (0, 1)]  # fmt: skip
    _, stats = run(tmp_path, metrics)
    (c,) = stats["comparisons"]
    assert c["p_holm"] is None and c["significant"] is False


def test_too_few_pairs_says_so(tmp_path):
    metrics = [
        forecast_metrics(m, f, 0, [0.1 * f + (m == "gnn")])
        for m in ("linear", "gnn")
        for f in (0, 1)
    ]
    _, stats = run(tmp_path, metrics)
    (c,) = stats["comparisons"]
    assert c["test"] is None and c["p_value"] is None and c["n_pairs"] == 2
    assert "sample too small for a test" in c["note"]


def test_only_shared_fold_seed_runs_are_paired(tmp_path):
    metrics = [forecast_metrics("linear", f, s, [0.0]) for f in range(3) for s in (0, 1)]
    metrics += [forecast_metrics("gnn", f, 0, [0.1 * (f + 1)]) for f in range(3)]
    _, stats = run(tmp_path, metrics)
    (c,) = stats["comparisons"]
    assert c["n_pairs"] == 3


def test_best_baseline_per_horizon_and_gnn_against_every_model(tmp_path):
    metrics = []
    for f in range(3):
        metrics.append(forecast_metrics("persistence", f, 0, [0.0, 0.0]))
        metrics.append(forecast_metrics("linear", f, 0, [0.2, -0.1 + 0.01 * f]))
        metrics.append(forecast_metrics("mlp", f, 0, [0.1, 0.1 + 0.01 * f]))
        metrics.append(forecast_metrics("gnn", f, 0, [0.3 + 0.01 * f, 0.3]))
        metrics.append(forecast_metrics("gnn_connectome", f, 0, [0.25, 0.2 + 0.02 * f]))
    _, stats = run(tmp_path, metrics)
    assert stats["best_baseline"] == {"1": "linear", "2": "mlp"}
    h1 = {(c["model"], c["reference"]) for c in stats["comparisons"] if c["horizon"] == 1}
    assert h1 == {
        ("gnn", "persistence"),
        ("gnn", "linear"),
        ("gnn", "mlp"),
        ("gnn", "gnn_connectome"),
        ("persistence", "linear"),
        ("mlp", "linear"),
        ("gnn_connectome", "linear"),
    }
    # identical differences (persistence is 0 - 0.2 on every fold): nothing to test
    flat = [c for c in stats["comparisons"] if c["horizon"] == 1 and c["model"] == "persistence"]
    assert flat[0]["test"] is None and "every paired difference equals -0.2" in flat[0]["note"]
    json.dumps(stats, allow_nan=False)  # strict JSON


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ms: ms.append(dict(ms[0])), "are both"),
        (
            lambda ms: ms.append({**ms[0], "protocol": "within", "fold": 9}),
            "aggregate one at a time",
        ),
        (lambda ms: ms.append({"dataset": "d"}), "not a metrics.json"),
    ],
)
def test_bad_metric_files_are_named(tmp_path, change, message):
    metrics = [forecast_metrics("linear", 0, 0, [0.1])]
    change(metrics)
    with pytest.raises(ValueError, match=message):
        aggregate.run(
            write_all(tmp_path, metrics), AggregateConfig(), tmp_path / "s.csv", tmp_path / "s.json"
        )
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "s.json").exists()


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="aggregate.ci"):
        AggregateConfig(ci=95)
    with pytest.raises(ValueError, match="ttest_min_pairs"):
        AggregateConfig(ttest_min_pairs=8, wilcoxon_min_pairs=6)


def test_command_line(tmp_path):
    paths = write_all(tmp_path, [forecast_metrics("linear", f, 0, [0.1 * f]) for f in range(3)])
    aggregate.main(
        ["--metrics", *map(str, paths), "--config", '{"ci": 0.9}', "--summary",
         str(tmp_path / "o.csv"), "--stats", str(tmp_path / "o.json")]
    )  # fmt: skip
    assert files.read_json(tmp_path / "o.json")["settings"]["ci"] == 0.9
    with pytest.raises(SystemExit, match="unknown setting"):
        aggregate.main(["--metrics", str(paths[0]), "--config", '{"level": 1}', "--summary",
                        str(tmp_path / "x.csv"), "--stats", str(tmp_path / "x.json")])  # fmt: skip
