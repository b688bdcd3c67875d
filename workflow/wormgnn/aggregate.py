"""Aggregate one (dataset, task, protocol) over folds × seeds: ``summary.csv``, ``stats.json``.

**summary.csv**: one row per model (and per horizon for ``forecast``). For every metric
it gives the mean, the standard deviation (ddof 1) and a Student-t confidence interval
(``ci``, 95 % by default) over the runs, with the numbers of runs, folds and seeds.
Metrics: forecast ``score``, ``mse``, ``mae``, ``r2``; behaviour ``macro_f1``,
``accuracy``, ``balanced_accuracy`` and ``f1_<class>``; ``edge_auroc``/``edge_auprc``
where a model reports them.

**stats.json**: paired comparisons of the headline metric (forecast ``score`` per horizon,
behaviour ``macro_f1``) over the runs the two models share (same fold, same seed):

- ``gnn`` against every other model;
- every model against the best baseline (the structure-agnostic model with the highest
  mean: ``persistence``, ``linear``, ``mlp`` or ``lstm``).

Each gives ``effect`` (the mean paired difference, model − reference; positive means the
model is better) with its Student-t confidence interval (``effect_ci_low``,
``effect_ci_high``, at level ``ci``), the test and its p-value. The test is a Wilcoxon
signed-rank test (``scipy.stats.wilcoxon``) when there are at least
``wilcoxon_min_pairs`` pairs, a paired t-test (``scipy.stats.ttest_rel``) down to
``ttest_min_pairs``, and none below that; a ``note`` then says why.

Multiple comparisons: ``p_holm`` is the p-value after Holm's step-down correction
(Holm 1979) over every tested comparison of the file, i.e. of one (dataset, task,
protocol), all horizons together; ``significant`` says whether ``p_holm`` < ``alpha``.
It controls the family-wise error rate without assuming the tests independent.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from wormgnn import files

log = logging.getLogger("wormgnn.aggregate")

#: Structure-agnostic models; the best of them is the reference of the comparisons.
BASELINES = ("persistence", "linear", "mlp", "lstm")
MODEL_ORDER = (
    "persistence",
    "linear",
    "mlp",
    "lstm",
    "gnn",
    "gnn_connectome",
    "gnn_shuffled",
    "gnn_full",
    "gnn_nograph",
)
HEADLINE = {"forecast": "score", "behaviour": "macro_f1"}
FORECAST_METRICS = ("score", "mse", "mae", "r2")
BEHAVIOUR_METRICS = ("macro_f1", "accuracy", "balanced_accuracy")
EDGE_METRICS = ("edge_auroc", "edge_auprc")


@dataclass
class AggregateConfig:
    """``aggregate`` in config.yaml."""

    ci: float = 0.95
    wilcoxon_min_pairs: int = 6
    ttest_min_pairs: int = 3
    alpha: float = 0.05  # family-wise error rate of the Holm-corrected tests

    def __post_init__(self) -> None:
        if not 0 < self.ci < 1:
            raise ValueError(f"aggregate.ci is {self.ci}; it must lie in (0, 1)")
        if not 0 < self.alpha < 1:
            raise ValueError(f"aggregate.alpha is {self.alpha}; it must lie in (0, 1)")
        if not 2 <= self.ttest_min_pairs <= self.wilcoxon_min_pairs:
            raise ValueError(
                "aggregate: need 2 <= ttest_min_pairs <= wilcoxon_min_pairs, got "
                f"{self.ttest_min_pairs} and {self.wilcoxon_min_pairs}"
            )


# --------------------------------------------------------------------------- loading
@dataclass
class Run:
    """The metrics of one (model, fold, seed), flattened: (horizon or None) → values."""

    model: str
    fold: int
    seed: int
    values: dict[int | None, dict[str, float]]


def flatten(metrics: dict[str, Any]) -> Run:
    """One ``metrics.json`` as a :class:`Run`. Horizon keys are 1..H for forecast and
    ``None`` for behaviour; missing or null metrics are left out."""
    edge = {k: float(metrics[k]) for k in EDGE_METRICS if metrics.get(k) is not None}
    values: dict[int | None, dict[str, float]] = {}
    if metrics["task"] == "forecast":
        for row in metrics["per_horizon"]:
            values[int(row["horizon"])] = {k: float(row[k]) for k in FORECAST_METRICS} | edge
    else:
        row = {k: float(metrics[k]) for k in BEHAVIOUR_METRICS}
        row |= {f"f1_{c}": float(v) for c, v in metrics["per_class_f1"].items()}
        values[None] = row | edge
    return Run(metrics["model"], int(metrics["fold"]), int(metrics["seed"]), values)


def load_runs(paths: list[Path]) -> tuple[dict[str, str], list[Run]]:
    """Read the metrics files of one (dataset, task, protocol); reject mixtures and
    duplicate (model, fold, seed) runs, naming the files."""
    if not paths:
        raise ValueError("no metrics files given")
    where: dict[str, str] | None = None
    runs, seen = [], {}
    for path in paths:
        m = files.read_json(path)
        try:
            here = {k: m[k] for k in ("dataset", "task", "protocol")}
            run = flatten(m)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a metrics.json from wormgnn.evaluate ({err!r})") from err
        if where is None:
            where = here
        elif here != where:
            raise ValueError(
                f"{path} is {here}, but {paths[0]} is {where}; aggregate one at a time"
            )
        key = (run.model, run.fold, run.seed)
        if key in seen:
            raise ValueError(f"{path} and {seen[key]} are both {key} (model, fold, seed)")
        seen[key] = path
        runs.append(run)
    assert where is not None
    return where, runs


# --------------------------------------------------------------------------- summary
def mean_ci(values: np.ndarray, level: float) -> dict[str, float]:
    """Mean, standard deviation (ddof 1) and the Student-t confidence interval of the
    mean. One value has no spread: std and the interval are NaN."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    mean = float(values.mean())
    if n < 2:
        return {"mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if np.ptp(values) == 0.0:  # identical values (a zero sd, without rounding noise)
        return {"mean": mean, "std": 0.0, "ci_low": mean, "ci_high": mean}
    std = float(values.std(ddof=1))
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=stats.sem(values))
    return {"mean": mean, "std": std, "ci_low": float(low), "ci_high": float(high)}


def model_order(models) -> list[str]:
    """The study's order (baselines, then the GNNs); unknown names last, sorted."""
    present = set(models)
    return [m for m in MODEL_ORDER if m in present] + sorted(present - set(MODEL_ORDER))


def summarise(runs: list[Run], cfg: AggregateConfig) -> list[dict[str, Any]]:
    """The rows of summary.csv, in model order then horizon order."""
    rows = []
    for model in model_order(r.model for r in runs):
        mine = [r for r in runs if r.model == model]
        for horizon in sorted({h for r in mine for h in r.values}, key=lambda h: h or 0):
            metrics: dict[str, list[float]] = defaultdict(list)
            for r in mine:
                for k, v in r.values.get(horizon, {}).items():
                    metrics[k].append(v)
            row: dict[str, Any] = {
                "model": model,
                "horizon": horizon,
                "n_runs": len(mine),
                "n_folds": len({r.fold for r in mine}),
                "n_seeds": len({r.seed for r in mine}),
            }
            for k, v in metrics.items():
                for stat, value in mean_ci(np.array(v), cfg.ci).items():
                    row[f"{k}_{stat}"] = value
                if len(v) != len(mine):
                    row[f"{k}_n"] = len(v)
            rows.append(row)
    return rows


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    """CSV with a column per (metric, statistic); blanks where a model lacks a metric
    (for example the behaviour rows have no horizon)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with files.atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_summary(path: Path) -> list[dict[str, Any]]:
    """summary.csv back as dicts: numbers as floats (NaN for blanks), horizon as int or
    None, model as str."""
    out = []
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            parsed: dict[str, Any] = {}
            for k, v in row.items():
                if k == "model":
                    parsed[k] = v
                elif k == "horizon":
                    parsed[k] = int(v) if v else None
                else:
                    parsed[k] = float(v) if v else math.nan
            out.append(parsed)
    return out


# --------------------------------------------------------------------------- tests
def paired_test(
    model: dict[tuple[int, int], float],
    reference: dict[tuple[int, int], float],
    cfg: AggregateConfig,
) -> dict[str, Any]:
    """Compare two models on the (fold, seed) runs they share; effect = model − ref."""
    keys = sorted(set(model) & set(reference))
    a = np.array([model[k] for k in keys])
    b = np.array([reference[k] for k in keys])
    diff = a - b
    effect = mean_ci(diff, cfg.ci) if keys else None
    out: dict[str, Any] = {
        "n_pairs": len(keys),
        "effect": effect["mean"] if effect else None,
        "effect_std": effect["std"] if effect else None,
        "effect_ci_low": effect["ci_low"] if effect else None,
        "effect_ci_high": effect["ci_high"] if effect else None,
        "wins": int((diff > 0).sum()),
        "test": None,
        "statistic": None,
        "p_value": None,
    }
    if len(keys) < cfg.ttest_min_pairs:
        out["note"] = (
            f"sample too small for a test: {len(keys)} paired runs, and even a paired "
            f"t-test needs {cfg.ttest_min_pairs} (aggregate.ttest_min_pairs)"
        )
    elif np.ptp(diff) == 0.0:
        out["note"] = f"every paired difference equals {diff[0]:.6g}; nothing to test"
    elif len(keys) >= cfg.wilcoxon_min_pairs:
        res = stats.wilcoxon(a, b)
        out.update(test="wilcoxon_signed_rank", statistic=float(res.statistic))
        out["p_value"] = float(res.pvalue)
    else:
        res = stats.ttest_rel(a, b)
        out.update(test="paired_t_test", statistic=float(res.statistic))
        out["p_value"] = float(res.pvalue)
        out["note"] = (
            f"{len(keys)} paired runs: fewer than {cfg.wilcoxon_min_pairs} "
            "(aggregate.wilcoxon_min_pairs), so a paired t-test instead of Wilcoxon"
        )
    return out


def compare(runs: list[Run], task: str, cfg: AggregateConfig) -> dict[str, Any]:
    """The paired comparisons of stats.json (see the module docstring)."""
    metric = HEADLINE[task]
    by_model: dict[str, dict[int | None, dict[tuple[int, int], float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in runs:
        for h, values in r.values.items():
            if metric in values:
                by_model[r.model][h][(r.fold, r.seed)] = values[metric]
    models = model_order(r.model for r in runs)
    horizons = sorted({h for r in runs for h in r.values}, key=lambda h: h or 0)
    comparisons, best = [], {}
    for h in horizons:
        means = {m: float(np.mean(list(by_model[m][h].values()))) for m in models if by_model[m][h]}
        baselines = [m for m in BASELINES if m in means]
        best_h = max(baselines, key=lambda m: means[m]) if baselines else None
        best[str(h) if h is not None else "all"] = best_h
        pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
        for m in models:
            if "gnn" in means and m != "gnn" and m in means:
                pairs["gnn", m].append("gnn_vs_model")
            if best_h is not None and m != best_h and m in means:
                pairs[m, best_h].append("model_vs_best_baseline")
        for (model, ref), kinds in pairs.items():
            result = paired_test(by_model[model][h], by_model[ref][h], cfg)
            comparisons.append(
                {"horizon": h, "model": model, "reference": ref, "kinds": kinds} | result
            )
    tested = [c for c in comparisons if c["p_value"] is not None]
    for c, adjusted in zip(tested, holm([c["p_value"] for c in tested]), strict=True):
        c["p_holm"] = adjusted
    for c in comparisons:
        c.setdefault("p_holm", None)
        c["significant"] = c["p_holm"] is not None and c["p_holm"] < cfg.alpha
    notes = []
    if "gnn" not in models:
        notes.append("no gnn runs: only the comparisons with the best baseline")
    return {
        "metric": metric,
        "higher_is_better": True,
        "effect": f"mean over paired (fold, seed) runs of {metric}(model) - {metric}(reference)",
        "correction": f"Holm over the {len(tested)} tested comparisons of this file",
        "alpha": cfg.alpha,
        "best_baseline": best,
        "baselines": list(BASELINES),
        "comparisons": comparisons,
        "notes": notes,
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest of m
    is multiplied by (m − i + 1), then made non-decreasing in that order and capped at 1."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------- stage
def run(paths: list[Path], cfg: AggregateConfig, summary_out: Path, stats_out: Path) -> None:
    where, runs = load_runs(paths)
    rows = summarise(runs, cfg)
    write_summary(summary_out, rows)
    result = (
        where | {"settings": asdict(cfg), "n_runs": len(runs)} | compare(runs, where["task"], cfg)
    )
    files.write_json(stats_out, _finite(result))
    log.info(
        "%s/%s/%s: %d runs of %d models -> %s, %s",
        where["dataset"],
        where["task"],
        where["protocol"],
        len(runs),
        len({r.model for r in runs}),
        summary_out,
        stats_out,
    )


def _finite(obj: Any) -> Any:
    """NaN → null, so stats.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.aggregate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--metrics", type=Path, nargs="+", required=True)
    parser.add_argument("--config", default="{}", help="the aggregate config block, as JSON")
    parser.add_argument("--summary", type=Path, required=True, help="output summary.csv")
    parser.add_argument("--stats", type=Path, required=True, help="output stats.json")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        cfg = files.settings(
            AggregateConfig, files.parse_json_arg(args.config, "config"), "aggregate"
        )
        run(args.metrics, cfg, args.summary, args.stats)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
