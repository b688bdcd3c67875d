"""Metrics computed without scikit-learn agree with scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import r2_score
from wormgnn.metrics import forecast_metrics, r2


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [
        (np.random.default_rng(0).normal(size=50), np.random.default_rng(1).normal(size=50)),
        (np.arange(10.0), np.arange(10.0) + 0.1),
        (np.ones(5), np.ones(5)),  # constant target, perfect fit
        (np.ones(5), np.arange(5.0)),  # constant target, imperfect fit
    ],
)
def test_r2_is_scikit_learns(y_true, y_pred):
    assert r2(y_true, y_pred) == pytest.approx(r2_score(y_true, y_pred), abs=1e-12)


def test_forecast_metrics_report_r2_per_horizon():
    rng = np.random.default_rng(2)
    t, p, q = (rng.normal(size=(40, 3)) for _ in range(3))
    per_h = forecast_metrics(t, p, q)["per_horizon"]
    assert [m["r2"] for m in per_h] == pytest.approx([r2_score(t[:, h], p[:, h]) for h in range(3)])
