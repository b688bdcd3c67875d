"""Evaluate one trained fold/seed on its test segments: ``metrics.json``, ``predictions.h5``.

- **forecast**, per horizon h = 1..H: ``mse``, ``mae``, ``r2`` and
  ``score = 1 - MSE / MSE(persistence)``, with persistence on the same test windows.
- **behaviour**: ``accuracy``, ``balanced_accuracy``, ``macro_f1``, per-class F1 and the
  confusion matrix with class names (scikit-learn).
- **relation inference** (``gnn``; the fixed graphs for reference): edge probabilities
  averaged over each test worm's windows, scored with ``edge_auroc``/``edge_auprc``
  against the synthetic ground truth, or against the connectome for real data. Pairs
  involving unnamed ROIs (no connectome identity) are left out on real data.

``predictions.h5``: ``/worms/<w>/{start, y_true, y_pred, names}``, where ``y_pred`` is the
forecast (windows, nodes, H), with ``persistence`` and ``mask`` beside it, or the class
probabilities (windows, K); and ``/edges/<w>/{prob, names}`` for the GNNs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from wormgnn import files
from wormgnn.connectome import load_connectome
from wormgnn.data import WindowLoader
from wormgnn.metrics import behaviour_metrics, edge_scores, forecast_metrics
from wormgnn.models import rollout
from wormgnn.models.baselines import LinearModel, persistence_forecast
from wormgnn.models.registry import GNN_MODELS, model_config
from wormgnn.train import (
    RunConfig,
    build_for,
    command_errors,
    load_checkpoint,
    parse_run,
    prepare,
    seed_runs,
    stack_windows,
)

log = logging.getLogger("wormgnn.evaluate")


def reference_graphs(
    worms: dict[int, Any], truth_path: Path | None, connectome: str
) -> tuple[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Per worm, the reference adjacency [sender, receiver] among its nodes and which
    nodes it covers: the synthetic ground truth when given, else the connectome."""
    out = {}
    if truth_path is not None:
        with h5py.File(truth_path, "r") as h5:
            adjacency = h5["adjacency"][()]
            for w, worm in worms.items():
                neuron = h5[f"worms/{w}/roi_neuron"][()][worm.roi_index]
                out[w] = (adjacency[np.ix_(neuron, neuron)], np.ones(len(neuron), dtype=bool))
        return "ground_truth", out
    conn = load_connectome(connectome)
    index = conn.index()
    for w, worm in worms.items():
        out[w] = (conn.restrict(worm.names), np.array([n in index for n in worm.names]))
    return f"connectome:{conn.source}", out


@torch.no_grad()
def predict_neural(run: RunConfig, model: torch.nn.Module, loader: WindowLoader) -> dict[str, Any]:
    parts: dict[str, list] = {
        "start": [],
        "x_last": [],
        "y_true": [],
        "y_pred": [],
        "mask": [],
        "edge": [],
    }
    for batch in loader:
        if run.task == "forecast":
            pred, first = rollout(
                model, batch.x, batch.mask, batch.graph, run.horizon, **batch.inputs
            )
        else:
            first = model(batch.x, batch.mask, batch.graph, **batch.inputs)
            pred = torch.softmax(first.pred, dim=1)
        parts["start"].append(batch.start.numpy())
        parts["y_true"].append(batch.y.numpy())
        parts["y_pred"].append(pred.numpy())
        parts["mask"].append(batch.mask.numpy())
        parts["x_last"].append(batch.x[:, :, -1, 0].numpy())
        if first.edge_prob is not None:
            parts["edge"].append(first.edge_prob.numpy())
    return parts


def run_evaluation(
    run: RunConfig,
    traces: Path,
    labels: Path,
    folds: Path,
    model_file: Path,
    metrics_out: Path,
    predictions_out: Path,
    truth: Path | None,
) -> dict[str, Any]:
    ckpt = load_checkpoint(model_file)
    saved = RunConfig(**ckpt["run"])
    if saved != run:
        raise ValueError(f"{model_file} was trained with another configuration; retrain it")
    prep = prepare(run, traces, labels, folds)
    prep.vocabulary = ckpt["meta"].get("vocabulary")  # the names its embedding rows are
    ds = prep.ds
    model = None
    if ckpt["state_dict"] is not None:  # a neural model
        model = build_for(run, prep)
        model.load_state_dict(ckpt["state_dict"])
        model.eval()
    # one loader per worm keeps padding (node set `all`) within a worm
    per_worm = {}
    for w, segs in prep.test.items():
        loader = prep.loader({w: segs}, 512)
        if loader.n_windows == 0:
            continue
        per_worm[w] = _predict(run, ckpt, model, loader)
    if not per_worm:
        raise ValueError(f"fold {run.fold}: the test segments hold no complete window")
    result: dict[str, Any] = {
        "dataset": run.dataset,
        "task": run.task,
        "protocol": run.protocol,
        "model": run.model,
        "fold": run.fold,
        "seed": run.seed,
        "node_set": ds.node_set,
        "test_worms": sorted(per_worm),
        "best_epoch": int(ckpt.get("best_epoch", 0)),
    }
    if run.task == "forecast":  # pool (window, node) rows; node counts may differ per worm
        rows = {
            k: np.concatenate([p[k][p["mask"]] for p in per_worm.values()])
            for k in ("y_true", "y_pred", "persistence")
        }
        result.update(forecast_metrics(rows["y_true"], rows["y_pred"], rows["persistence"]))
        result["n_windows"] = int(sum(len(p["start"]) for p in per_worm.values()))
    else:
        y_true = np.concatenate([p["y_true"] for p in per_worm.values()])
        y_pred = np.concatenate([p["y_pred"] for p in per_worm.values()]).argmax(1)
        result.update(behaviour_metrics(y_true, y_pred, ds.classes))
    edges = {w: p["edge"].mean(0) for w, p in per_worm.items() if p.get("edge") is not None}
    if edges and run.model in GNN_MODELS:
        source, refs = reference_graphs({w: ds.worms[w] for w in edges}, truth, run.connectome)
        scores = edge_scores(
            [edges[w] for w in edges], [refs[w][0] for w in edges], [refs[w][1] for w in edges]
        )
        result.update(scores, edge_reference=source)
    _write_predictions(predictions_out, run, ds, per_worm, edges)
    files.write_json(metrics_out, result)
    headline = result["per_horizon"][0]["score"] if run.task == "forecast" else result["macro_f1"]
    log.info(
        "%s %s fold %d: %s %.4f%s",
        run.model,
        run.task,
        run.fold,
        "score@1" if run.task == "forecast" else "macro_f1",
        headline,
        f", edge AUROC {result['edge_auroc']:.3f}" if result.get("edge_auroc") is not None else "",
    )
    return result


def _predict(
    run: RunConfig, ckpt: dict[str, Any], model: torch.nn.Module | None, loader: WindowLoader
) -> dict[str, np.ndarray]:
    """Predictions for one worm's test windows, with the persistence forecast alongside."""
    if model is None:
        x, y = stack_windows(loader)
        if run.model == "persistence":
            pred = persistence_forecast(x, run.horizon)
        else:
            linear = LinearModel(run.task, model_config("linear", run.model_params), run.horizon)
            linear.params = {k: v.numpy() for k, v in ckpt["linear"].items()}
            if run.task == "forecast":
                pred = linear.predict(x)
            else:  # probabilities over all classes; those unseen in training get 0
                scores = np.full((len(x), len(loader.ds.classes)), -np.inf)
                scores[:, linear.params["classes"]] = linear.predict(x)
                pred = torch.softmax(torch.from_numpy(scores), dim=1).numpy()
        out = {
            "y_true": y,
            "y_pred": pred,
            "mask": np.ones(x.shape[:2], dtype=bool),
            "x_last": x[:, :, -1, 0],
            "start": loader.start_of,
            "edge": None,
        }
    else:
        parts = predict_neural(run, model, loader)
        out = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    if run.task == "forecast":
        out["persistence"] = np.repeat(out["x_last"][:, :, None], run.horizon, axis=2)
    return out


def _write_predictions(
    path: Path,
    run: RunConfig,
    ds,
    per_worm: dict[int, dict[str, np.ndarray]],
    edges: dict[int, np.ndarray],
) -> None:
    with files.atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(
            task=run.task,
            protocol=run.protocol,
            model=run.model,
            fold=run.fold,
            seed=run.seed,
            window=run.window,
            horizon=run.horizon,
            node_set=ds.node_set,
        )
        files.write_strings(h5, "classes", ds.classes)
        for w, p in per_worm.items():
            g = h5.create_group(f"worms/{w}")
            g.create_dataset("start", data=p["start"])
            g.create_dataset("y_true", data=p["y_true"], compression="gzip")
            g.create_dataset("y_pred", data=p["y_pred"].astype(np.float32), compression="gzip")
            files.write_strings(g, "names", ds.worms[w].names)
            g.attrs["fps"] = ds.worms[w].fps
            if run.task == "forecast":
                g.create_dataset(
                    "persistence", data=p["persistence"].astype(np.float32), compression="gzip"
                )
                g.create_dataset("mask", data=p["mask"])
        for w, prob in edges.items():
            g = h5.create_group(f"edges/{w}")
            g.create_dataset("prob", data=prob.astype(np.float32))
            files.write_strings(g, "names", ds.worms[w].names)


def main(argv: list[str] | None = None) -> None:
    args, run = parse_run(argv, "Evaluate one model's trained seeds on their fold's test segments.")
    with command_errors():
        runs = seed_runs(args, run, ["model_file", "metrics", "predictions"])
        for seed_run, (model_file, metrics, predictions) in runs:
            run_evaluation(
                seed_run,
                args.traces,
                args.labels,
                args.folds,
                model_file,
                metrics,
                predictions,
                args.truth,
            )


if __name__ == "__main__":
    main()
