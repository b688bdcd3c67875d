"""Baselines with no notion of structure: persistence and linear models.

- ``persistence`` copies the last observed frame to every horizon (forecast only): the
  floor every forecaster must clear.
- ``linear``: ridge regression from the window to the changes at horizons 1..H (direct
  multi-output), or multinomial logistic regression from the window to the class; the
  inputs are the last ``lags`` frames of the window (all of it by default).

The fitted parameters are plain arrays, so checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LinearConfig:
    """``models.linear`` in config.yaml."""

    alpha: float = 10.0  # ridge penalty (forecast)
    C: float = 0.05  # inverse L2 penalty of the logistic regression (behaviour)
    lags: int | None = None  # frames from the end of the window; None = the whole window
    max_iter: int = 2000


def persistence_forecast(x: np.ndarray, horizon: int) -> np.ndarray:
    """(B, N, W, C) windows → (B, N, H) copies of the last ΔF/F frame."""
    return np.repeat(x[:, :, -1, :1], horizon, axis=2)


def _features(x: np.ndarray, lags: int | None) -> np.ndarray:
    """(B, N, W, C) → (B, N * lags * C), the flattened end of each window."""
    if lags:
        x = x[:, :, -lags:]
    return x.reshape(x.shape[0], -1)


class LinearModel:
    """Ridge (forecast) or logistic regression (behaviour) on flattened windows."""

    def __init__(self, task: str, cfg: LinearConfig, horizon: int) -> None:
        self.task = task
        self.cfg = cfg
        self.horizon = horizon
        self.params: dict[str, np.ndarray] = {}

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int = 0) -> LinearModel:
        # scikit-learn is imported here, not by every job that imports this module
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.preprocessing import StandardScaler

        feats = _features(x, self.cfg.lags)
        if self.task == "forecast":
            target = (y - x[:, :, -1:, 0]).reshape(len(y), -1)  # changes, (B, N * H)
            ridge = Ridge(alpha=self.cfg.alpha).fit(feats, target)
            self.params = {"coef": ridge.coef_, "intercept": np.atleast_1d(ridge.intercept_)}
        else:
            scaler = StandardScaler().fit(feats)  # fitted on training windows only
            clf = LogisticRegression(
                C=self.cfg.C, max_iter=self.cfg.max_iter, class_weight="balanced", random_state=seed
            )
            clf.fit(scaler.transform(feats), y)
            self.params = {
                "coef": clf.coef_,
                "intercept": clf.intercept_,
                "classes": clf.classes_,
                "mean": scaler.mean_,
                "scale": scaler.scale_,
            }
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Forecast (B, N, H) values, or behaviour (B, K) class scores."""
        feats = _features(x, self.cfg.lags)
        p = self.params
        if self.task == "forecast":
            change = feats @ p["coef"].T + p["intercept"]
            return x[:, :, -1:, 0] + change.reshape(len(x), x.shape[1], self.horizon)
        scores = ((feats - p["mean"]) / p["scale"]) @ p["coef"].T + p["intercept"]
        if scores.shape[1] == 1:  # two classes: sklearn keeps one column
            scores = np.hstack([-scores, scores])
        return scores

    def predict_classes(self, x: np.ndarray) -> np.ndarray:
        return self.params["classes"][self.predict(x).argmax(axis=1)]
