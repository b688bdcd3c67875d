"""Each figure on tiny real fold outputs: a non-empty image of the expected size, and
what the figure encodes (rows summing to 1, the reference graph, the plotted means)."""

import json
from pathlib import Path

import h5py
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from wormgnn import aggregate, evaluate, figures, files
from wormgnn.aggregate import AggregateConfig
from wormgnn.train import RunConfig, run_training

FORECAST = ("persistence", "linear", "gnn")
BEHAVIOUR = ("linear", "gnn")


@pytest.fixture(scope="module")
def folds(tiny_results, tmp_path_factory):
    """lowo folds 0-1 of the tiny dataset: results/<d>/<task>/lowo/<model>/fold<k>/seed0/."""
    root = tmp_path_factory.mktemp("figures") / "results" / "tiny"
    t = tiny_results
    for task, models in (("forecast", FORECAST), ("behaviour", BEHAVIOUR)):
        for model in models:
            for fold in (0, 1):
                run = RunConfig(
                    dataset="tiny", task=task, protocol="lowo", model=model, fold=fold, seed=0,
                    window=8, horizon=3, training={"max_epochs": 1},
                    model_params={"hidden": 16, "message": 16} if model == "gnn" else {},
                )  # fmt: skip
                out = root / task / "lowo" / model / f"fold{fold}" / "seed0"
                out.mkdir(parents=True)
                run_training(
                    run, t["traces"], t["labels"], t["folds"], out / "model.pt", out / "h.csv"
                )
                evaluate.run_evaluation(
                    run, t["traces"], t["labels"], t["folds"], out / "model.pt",
                    out / "metrics.json", out / "predictions.h5", t["truth"],
                )  # fmt: skip
        metrics = sorted((root / task / "lowo").glob("*/fold*/seed0/metrics.json"))
        aggregate.run(
            metrics,
            AggregateConfig(),
            root / task / "lowo" / "summary.csv",
            root / task / "lowo" / "stats.json",
        )
    return root


def png_size(path):
    image = mpimg.imread(path)
    assert image.size and np.ptp(image) > 0, f"{path} is blank"
    return image.shape[1], image.shape[0]


def check_written(out, figsize, pdf=True):
    png = out.with_suffix(".png")
    width, height = png_size(png)
    assert abs(width - figsize[0] * figures.DPI) <= 1  # matplotlib truncates to pixels
    assert abs(height - figsize[1] * figures.DPI) <= 1
    if pdf:
        assert out.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    else:
        assert not out.with_suffix(".pdf").exists()


def preds(root, task, models, fold=0):
    return [root / task / "lowo" / m / f"fold{fold}" / "seed0" / "predictions.h5" for m in models]


def test_forecast_traces(folds, tmp_path):
    out = tmp_path / "traces.png"
    drawn = figures.forecast_traces(preds(folds, "forecast", ("linear", "gnn")), out, n_neurons=3)
    assert drawn["worm"] == 0 and drawn["models"] == ["linear", "gnn"]
    assert drawn["subject"] == "held-out worm 0"
    assert len(drawn["neurons"]) == 3 and all(drawn["neurons"])  # identified, by name
    check_written(out, (10.0, 1.7 * 3 + 0.9))


def test_forecast_score_plots_the_summary_means(folds, tmp_path):
    out = tmp_path / "score.png"
    summary = folds / "forecast" / "lowo" / "summary.csv"
    drawn = figures.forecast_score({"lowo": summary}, out, frame_s=1 / 3)
    rows = aggregate.read_summary(summary)
    gnn = [r["score_mean"] for r in rows if r["model"] == "gnn"]
    assert drawn["lowo"]["gnn"] == pytest.approx(gnn) and len(gnn) == 3
    assert "persistence" not in drawn["lowo"]  # it is the zero line
    check_written(out, (4.2, 3.4))


def test_ethogram_rows_and_scores(folds, tmp_path):
    out = tmp_path / "ethogram.png"
    drawn = figures.ethogram(preds(folds, "behaviour", BEHAVIOUR), out)
    assert drawn["rows"][0] == "true" and len(drawn["rows"]) == 3
    assert drawn["subject"] == "held-out worm 0"
    with h5py.File(preds(folds, "behaviour", ["linear"])[0], "r") as h5:
        truth, prob = h5["worms/0/y_true"][()], h5["worms/0/y_pred"][()]
    from sklearn.metrics import f1_score

    expected = f1_score(truth, prob.argmax(1), average="macro")
    assert drawn["macro_f1"]["linear"] == pytest.approx(expected)
    check_written(out, (9.0, 0.55 * 3 + 1.4))


def test_a_within_fold_is_titled_by_its_test_block_not_a_held_out_worm(folds, tmp_path):
    """Under ``within`` the test frames are a block of a worm that was also trained on."""
    paths = []
    for task, model in (("forecast", "linear"), ("behaviour", "linear")):
        copy = tmp_path / task / model / "fold0" / "seed0" / "predictions.h5"
        copy.parent.mkdir(parents=True)
        copy.write_bytes(preds(folds, task, [model])[0].read_bytes())
        with h5py.File(copy, "r+") as h5:
            assert h5.attrs["protocol"] == "lowo"
            h5.attrs["protocol"] = "within"
        paths.append(copy)
    traces = figures.forecast_traces(paths[:1], tmp_path / "traces.png", n_neurons=2)
    ethogram = figures.ethogram(paths[1:], tmp_path / "ethogram.png")
    assert traces["subject"] == ethogram["subject"] == "the test block of worm 0 (fold 0)"


def test_runs_of_the_ethogram():
    t = np.array([0.0, 1.0, 2.0, 3.0, 6.0, 7.0])
    codes = np.array([0, 0, 1, 1, 1, 2])
    assert figures._runs(t, codes, 1.0) == [
        (0.0, 2.0, 0),
        (2.0, 2.0, 1),
        (6.0, 1.0, 1),
        (7.0, 1.0, 2),
    ]


def test_confusion_rows_sum_to_one(folds, tmp_path):
    out = tmp_path / "confusion.png"
    metrics = sorted((folds / "behaviour").glob("lowo/*/fold*/seed0/metrics.json"))
    drawn = figures.confusion(metrics, out)
    summed = sum(
        np.array(json.loads(p.read_text())["confusion_matrix"]["matrix"])
        for p in metrics
        if "/gnn/" in p.as_posix()
    )
    norm = drawn["lowo"]["gnn"]
    present = summed.sum(1) > 0
    assert np.allclose(norm[present].sum(1), 1.0)
    assert np.allclose(norm[present], summed[present] / summed[present].sum(1, keepdims=True))
    assert np.isnan(norm[~present]).all()
    check_written(out, (2.3 * 2 + 1.2, 2.5 + 1.0))


def test_comparison_plots_means_for_each_protocol(folds, tmp_path):
    out = tmp_path / "comparison.png"
    summaries = {
        ("forecast", "lowo"): folds / "forecast/lowo/summary.csv",
        ("behaviour", "lowo"): folds / "behaviour/lowo/summary.csv",
    }
    drawn = figures.comparison(summaries, out)
    assert list(drawn) == [
        "forecast score, horizon 1",
        "forecast score, horizon 3",
        "behaviour macro-F1",
    ]
    rows = aggregate.read_summary(summaries["behaviour", "lowo"])
    linear = next(r for r in rows if r["model"] == "linear")
    means = drawn["behaviour macro-F1"]["means"]
    assert means["linear/lowo"] == pytest.approx(linear["macro_f1_mean"])
    check_written(out, (3.6 * 3 + 0.6, 3.6))


def test_comparison_stars_only_holm_significant_differences(folds, tmp_path):
    summary = tmp_path / "results/tiny/behaviour/lowo/summary.csv"
    summary.parent.mkdir(parents=True)
    summary.write_bytes((folds / "behaviour/lowo/summary.csv").read_bytes())
    comparisons = [  # raw p below alpha, corrected above: no star
        {"horizon": None, "model": "gnn", "reference": "linear", "p_value": 0.01,
         "p_holm": 0.07, "significant": False},
    ]  # fmt: skip
    files.write_json(summary.with_name("stats.json"), {"comparisons": comparisons})
    drawn = figures.comparison({("behaviour", "lowo"): summary}, tmp_path / "c.png")
    assert drawn["behaviour macro-F1"]["starred"] == []
    comparisons[0].update(p_holm=0.02, significant=True)
    files.write_json(summary.with_name("stats.json"), {"comparisons": comparisons})
    drawn = figures.comparison({("behaviour", "lowo"): summary}, tmp_path / "c.png")
    assert drawn["behaviour macro-F1"]["starred"] == ["linear/lowo"]


@pytest.mark.parametrize(
    "tasks", [("behaviour",), ("forecast",), ("forecast", "behaviour")], ids="-".join
)
def test_comparison_legend_fits_the_figure(folds, tmp_path, monkeypatch, tasks):
    """The legend's title is not cut off, however few panels (one: behaviour alone)."""
    drawn = {}

    def keep(fig, out, pdf=True):
        fig.canvas.draw()
        drawn["fig"], drawn["legend"] = fig.bbox, fig.legends[0].get_window_extent()
        plt.close(fig)

    monkeypatch.setattr(figures, "save", keep)
    summaries = {(task, "lowo"): folds / task / "lowo/summary.csv" for task in tasks}
    figures.comparison(summaries, tmp_path / "c.png")
    fig, legend = drawn["fig"], drawn["legend"]
    assert fig.x0 <= legend.x0 and legend.x1 <= fig.x1, (legend, fig)


def behaviour_summary_with(folds, tmp_path, means, below, above) -> Path:
    """The tiny study's behaviour summary with its two models at ``means`` and intervals
    from ``below`` under to ``above`` over each mean."""
    rows = aggregate.read_summary(folds / "behaviour/lowo/summary.csv")
    for row, mean in zip(rows, means, strict=True):
        row.update(macro_f1_mean=mean, macro_f1_ci_low=mean - below, macro_f1_ci_high=mean + above)
    out = tmp_path / "results/tiny/behaviour/lowo/summary.csv"
    out.parent.mkdir(parents=True)
    aggregate.write_summary(out, rows)
    return out


def test_comparison_keeps_a_bounded_metric_in_its_bounds(folds, tmp_path):
    """Macro-F1 near 0 with wide intervals: the axis still starts at 0, not below."""
    low = behaviour_summary_with(folds, tmp_path, (0.05, 0.12), 0.4, 0.4)
    drawn = figures.comparison({("behaviour", "lowo"): low}, tmp_path / "c.png")
    assert drawn["behaviour macro-F1"]["ylim"][0] == 0.0
    assert drawn["behaviour macro-F1"]["ylim"][1] <= 1.0


def test_comparison_zooms_in_on_close_macro_f1(folds, tmp_path):
    """Macro-F1 of 0.92-0.94 (as on the real fixture): the axis shows the differences
    instead of starting at 0; the forecast panel keeps persistence's 0 on its axis."""
    close = behaviour_summary_with(folds, tmp_path, (0.92, 0.94), 0.3, 0.05)
    forecast = folds / "forecast/lowo/summary.csv"
    summaries = {("behaviour", "lowo"): close, ("forecast", "lowo"): forecast}
    drawn = figures.comparison(summaries, tmp_path / "c.png")
    low, high = drawn["behaviour macro-F1"]["ylim"]
    assert 0.75 < low < 0.92 and 0.94 < high <= 1.0, (low, high)
    panels = [v for k, v in drawn.items() if k.startswith("forecast")]
    assert panels and all(v["ylim"][0] < 0.0 < v["ylim"][1] for v in panels), panels


def test_graph_shows_the_ground_truth_and_its_auroc(folds, tiny_results, tmp_path):
    out = tmp_path / "graph.png"
    paths = preds(folds, "forecast", ["gnn"]) + preds(folds, "forecast", ["gnn"], 1)
    drawn = figures.graph(paths, out, truth=tiny_results["truth"])
    with h5py.File(tiny_results["truth"], "r") as h5:
        neurons = [n.decode() for n in h5["neurons"][()]]
        adjacency = h5["adjacency"][()]
    idx = [neurons.index(n) for n in drawn["names"]]
    assert np.array_equal(drawn["reference"], adjacency[np.ix_(idx, idx)])
    order = [figures.NEURON_TYPES.index(t) for t in drawn["types"]]
    assert order == sorted(order)  # grouped by neuron type
    assert 0.0 <= drawn["edge_auroc"] <= 1.0
    runs = [json.loads(p.with_name("metrics.json").read_text())["edge_auroc"] for p in paths]
    assert drawn["edge_auroc_runs_mean"] == pytest.approx(np.mean(runs))  # as summary.csv
    assert (drawn["task"], drawn["protocol"]) == ("forecast", "lowo")
    assert np.isnan(np.diag(drawn["prob"])).all()  # no self-edges
    check_written(out, (11.0, 5.6))


def test_graph_needs_edges(folds, tmp_path):
    with pytest.raises(ValueError, match="no edge probabilities"):
        figures.graph(preds(folds, "forecast", ["linear"]), tmp_path / "g.png")


#: The rule graph of a finished tiny run (`snakemake --rulegraph`), as (rule, its inputs).
RULES = {
    "simulate": [],
    "resolved_config": [],
    "preprocess": ["simulate"],
    "align_labels": ["simulate", "preprocess"],
    "make_folds": ["preprocess"],
    "train": ["make_folds", "align_labels", "preprocess"],
    "evaluate": ["align_labels", "train", "simulate", "make_folds", "preprocess"],
    "aggregate": ["evaluate"],
    "rulegraph": ["make_folds", "resolved_config"],
    "figure_rulegraph": ["rulegraph"],
    "figure_forecast_score": ["aggregate"],
    "figure_comparison": ["aggregate"],
    "figure_forecast_traces": ["evaluate"],
    "figure_ethogram": ["evaluate"],
    "figure_confusion": ["evaluate"],
    "figure_graph": ["evaluate", "simulate"],
    "all": ["figure_comparison", "figure_graph", "evaluate", "figure_forecast_traces",
            "align_labels", "aggregate", "figure_rulegraph", "figure_ethogram"],
}  # fmt: skip


def rule_dot(rules: dict[str, list[str]]) -> str:
    ids = {name: i for i, name in enumerate(rules)}
    lines = [f'    {i}[label = "{name}", color = "0.1 0.6 0.85"];' for name, i in ids.items()]
    lines += [f"    {ids[a]} -> {ids[b]}" for b, inputs in rules.items() for a in inputs]
    return "digraph snakemake_dag {\n" + "\n".join(lines) + "\n}\n"


def test_rulegraph_routes_every_arrow_around_the_boxes(tmp_path):
    dot = tmp_path / "rules.dot"
    dot.write_text(rule_dot(RULES))
    drawn = figures.rulegraph(dot, tmp_path / "rules.png")
    layers = drawn["layers"]
    assert layers["simulate"] == 0 and layers["train"] == 3 and layers["all"] == 7
    assert all(layers[a] < layers[b] for b, inputs in RULES.items() for a in inputs)
    assert set(drawn["routes"]) == {(a, b) for b, inputs in RULES.items() for a in inputs}
    for (a, b), path in drawn["routes"].items():
        for rule, (x0, y0, x1, y1) in drawn["boxes"].items():
            inside = (path[:, 0] > x0) & (path[:, 0] < x1) & (path[:, 1] > y0) & (path[:, 1] < y1)
            assert not inside.any(), f"the arrow {a} -> {b} runs through {rule}"
    # e.g. resolved_config (layer 0) -> rulegraph (layer 4) passes make_folds' layer
    assert layers["make_folds"] == 2 and len(drawn["routes"]["resolved_config", "rulegraph"]) > 30
    png_size(tmp_path / "rules.png")


def test_rulegraph_of_a_short_chain(tmp_path):
    dot = tmp_path / "rules.dot"
    dot.write_text(rule_dot({"simulate": [], "preprocess": ["simulate"], "all": ["preprocess"]}))
    drawn = figures.rulegraph(dot, tmp_path / "rules.png")
    assert drawn["layers"] == {"simulate": 0, "preprocess": 1, "all": 2}
    assert drawn["crossings"] == 0
    check_written(tmp_path / "rules.png", (6.0, 1.15 * 3 + 1.0), pdf=False)


def test_command_line_rejects_a_misplaced_summary(tmp_path):
    bad = tmp_path / "summary.csv"
    bad.write_text("model\n")
    with pytest.raises(SystemExit, match="expected results/<dataset>/<task>/<protocol>"):
        figures.main(["comparison", "--summary", str(bad), "--out", str(tmp_path / "c.png")])
