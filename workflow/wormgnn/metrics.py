"""Scores of predictions, free of torch so that aggregation and figures can use them.

- :func:`forecast_metrics`: per horizon ``mse``, ``mae``, ``r2`` and
  ``score = 1 - MSE / MSE(persistence)``.
- :func:`behaviour_metrics`: accuracy, balanced accuracy, macro-F1, per-class F1 and the
  confusion matrix (scikit-learn).
- :func:`edge_scores`: AUROC/AUPRC of edge probabilities against a reference graph.

scikit-learn is imported inside the functions that use it: its import takes about 2.5 s,
which every forecast ``evaluate`` job of a baseline would otherwise pay for nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def forecast_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, y_persist: np.ndarray
) -> dict[str, Any]:
    """Per-horizon metrics. Shapes: (M, H), one row per (window, real node). R² is
    scikit-learn's ``r2_score`` on one output (a test checks that they agree)."""
    per_h = []
    for h in range(y_true.shape[1]):
        t, p, q = y_true[:, h], y_pred[:, h], y_persist[:, h]
        mse = float(np.mean((p - t) ** 2))
        per_h.append(
            {
                "horizon": h + 1,
                "mse": mse,
                "mae": float(np.mean(np.abs(p - t))),
                "r2": r2(t, p),
                "persistence_mse": float(np.mean((q - t) ** 2)),
                "score": 1.0 - mse / float(np.mean((q - t) ** 2)),
            }
        )
    return {"per_horizon": per_h, "n_values": int(y_true.shape[0])}


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination of one output, as ``sklearn.metrics.r2_score`` (1
    for a perfect fit of a constant target, else 0 where the target is constant)."""
    residual = float(np.sum((y_true - y_pred) ** 2))
    total = float(np.sum((y_true - np.mean(y_true)) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


def behaviour_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn import metrics as skm

    labels = list(range(len(classes)))
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    per_class = skm.f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            skm.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "per_class_f1": {c: float(f) for c, f in zip(classes, per_class, strict=True)},
        "confusion_matrix": {
            "classes": classes,
            "matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
            "rows": "true class",
            "columns": "predicted class",
        },
        "support": {c: int((y_true == i).sum()) for i, c in enumerate(classes)},
        "n_windows": int(y_true.size),
    }


def edge_scores(
    prob: list[np.ndarray], truth: list[np.ndarray], known: list[np.ndarray]
) -> dict[str, Any]:
    """AUROC/AUPRC of edge probabilities, pooled over worms, on off-diagonal pairs of
    nodes with a known identity."""
    scores, targets = [], []
    for p, t, k in zip(prob, truth, known, strict=True):
        pair = k[:, None] & k[None, :] & ~np.eye(len(k), dtype=bool)
        scores.append(p[pair])
        targets.append(t[pair])
    from sklearn import metrics as skm

    s, t = np.concatenate(scores), np.concatenate(targets).astype(bool)
    if t.all() or not t.any():
        return {
            "edge_auroc": None,
            "edge_auprc": None,
            "n_pairs": int(t.size),
            "note": "the reference graph has only one class among the scored pairs",
        }
    return {
        "edge_auroc": float(skm.roc_auc_score(t, s)),
        "edge_auprc": float(skm.average_precision_score(t, s)),
        "n_pairs": int(t.size),
        "positive_fraction": float(t.mean()),
    }
