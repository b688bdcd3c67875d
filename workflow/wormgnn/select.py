"""Hyperparameter selection inside a fold's training data: ``.../fold{k}/selection.json``.

Each model declares a small grid (``models.<name>.search`` in config.yaml): a list of
values per hyperparameter, the grid being their product. Keys are the model's settings,
or ``training.<key>`` for its training loop (``training.weight_decay``); a mapping under
``forecast:`` or ``behaviour:`` applies to that task only (``linear``'s ``alpha`` is its
forecast penalty, ``C`` its behaviour penalty). Every model gets the same budget: the
same number of candidates (``selection.budget``), each trained by the same loop with
the same settings.

For one (dataset, task, protocol, model, fold), every candidate is trained with the
fold's first seed on the fold's training worms only and scored on validation data drawn
from them (:func:`wormgnn.train.selection_split`): with two or more training worms
across worms (``lowo``, ``lodo``), the last training worm is held out; otherwise the end
of each training worm's frames. The score is training's own validation metric
(forecast: -MSE over horizons; behaviour: macro-F1). Only the training worms' traces are
read; under ``within``, no window or encoder context reaches the test block or its gap.
``selection.json`` holds the chosen point, every candidate's score, and the split;
``train`` and ``evaluate`` apply the chosen point (``--selection``).

Candidates are trained one after another in ``<fold>/selection/``; a finished candidate
is not trained again when the job is rerun on the same inputs and code (its fingerprint,
as for a training checkpoint), and an interrupted one resumes from its last epoch, as
training does. The chosen candidate's fit is kept there (``chosen_fit``): where selection
validates as training does (``within``, or a single training worm), it is the first
seed's training run itself, and ``train`` takes it instead of repeating it.

``selection.epoch_fraction`` (``--epoch-fraction``) trains the candidates on that share
of their fit windows per epoch, drawn afresh each epoch (``training.epoch_fraction``),
as a cheaper, lower-fidelity ranking; every seed then trains with the training settings,
so no candidate is the first seed's run and none is reused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from wormgnn import files
from wormgnn.models import NEURAL_MODELS
from wormgnn.search import grid
from wormgnn.train import (
    RunConfig,
    command_errors,
    fingerprint,
    fit_classical,
    fit_neural,
    parse_run,
    prepare,
    with_point,
)

log = logging.getLogger("wormgnn.select")


def run_selection(
    run: RunConfig,
    search: dict[str, Any],
    traces: Path,
    labels: Path,
    folds: Path,
    out: Path,
    epoch_fraction: float | None = None,
) -> dict[str, Any]:
    """Train and score every candidate of ``search`` on this fold's training data, each
    on ``epoch_fraction`` of its fit windows per epoch (None: training's own share)."""
    points = grid(search, run.task)
    as_training = True  # the chosen fit can be the first seed's run
    if epoch_fraction is not None:
        if not 0 < epoch_fraction <= 1:
            raise ValueError(f"selection epoch_fraction {epoch_fraction} must be in (0, 1]")
        if any(key == "training.epoch_fraction" for point in points for key in point):
            raise ValueError(
                "search sets training.epoch_fraction, and selection.epoch_fraction is set "
                "too; use one of them"
            )
        as_training = epoch_fraction == run.train_config().epoch_fraction
        run = with_point(run, {"training.epoch_fraction": epoch_fraction})
    workdir = out.parent / "selection"
    candidates = []
    inputs = {"traces": Path(traces), "labels": Path(labels), "folds": Path(folds)}
    for i, point in enumerate(points):
        cand = with_point(run, point)
        done = workdir / f"candidate{i}.json"
        print_now = fingerprint(cand, inputs)
        saved = files.read_json(done) if done.exists() else {}
        if saved.get("fingerprint") == print_now:
            result = saved
            log.info(
                "candidate %d/%d %s: val_score %.4f (done before)",
                i + 1,
                len(points),
                point,
                result["val_score"],
            )
        else:
            prep = prepare(cand, traces, labels, folds, selection=True)
            fit = fit_neural if cand.model in NEURAL_MODELS else fit_classical
            model = workdir / f"candidate{i}.pt"
            checkpoint = fit(cand, prep, model, workdir / f"candidate{i}.csv")
            result = {
                "fingerprint": print_now,
                "point": point,
                "val_score": float(checkpoint["best_val_score"]),
                "best_epoch": int(checkpoint.get("best_epoch", 0)),
                "fit_worms": sorted(prep.fit),
                "val_worms": sorted(prep.val),
                "split": prep.split,
            }
            files.write_json(done, result)
            log.info(
                "candidate %d/%d %s: val_score %.4f", i + 1, len(points), point, result["val_score"]
            )
        candidates.append(result)
    best = max(range(len(candidates)), key=lambda i: candidates[i]["val_score"])
    for i in range(len(candidates)):  # the chosen fit may be the first seed's (train)
        if i != best or not as_training:
            (workdir / f"candidate{i}.pt").unlink(missing_ok=True)
    chosen_fit = workdir / f"candidate{best}.pt"
    summary = {
        "run": {k: getattr(run, k) for k in ("dataset", "task", "protocol", "model", "fold")},
        "seed": run.seed,
        "epoch_fraction": run.train_config().epoch_fraction,
        "metric": "-MSE over horizons" if run.task == "forecast" else "macro-F1",
        "split": candidates[0]["split"],
        "budget": len(points),
        "chosen": candidates[best]["point"],
        "chosen_index": best,
        "chosen_fit": str(chosen_fit.relative_to(out.parent)) if chosen_fit.exists() else None,
        "candidates": [
            {k: c[k] for k in ("point", "val_score", "best_epoch", "fit_worms", "val_worms")}
            for c in candidates
        ],
    }
    files.write_json(out, summary)
    log.info("chose %s (val_score %.4f)", summary["chosen"], candidates[best]["val_score"])
    return summary


def main(argv: list[str] | None = None) -> None:
    def arguments(parser):
        parser.add_argument("--search", default="{}", help="the model's search space, as JSON")
        parser.add_argument("--out", type=Path, required=True, help="output selection.json")
        parser.add_argument(
            "--epoch-fraction",
            type=float,
            default=None,
            help="share of the fit windows each candidate trains on per epoch "
            "(default: the training's own)",
        )

    args, run = parse_run(argv, __doc__.split("\n")[0], arguments)
    with command_errors():
        search = files.parse_json_arg(args.search, "search")
        run_selection(
            run, search, args.traces, args.labels, args.folds, args.out, args.epoch_fraction
        )


if __name__ == "__main__":
    main()
