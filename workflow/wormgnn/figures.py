"""The study's figures, one function each, drawn from fold outputs and aggregates.

``python -m wormgnn.figures <figure> ...`` writes ``<out>.png`` (and ``<out>.pdf`` for the
paper figures, 1-6):

1. ``forecast-traces``: true activity of a held-out worm's neurons against each model's
   forecast at horizons 1 and H.
2. ``forecast-score``: forecast score against horizon per model, with CI bands.
3. ``ethogram``: a held-out worm's true state sequence above each model's prediction.
4. ``confusion``: row-normalised confusion matrices per model, summed over folds/seeds.
5. ``comparison``: headline metric per model with 95 % CIs, ``lowo`` beside ``within``.
6. ``graph``: the ``gnn``'s averaged edge probabilities beside the reference graph.
7. ``rulegraph``: the pipeline's rules, from ``snakemake --rulegraph`` (drawn here, so
   Graphviz is not needed).

Style: one matplotlib style for all; each model keeps one colour (Okabe-Ito, safe for
colour-blind readers), one line style and one marker, so lines stay distinguishable in
greyscale; class colours come from ``cividis``, whose lightness rises monotonically.
Every function returns what it drew, so tests can check the encoding.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

from wormgnn import files  # noqa: E402
from wormgnn.aggregate import model_order, read_summary  # noqa: E402
from wormgnn.connectome import NEURON_TYPES, load_connectome, neuron_types  # noqa: E402
from wormgnn.layout import layered_layout  # noqa: E402
from wormgnn.metrics import edge_scores  # noqa: E402

log = logging.getLogger("wormgnn.figures")

DPI = 150
#: Okabe & Ito (2008) colours; line style and marker make each model readable in grey.
MODEL_STYLE: dict[str, dict[str, Any]] = {
    "persistence": {"color": "#999999", "linestyle": (0, (1, 1)), "marker": "x"},
    "linear": {"color": "#E69F00", "linestyle": "--", "marker": "s"},
    "mlp": {"color": "#56B4E9", "linestyle": "-.", "marker": "^"},
    "lstm": {"color": "#009E73", "linestyle": (0, (5, 1, 1, 1, 1, 1)), "marker": "D"},
    "gnn": {"color": "#D55E00", "linestyle": "-", "marker": "o"},
    "gnn_connectome": {"color": "#0072B2", "linestyle": (0, (3, 1)), "marker": "v"},
    # the graph ablations: the last Okabe-Ito hue and black, told apart by line and marker
    "gnn_shuffled": {"color": "#CC79A7", "linestyle": (0, (3, 1, 1, 1)), "marker": "h"},
    "gnn_full": {"color": "#000000", "linestyle": (0, (6, 2)), "marker": "X"},
    "gnn_nograph": {"color": "#000000", "linestyle": (0, (1, 2)), "marker": "P"},
}
PROTOCOL_STYLE = {
    "lowo": {"marker": "o", "fillstyle": "full", "label": "lowo (unseen worm)"},
    "within": {"marker": "s", "fillstyle": "none", "label": "within (same worm, later time)"},
}
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": DPI,
}


def model_style(model: str) -> dict[str, Any]:
    return MODEL_STYLE.get(model, {"color": "#000000", "linestyle": ":", "marker": "*"})


def class_colours(n: int) -> list:
    """``n`` class colours of distinct lightness (cividis), readable in greyscale."""
    return [plt.get_cmap("cividis")(v) for v in np.linspace(0.1, 0.95, n)]


def focus_on_means(
    ax: plt.Axes,
    means: list[float],
    bounds: tuple[float, float],
    reference: float | None = 0.0,
) -> None:
    """Limit the y axis to the means plus a margin, within the metric's bounds: with
    few folds a t interval can be many times wider than the differences between
    models, and would flatten them. Intervals then run off the axis (captions say so).
    ``reference`` stays on the axis (the forecast score's 0 is persistence); None for a
    metric without one (macro-F1, whose 0 would flatten models at 0.92-0.94)."""
    means = [m for m in means if np.isfinite(m)]
    if not means:
        return
    kept = means + ([] if reference is None else [reference])
    low, high = min(kept), max(kept)
    pad = max(0.1, 0.5 * (high - low))
    ax.set_ylim(max(bounds[0], low - pad), min(bounds[1], high + pad))


def save(fig: plt.Figure, out: Path, pdf: bool = True) -> list[Path]:
    """``out``.png (and .pdf), atomically; the size is the figure's size at DPI."""
    written = []
    for ext in ("png", "pdf") if pdf else ("png",):
        path = out.with_suffix(f".{ext}")
        with files.atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI)
        written.append(path)
    plt.close(fig)
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written


# --------------------------------------------------------------------------- readers
def read_predictions(path: Path) -> dict[str, Any]:
    """One ``predictions.h5`` as arrays: attributes, classes, and per test worm the
    windows' predictions; ``edges`` per worm for the GNNs."""
    with h5py.File(path, "r") as h5:
        out: dict[str, Any] = {
            "attrs": dict(h5.attrs),
            "classes": files.read_strings(h5["classes"]),
        }
        out["worms"] = {
            int(w): {k: (files.read_strings(v) if k == "names" else v[()]) for k, v in g.items()}
            | {"fps": float(g.attrs["fps"])}
            for w, g in h5["worms"].items()
        }
        out["edges"] = {
            int(w): {"prob": g["prob"][()], "names": files.read_strings(g["names"])}
            for w, g in h5.get("edges", {}).items()
        }
    return out


def subject_of(attrs: dict[str, Any], worm: int) -> str:
    """What a fold's test worm is, for a title: the whole worm where it was held out, its
    test block under ``within`` (files written before the protocol was recorded: held out)."""
    if str(attrs.get("protocol", "")) == "within":
        return f"the test block of worm {worm} (fold {int(attrs['fold'])})"
    return f"held-out worm {worm}"


def _label_of(path: Path) -> str:
    """The model of a predictions/metrics path: .../{model}/fold{k}/seed{s}/file."""
    return Path(path).parents[2].name


# --------------------------------------------------------------------------- 1 traces
def forecast_traces(
    predictions: list[Path], out: Path, n_neurons: int = 4, span_s: float = 120.0
) -> dict[str, Any]:
    """True activity against each model's forecast at horizon 1 and H, for the most
    variable identified neurons of the first test worm in the first file."""
    preds = {_label_of(p): read_predictions(p) for p in predictions}
    first = next(iter(preds.values()))
    worm = min(first["worms"])
    w0 = first["worms"][worm]
    window, horizon = int(first["attrs"]["window"]), int(first["attrs"]["horizon"])
    subject = subject_of(first["attrs"], worm)
    names = w0["names"]
    named = [i for i, n in enumerate(names) if n]
    pool = named or list(range(len(names)))
    variance = w0["y_true"][:, pool, 0].var(0)
    chosen = [pool[i] for i in np.argsort(-variance, kind="stable")[:n_neurons]]
    order = np.argsort(w0["start"], kind="stable")
    starts = w0["start"][order]
    keep = order[starts - starts[0] <= span_s * w0["fps"]]
    horizons = sorted({1, horizon})
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            len(chosen),
            len(horizons),
            figsize=(5.0 * len(horizons), 1.7 * len(chosen) + 0.9),
            sharex=True,
            squeeze=False,
            layout="constrained",
        )
        for col, h in enumerate(horizons):
            t = (w0["start"][keep] + window - 1 + h) / w0["fps"]
            for row, node in enumerate(chosen):
                ax = axes[row, col]
                ax.plot(t, w0["y_true"][keep, node, h - 1], color="black", lw=1.6, label="true")
                for model, p in preds.items():
                    wp = p["worms"][worm]
                    if node >= wp["y_pred"].shape[1] or wp["names"][node] != names[node]:
                        continue
                    s = model_style(model)
                    ax.plot(
                        t,
                        wp["y_pred"][keep, node, h - 1],
                        color=s["color"],
                        linestyle=s["linestyle"],
                        lw=1.1,
                        label=model,
                    )
                label = names[node] or f"ROI {node}"
                ax.set_ylabel(f"{label}\nΔF/F (z)")
                if row == 0:
                    ax.set_title(f"{subject}: horizon {h} frame{'s' if h > 1 else ''} ahead")
        for ax in axes[-1]:
            ax.set_xlabel("time since recording start (s)")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncol=len(labels), frameon=False)
        save(fig, out)
    return {
        "worm": worm,
        "subject": subject,
        "neurons": [names[i] for i in chosen],
        "models": list(preds),
    }


# --------------------------------------------------------------------------- 2 score
def forecast_score(
    summaries: dict[str, Path], out: Path, frame_s: float | None = None
) -> dict[str, Any]:
    """Score (1 − MSE/MSE(persistence)) against horizon, one panel per protocol."""
    drawn: dict[str, dict[str, list[float]]] = {}
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            1,
            len(summaries),
            figsize=(4.2 * len(summaries), 3.4),
            squeeze=False,
            layout="constrained",
            sharey=True,
        )
        for ax, (protocol, path) in zip(axes[0], summaries.items(), strict=True):
            rows = read_summary(path)
            drawn[protocol] = {}
            ax.axhline(0.0, color="black", lw=1.0, linestyle=(0, (1, 1)), label="persistence")
            for model in dict.fromkeys(r["model"] for r in rows):
                if model == "persistence":
                    continue
                mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["horizon"])
                h = np.array([r["horizon"] for r in mine])
                mean = np.array([r["score_mean"] for r in mine])
                s = model_style(model)
                ax.plot(
                    h,
                    mean,
                    color=s["color"],
                    linestyle=s["linestyle"],
                    marker=s["marker"],
                    ms=4,
                    label=model,
                )
                low = np.array([r["score_ci_low"] for r in mine])
                high = np.array([r["score_ci_high"] for r in mine])
                if np.isfinite(low).all():
                    ax.fill_between(h, low, high, color=s["color"], alpha=0.2, lw=0)
                drawn[protocol][model] = mean.tolist()
            unit = f" (1 frame = {frame_s:.2g} s)" if frame_s else ""
            ax.set_xlabel(f"horizon (frames){unit}")
            ax.set_title(PROTOCOL_STYLE.get(protocol, {}).get("label", protocol))
            ax.xaxis.get_major_locator().set_params(integer=True)
        focus_on_means(
            axes[0, 0], [v for d in drawn.values() for m in d.values() for v in m], (-np.inf, 1.0)
        )
        axes[0, 0].set_ylabel("forecast score\n1 − MSE / MSE(persistence)")
        axes[0, -1].legend(loc="best")
        save(fig, out)
    return drawn


# --------------------------------------------------------------------------- 3 ethogram
def _runs(t: np.ndarray, codes: np.ndarray, dt: float) -> list[tuple[float, float, int]]:
    """(start, width, class) of each run of one class over consecutive frames."""
    if t.size == 0:
        return []
    breaks = np.flatnonzero((np.diff(codes) != 0) | (np.diff(t) > 1.5 * dt)) + 1
    edges = np.concatenate([[0], breaks, [t.size]])
    return [
        (t[a], t[b - 1] - t[a] + dt, int(codes[a]))
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]


def ethogram(predictions: list[Path], out: Path) -> dict[str, Any]:
    """The first test worm's true states (top row) above each model's predicted states."""
    from sklearn.metrics import f1_score

    preds = {_label_of(p): read_predictions(p) for p in predictions}
    first = next(iter(preds.values()))
    classes, window = first["classes"], int(first["attrs"]["window"])
    worm = min(first["worms"])
    w0 = first["worms"][worm]
    dt = 1.0 / w0["fps"]
    rows = [("true", w0["y_true"], w0["start"])]
    f1 = {}
    for model, p in preds.items():
        wp = p["worms"][worm]
        predicted = wp["y_pred"].argmax(1)
        f1[model] = float(f1_score(wp["y_true"], predicted, average="macro"))
        rows.append((f"{model}\nmacro-F1 {f1[model]:.2f}", predicted, wp["start"]))
    colours = class_colours(len(classes))
    with plt.rc_context(RC | {"axes.grid": False}):
        fig, ax = plt.subplots(figsize=(9.0, 0.55 * len(rows) + 1.4), layout="constrained")
        for i, (_, codes, start) in enumerate(rows):
            order = np.argsort(start, kind="stable")
            t = (start[order] + window - 1) * dt
            for t0, width, c in _runs(t, codes[order], dt):
                ax.broken_barh([(t0, width)], (i - 0.4, 0.8), color=colours[c], lw=0)
        ax.axhline(0.5, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlabel("time since recording start (s)")
        subject = subject_of(first["attrs"], worm)
        ax.set_title(f"Behavioural state of {subject}: true (top) and predicted")
        fig.legend(
            [Patch(color=c) for c in colours],
            classes,
            title="state",
            loc="outside right upper",
            frameon=False,
        )
        save(fig, out)
    return {"worm": worm, "subject": subject, "rows": [r[0] for r in rows], "macro_f1": f1}


# --------------------------------------------------------------------------- 4 confusion
def confusion(metrics: list[Path], out: Path) -> dict[str, dict[str, np.ndarray]]:
    """Row-normalised confusion matrices (rows: true class), one panel per (protocol,
    model), each summed over its folds and seeds before normalising."""
    summed: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    runs: dict[tuple[str, str], int] = defaultdict(int)
    classes: list[str] = []
    for path in metrics:
        m = files.read_json(path)
        cm = m["confusion_matrix"]
        classes = cm["classes"]
        matrix = np.array(cm["matrix"], dtype=np.float64)
        prev = summed[m["protocol"]].get(m["model"])
        summed[m["protocol"]][m["model"]] = matrix if prev is None else prev + matrix
        runs[m["protocol"], m["model"]] += 1
    protocols = sorted(
        summed, key=lambda p: list(PROTOCOL_STYLE).index(p) if p in PROTOCOL_STYLE else 9
    )
    models = model_order(m for p in protocols for m in summed[p])
    normalised: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    with plt.rc_context(RC | {"axes.grid": False}):
        k = len(classes)
        fig, axes = plt.subplots(
            len(protocols),
            len(models),
            figsize=(2.3 * len(models) + 1.2, 2.5 * len(protocols) + 1.0),
            squeeze=False,
            layout="constrained",
        )
        image = None
        for r, protocol in enumerate(protocols):
            for c, model in enumerate(models):
                ax = axes[r, c]
                if model not in summed[protocol]:
                    ax.set_axis_off()
                    continue
                counts = summed[protocol][model]
                support = counts.sum(1, keepdims=True)
                norm = np.divide(
                    counts, support, out=np.full_like(counts, np.nan), where=support > 0
                )
                normalised[protocol][model] = norm
                image = ax.imshow(norm, vmin=0, vmax=1, cmap="cividis")
                for i in range(k):
                    for j in range(k):
                        if np.isfinite(norm[i, j]):
                            ax.text(
                                j,
                                i,
                                f"{norm[i, j]:.2f}",
                                ha="center",
                                va="center",
                                fontsize=7,
                                color="white" if norm[i, j] < 0.5 else "black",
                            )
                ax.set_xticks(range(k), classes, rotation=45, ha="right")
                ax.set_yticks(range(k), classes if c == 0 else [])
                ax.set_title(f"{model} ({protocol}, {runs[protocol, model]} runs)", fontsize=8)
                if r == len(protocols) - 1:
                    ax.set_xlabel("predicted state")
                if c == 0:
                    ax.set_ylabel("true state")
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true state's windows")
        save(fig, out)
    return dict(normalised)


# --------------------------------------------------------------------------- 5 comparison
def significant_vs_gnn(stats: Path) -> set[tuple[int | None, str]]:
    """(horizon, model) of every model whose paired difference from the ``gnn`` is
    significant after Holm's correction, from a ``stats.json``."""
    return {
        (c["horizon"], c["reference"])
        for c in files.read_json(stats)["comparisons"]
        if c["model"] == "gnn" and c.get("significant")
    }


def comparison(summaries: dict[tuple[str, str], Path], out: Path) -> dict[str, Any]:
    """Headline metric per model with 95 % CIs, lowo beside within: forecast score at
    horizons 1 and H, behaviour macro-F1. A star marks a model that differs from the
    ``gnn`` with a Holm-corrected p below ``alpha`` (the ``stats.json`` beside each
    summary). Returns per panel the plotted means, the starred points and the y limits."""
    panels: list[tuple[str, str, int | None]] = []  # (task, title, horizon)
    tables = {key: read_summary(path) for key, path in summaries.items()}
    starred = {
        key: significant_vs_gnn(path.with_name("stats.json"))
        if path.with_name("stats.json").exists()
        else set()
        for key, path in summaries.items()
    }
    stars: dict[str, list[str]] = {}
    tasks = dict.fromkeys(task for task, _ in summaries)
    if "forecast" in tasks:
        horizon = max(
            (r["horizon"] for (t, _), rows in tables.items() if t == "forecast" for r in rows),
            default=1,
        )
        panels.append(("forecast", "forecast score, horizon 1", 1))
        if horizon > 1:
            panels.append(("forecast", f"forecast score, horizon {horizon}", horizon))
    if "behaviour" in tasks:
        panels.append(("behaviour", "behaviour macro-F1", None))
    drawn: dict[str, Any] = {}
    limits: dict[str, tuple[float, float]] = {}
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            1,
            len(panels),
            figsize=(3.6 * len(panels) + 0.6, 3.6),
            squeeze=False,
            layout="constrained",
        )
        for ax, (task, title, h) in zip(axes[0], panels, strict=True):
            metric = "score" if task == "forecast" else "macro_f1"
            protocols = [p for t, p in summaries if t == task]
            rows = {p: [r for r in tables[task, p] if r["horizon"] == h] for p in protocols}
            models = list(dict.fromkeys(r["model"] for p in protocols for r in rows[p]))
            offsets = np.linspace(-0.15, 0.15, len(protocols)) if len(protocols) > 1 else [0.0]
            drawn[title] = {}
            for off, protocol in zip(offsets, protocols, strict=True):
                ps = PROTOCOL_STYLE.get(
                    protocol, {"marker": "o", "fillstyle": "full", "label": protocol}
                )
                for i, model in enumerate(models):
                    row = next((r for r in rows[protocol] if r["model"] == model), None)
                    if row is None:
                        continue
                    mean = row[f"{metric}_mean"]
                    low, high = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
                    err = [[mean - low], [high - mean]] if np.isfinite(low) else None
                    colour = model_style(model)["color"]
                    ax.errorbar(
                        i + off,
                        mean,
                        yerr=err,
                        color=colour,
                        marker=ps["marker"],
                        fillstyle=ps["fillstyle"],
                        ms=6,
                        capsize=3,
                        lw=1.2,
                        linestyle="none",
                    )
                    drawn[title][f"{model}/{protocol}"] = mean
                    if (h, model) in starred[task, protocol]:  # beside the point
                        ax.annotate(
                            "*",
                            (i + off, mean),
                            xytext=(4, 0),
                            textcoords="offset points",
                            ha="left",
                            va="center",
                            color=colour,
                            fontsize=12,
                        )
                        stars.setdefault(title, []).append(f"{model}/{protocol}")
            if task == "forecast":
                ax.axhline(0.0, color="black", lw=0.8, linestyle=(0, (1, 1)))
            ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
            ax.set_title(title)
            ax.set_ylabel("score (persistence = 0)" if task == "forecast" else "macro-F1")
            # a score is at most 1 and unbounded below; an F1 lies in [0, 1]
            bounds = (-np.inf, 1.05) if task == "forecast" else (0.0, 1.0)
            reference = 0.0 if task == "forecast" else None
            focus_on_means(ax, list(drawn[title].values()), bounds, reference)
            limits[title] = ax.get_ylim()
            ax.set_xlabel("model")
        handles = [
            plt.Line2D(
                [],
                [],
                color="black",
                marker=s["marker"],
                fillstyle=s["fillstyle"],
                linestyle="none",
                label=s["label"],
            )
            for p, s in PROTOCOL_STYLE.items()
            if any(q == p for _, q in summaries)
        ]
        # on one panel the title would be wider than the figure: two lines there
        sep = "\n" if len(panels) == 1 else "; "
        fig.legend(
            handles=handles,
            loc="outside upper center",
            ncol=2,
            frameon=False,
            title=f"mean and 95 % CI over folds × seeds{sep}* differs from gnn (Holm-corrected)",
        )
        save(fig, out)
    return {
        title: {"means": means, "ylim": limits[title], "starred": stars.get(title, [])}
        for title, means in drawn.items()
    }


# --------------------------------------------------------------------------- 6 graph
def average_edges(predictions: list[Path]) -> tuple[list[str], np.ndarray]:
    """Edge probabilities averaged, by neuron name, over every test worm of every file.
    Unnamed ROIs are left out. Returns (names, (n, n) [sender, receiver])."""
    total: dict[tuple[str, str], float] = defaultdict(float)
    count: dict[tuple[str, str], int] = defaultdict(int)
    names: dict[str, None] = {}
    for path in predictions:
        for e in read_predictions(path)["edges"].values():
            idx = [i for i, n in enumerate(e["names"]) if n]
            for i in idx:
                names[e["names"][i]] = None
                for j in idx:
                    if i != j:
                        total[e["names"][i], e["names"][j]] += float(e["prob"][i, j])
                        count[e["names"][i], e["names"][j]] += 1
    order = list(names)
    mean = np.full((len(order), len(order)), np.nan)
    for (s, r), v in total.items():
        mean[order.index(s), order.index(r)] = v / count[s, r]
    return order, mean


def reference_graph(
    names: list[str], truth: Path | None, connectome: str
) -> tuple[str, np.ndarray, np.ndarray]:
    """(title, adjacency [sender, receiver], known) of the reference among ``names``."""
    if truth is not None:
        with h5py.File(truth, "r") as h5:
            neurons = files.read_strings(h5["neurons"])
            adjacency = h5["adjacency"][()]
        pos = {n: i for i, n in enumerate(neurons)}
        known = np.array([n in pos for n in names])
        idx = np.array([pos.get(n, 0) for n in names])
        ref = adjacency[np.ix_(idx, idx)] & known[:, None] & known[None, :]
        return "ground truth (simulated graph)", ref, known
    conn = load_connectome(connectome)
    index = conn.index()
    return (
        f"connectome ({conn.source})",
        conn.restrict(names),
        np.array([n in index for n in names]),
    )


def graph(
    predictions: list[Path],
    out: Path,
    truth: Path | None = None,
    connectome: str = "Cook2019Herm",
    metrics: list[Path] | None = None,
) -> dict[str, Any]:
    """Inferred edge probabilities (averaged over runs and test worms) beside the
    reference graph, both ordered by neuron type then name.

    The title gives two edge AUROCs: the mean of the runs' own AUROCs (their
    ``metrics.json``, by default beside each predictions file: the number summary.csv
    averages), and that of the averaged probabilities drawn, which pools the runs."""
    metrics = metrics or [Path(p).with_name("metrics.json") for p in predictions]
    run_aurocs = [files.read_json(m).get("edge_auroc") for m in metrics]
    run_aurocs = [a for a in run_aurocs if a is not None]
    names, prob = average_edges(predictions)
    if not names:
        raise ValueError("the gnn predictions hold no edge probabilities between named neurons")
    types = neuron_types(names)
    order = sorted(range(len(names)), key=lambda i: (NEURON_TYPES.index(types[i]), names[i]))
    names = [names[i] for i in order]
    types = [types[i] for i in order]
    prob = prob[np.ix_(order, order)]
    title, ref, known = reference_graph(names, truth, connectome)
    scores = edge_scores([np.nan_to_num(prob)], [ref], [known])
    auroc = scores["edge_auroc"]
    runs_mean = float(np.mean(run_aurocs)) if run_aurocs else None
    first = Path(predictions[0])  # .../{task}/{protocol}/gnn/fold{k}/seed{s}/predictions.h5
    task, protocol = first.parents[4].name, first.parents[3].name
    with plt.rc_context(RC | {"axes.grid": False}):
        fig, axes = plt.subplots(1, 2, figsize=(11.0, 5.6), layout="constrained")
        shown = [
            (axes[0], prob, "inferred by gnn: P(edge)", "viridis"),
            (axes[1], ref.astype(float), title, "Greys"),
        ]
        for ax, matrix, panel_title, cmap in shown:
            # the inferred panel spans its own range: probabilities often sit near the prior
            low, high = (0, 1) if cmap == "Greys" else (np.nanmin(prob), np.nanmax(prob))
            image = ax.imshow(matrix, vmin=low, vmax=high, cmap=cmap, interpolation="nearest")
            ax.set_title(panel_title)
            ticks = range(len(names))
            size = 6 if len(names) <= 45 else 4
            ax.set_xticks(ticks, names, rotation=90, fontsize=size)
            ax.set_yticks(ticks, names, fontsize=size)
            ax.set_xlabel("receiving neuron")
            ax.set_ylabel("sending neuron")
            bounds = [i for i in range(1, len(types)) if types[i] != types[i - 1]]
            for b in bounds:
                ax.axhline(b - 0.5, color="white" if cmap == "viridis" else "#D55E00", lw=0.8)
                ax.axvline(b - 0.5, color="white" if cmap == "viridis" else "#D55E00", lw=0.8)
            if cmap == "viridis":
                fig.colorbar(
                    image, ax=ax, shrink=0.7, label="edge probability (mean over runs; own range)"
                )
        groups = " | ".join(dict.fromkeys(types))

        def text(value: float | None) -> str:
            return f"{value:.3f}" if value is not None else "n/a"

        fig.suptitle(
            f"Graph inferred by the {task} gnn ({protocol}, {len(predictions)} runs) vs "
            f"{title}; {len(names)} neurons, ordered {groups}\n"
            f"edge AUROC {text(runs_mean)} (mean of the {len(run_aurocs)} runs' AUROCs, as "
            f"in summary.csv); {text(auroc)} for the averaged probabilities shown"
        )
        save(fig, out)
    return {
        "names": names,
        "types": types,
        "prob": prob,
        "reference": ref,
        "task": task,
        "protocol": protocol,
        "edge_auroc_runs_mean": runs_mean,
    } | scores


# --------------------------------------------------------------------------- 7 rules
def parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Nodes (id → label) and edges of Snakemake's rule-graph DOT output."""
    nodes = dict(re.findall(r'^\s*(\w+)\s*\[\s*label\s*=\s*"([^"]+)"', text, flags=re.M))
    edges = re.findall(r"^\s*(\w+)\s*->\s*(\w+)", text, flags=re.M)
    return nodes, edges


#: Geometry of the rule graph, in data units: box size, and the distance between layers.
BOX_W, BOX_H, LAYER_GAP = 0.92, 0.42, 1.0


def _route(points: list[tuple[float, float]], steps: int = 16) -> np.ndarray:
    """A smooth path through ``points`` (alternately a box or layer edge, then the next
    layer's): cubic Béziers with vertical tangents between layers, straight lines where
    an edge passes through a layer in its own slot."""
    path = [np.array(points[0])]
    t = np.linspace(0.0, 1.0, steps)[1:, None]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 == x1:
            path.append(np.array([[x1, y1]]))
            continue
        mid = (y0 + y1) / 2
        p0, p1, p2, p3 = (np.array(p) for p in ((x0, y0), (x0, mid), (x1, mid), (x1, y1)))
        path.append(
            (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
        )
    return np.vstack(path)


def _wrap(label: str, width: int = 15) -> str:
    """Break a long rule name after its first underscore (``figure_`` + the figure)."""
    head, sep, tail = label.partition("_")
    return f"{head}_\n{tail}" if len(label) > width and sep else label


def rulegraph(dot: Path, out: Path) -> dict[str, Any]:
    """A layered drawing of the rule graph (:mod:`wormgnn.layout`): each rule in the
    layer of its longest path from a source, arrows along the data flow (top to bottom),
    routed between the boxes of the layers they cross."""
    nodes, edges = parse_dot(dot.read_text())
    if not nodes:
        raise ValueError(f"{dot}: no rules in the graph")
    lay = layered_layout(list(nodes), edges, node_width=BOX_W + 0.18)
    y = {n: -LAYER_GAP * k for n, k in lay.layer.items()}
    boxes = {
        n: (lay.x[n] - BOX_W / 2, y[n] - BOX_H / 2, lay.x[n] + BOX_W / 2, y[n] + BOX_H / 2)
        for n in nodes
    }
    routes = {}
    for (a, b), chain in lay.routes.items():
        points = [(lay.x[a], y[a] - BOX_H / 2)]
        for dummy in chain[1:-1]:  # straight down through its own slot of the layer
            points += [(lay.x[dummy], y[dummy] + BOX_H / 2), (lay.x[dummy], y[dummy] - BOX_H / 2)]
        points.append((lay.x[b], y[b] + BOX_H / 2))
        routes[nodes[a], nodes[b]] = _route(points)
    final = {n for n in nodes if not any(a == n for a, _ in edges)}  # the targets (all)
    width = max(lay.x.values()) + BOX_W
    n_layers = len(lay.order)
    with plt.rc_context(RC | {"axes.grid": False}):
        fig, ax = plt.subplots(
            figsize=(max(6.0, 1.45 * width), 1.15 * n_layers + 1.0), layout="constrained"
        )
        for (_, b), path in zip(lay.routes, routes.values(), strict=True):
            light = b in final
            ax.add_patch(
                FancyArrowPatch(
                    path=MplPath(path),
                    arrowstyle="-|>",
                    mutation_scale=9,
                    color="#BBBBBB" if light else "#444444",
                    lw=0.8 if light else 1.1,
                    zorder=1,
                )
            )
        for n, (x0, y0, x1, y1) in boxes.items():
            ax.add_patch(
                FancyBboxPatch(
                    (x0, y0),
                    x1 - x0,
                    y1 - y0,
                    boxstyle="round,pad=0.02",
                    fc="#E8F1FA",
                    ec="#0072B2",
                    zorder=2,
                )
            )
            ax.text(lay.x[n], y[n], _wrap(nodes[n]), ha="center", va="center", fontsize=8)
        ax.set_xlim(-0.1, width + 0.1)
        ax.set_ylim(-LAYER_GAP * (n_layers - 1) - 0.5, 0.5)
        ax.set_axis_off()
        ax.set_title(
            "wormgnn rule graph (snakemake --rulegraph): arrows follow the data; "
            "light arrows feed the final target"
        )
        save(fig, out, pdf=False)
    return {
        "rules": sorted(nodes.values()),
        "layers": {nodes[n]: lay.layer[n] for n in nodes},
        "boxes": {nodes[n]: box for n, box in boxes.items()},
        "routes": routes,
        "crossings": lay.crossings,
    }


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.figures", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="figure", required=True)
    p = sub.add_parser("forecast-traces", help="1: forecasts of a held-out worm")
    p.add_argument("--predictions", type=Path, nargs="+", required=True)
    p.add_argument("--neurons", type=int, default=4)
    p.add_argument("--span-s", type=float, default=120.0)
    p = sub.add_parser("forecast-score", help="2: score against horizon")
    p.add_argument("--summary", type=Path, nargs="+", required=True, help=SUMMARY_HELP)
    p.add_argument("--frame-s", type=float, default=None)
    p = sub.add_parser("ethogram", help="3: true and predicted states")
    p.add_argument("--predictions", type=Path, nargs="+", required=True)
    p = sub.add_parser("confusion", help="4: confusion matrices")
    p.add_argument("--metrics", type=Path, nargs="+", required=True)
    p = sub.add_parser("comparison", help="5: headline metrics, lowo beside within")
    p.add_argument("--summary", type=Path, nargs="+", required=True, help=SUMMARY_HELP)
    p = sub.add_parser("graph", help="6: inferred graph beside the reference")
    p.add_argument("--predictions", type=Path, nargs="+", required=True)
    p.add_argument("--truth", type=Path, default=None)
    p.add_argument("--connectome", default="Cook2019Herm")
    p.add_argument("--metrics", type=Path, nargs="+", help="the runs' metrics.json")
    p = sub.add_parser("rulegraph", help="7: the pipeline's rule graph")
    p.add_argument("--dot", type=Path, required=True, help="snakemake --rulegraph output")
    for p in sub.choices.values():
        p.add_argument("--out", type=Path, required=True, help="output path (suffix ignored)")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        _dispatch(args)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


SUMMARY_HELP = "summary.csv files at results/<dataset>/<task>/<protocol>/summary.csv"


def summary_key(path: Path) -> tuple[str, str]:
    """(task, protocol) of ``results/<dataset>/<task>/<protocol>/summary.csv``."""
    task, protocol = path.parent.parent.name, path.parent.name
    if task not in ("forecast", "behaviour"):
        raise ValueError(f"{path}: expected results/<dataset>/<task>/<protocol>/summary.csv")
    return task, protocol


def _dispatch(args: argparse.Namespace) -> None:
    if args.figure == "forecast-traces":
        forecast_traces(args.predictions, args.out, args.neurons, args.span_s)
    elif args.figure == "forecast-score":
        forecast_score({summary_key(p)[1]: p for p in args.summary}, args.out, args.frame_s)
    elif args.figure == "ethogram":
        ethogram(args.predictions, args.out)
    elif args.figure == "confusion":
        confusion(args.metrics, args.out)
    elif args.figure == "comparison":
        summaries = {summary_key(p): p for p in args.summary}
        comparison(summaries, args.out)
    elif args.figure == "graph":
        graph(args.predictions, args.out, args.truth, args.connectome, args.metrics)
    else:
        rulegraph(args.dot, args.out)


if __name__ == "__main__":
    main()
