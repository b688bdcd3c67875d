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

``selection.halving`` (``--halving RUNG_EPOCHS KEEP``) is successive halving in one
round: every candidate of a neural model trains ``rung_epochs`` epochs, each pausing
at its resume point; they are ranked by their best validation score so far, and only
the ``keep`` best train on, resuming, to early stopping. A kept candidate's run is the
run it would be alone, to the bit (it resumes as an interrupted job does), so its fit
can still be the first seed's. The others stop for good at the rung, with their score
there, and cannot be chosen. A candidate that early stopping ends before the rung is
ranked by its final score. ``linear`` (a closed form) and a grid no larger than
``keep`` train every candidate to its end.

``selection.epoch_fraction`` (``--epoch-fraction``) trains the candidates on that share
of their fit windows per epoch, drawn afresh each epoch (``training.epoch_fraction``),
as a cheaper, lower-fidelity ranking; every seed then trains with the training settings,
so no candidate is the first seed's run and none is reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wormgnn import files
from wormgnn.data import SummaryCache
from wormgnn.models import NEURAL_MODELS
from wormgnn.search import grid
from wormgnn.train import (
    Paused,
    RunConfig,
    best_until,
    command_errors,
    fingerprint,
    fit_classical,
    fit_neural,
    parse_run,
    partial_of,
    prepare,
    read_history,
    with_point,
    write_history,
)

log = logging.getLogger("wormgnn.select")


@dataclass(frozen=True)
class Halving:
    """Successive halving (``selection.halving``): every candidate trains ``rung_epochs``
    epochs; the ``keep`` best by their best validation score so far train on until
    early stopping ends them, the others stop there and cannot be chosen."""

    rung_epochs: int
    keep: int

    def __post_init__(self) -> None:
        if self.rung_epochs < 1 or self.keep < 1:
            raise ValueError(
                f"selection halving: rung_epochs ({self.rung_epochs}) and keep ({self.keep}) "
                "must be at least 1"
            )

    def as_dict(self) -> dict[str, int]:
        return {"rung_epochs": self.rung_epochs, "keep": self.keep}


def run_selection(
    run: RunConfig,
    search: dict[str, Any],
    traces: Path,
    labels: Path,
    folds: Path,
    out: Path,
    epoch_fraction: float | None = None,
    halving: Halving | None = None,
) -> dict[str, Any]:
    """Train and score every candidate of ``search`` on this fold's training data, each
    on ``epoch_fraction`` of its fit windows per epoch (None: training's own share);
    with ``halving``, a neural model's candidates race to its rung first."""
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
    if run.model not in NEURAL_MODELS or (halving is not None and halving.keep >= len(points)):
        halving = None  # nothing to race: closed-form fits, or every candidate kept
    workdir = out.parent / "selection"
    inputs = {"traces": Path(traces), "labels": Path(labels), "folds": Path(folds)}
    summaries = SummaryCache()  # the candidates read the same windows' context summaries
    races = [
        _Candidate(i, point, with_point(run, point), workdir, inputs, summaries)
        for i, point in enumerate(points)
    ]
    n = len(races)
    for cand in races:  # every candidate to its end, or to the rung
        cand.advance(traces, labels, folds, halving, n)
    survivors, rung, out_of_race = list(range(n)), {}, set()
    if halving is not None:
        rung = {i: races[i].rung_score(halving) for i in range(n)}
        ranked = sorted(range(n), key=lambda i: (-rung[i], i))
        survivors, out_of_race = sorted(ranked[: halving.keep]), set(ranked[halving.keep :])
        for i in sorted(out_of_race):
            races[i].eliminate(halving, rung[i], n)
        for i in survivors:
            races[i].advance(traces, labels, folds, None, n)
    candidates = [cand.result for cand in races]
    best = max(survivors, key=lambda i: candidates[i]["val_score"])
    for i in range(n):  # the chosen fit may be the first seed's (train)
        if i != best or not as_training:
            (workdir / f"candidate{i}.pt").unlink(missing_ok=True)
    chosen_fit = workdir / f"candidate{best}.pt"
    keys = ("point", "val_score", "best_epoch", "fit_worms", "val_worms")
    summary = {
        "run": {k: getattr(run, k) for k in ("dataset", "task", "protocol", "model", "fold")},
        "seed": run.seed,
        "epoch_fraction": run.train_config().epoch_fraction,
        "metric": "-MSE over horizons" if run.task == "forecast" else "macro-F1",
        "split": candidates[0]["split"],
        "budget": n,
        "halving": halving.as_dict() if halving else None,
        "chosen": candidates[best]["point"],
        "chosen_index": best,
        "chosen_fit": str(chosen_fit.relative_to(out.parent)) if chosen_fit.exists() else None,
        "candidates": [
            {
                **{k: c[k] for k in keys},
                "epochs": c["epochs"],
                **({"rung_score": rung[i], "eliminated": i in out_of_race} if halving else {}),
            }
            for i, c in enumerate(candidates)
        ],
    }
    files.write_json(out, summary)
    log.info("chose %s (val_score %.4f)", summary["chosen"], candidates[best]["val_score"])
    return summary


class _Candidate:
    """One point of the grid in ``workdir``: its fit ``candidate<i>.pt``, history
    ``.csv`` and result ``.json``, which a rerun on the same inputs and code takes
    instead of training again (an eliminated candidate's only under the same halving)."""

    def __init__(
        self, index, point, run, workdir: Path, inputs: dict[str, Path], summaries: SummaryCache
    ) -> None:
        self.index, self.point, self.run = index, point, run
        self.summaries = summaries
        self.model = workdir / f"candidate{index}.pt"
        self.history = workdir / f"candidate{index}.csv"
        self.done = workdir / f"candidate{index}.json"
        self.fingerprint = fingerprint(run, inputs)
        self.result: dict[str, Any] = {}
        self.paused: Paused | None = None
        self.prep = None

    def _saved(self, halving: Halving | None) -> dict[str, Any]:
        saved = files.read_json(self.done) if self.done.exists() else {}
        if saved.get("fingerprint") != self.fingerprint:
            return {}
        if "halving" in saved and saved["halving"] != (halving.as_dict() if halving else None):
            return {}  # stopped at another rung: it must train on
        return saved

    def _record(self, val_score: float, best_epoch: int, epochs: int, **more: Any) -> None:
        """Keep (and write) this candidate's result: ``more`` for one stopped at a rung."""
        self.result = {
            "fingerprint": self.fingerprint,
            "point": self.point,
            "val_score": val_score,
            "best_epoch": best_epoch,
            "epochs": epochs,
            "fit_worms": sorted(self.prep.fit),
            "val_worms": sorted(self.prep.val),
            "split": self.prep.split,
            **more,
        }
        files.write_json(self.done, self.result)
        self.prep = None  # only a paused fit needs its data again

    def advance(self, traces, labels, folds, halving: Halving | None, n: int) -> None:
        """Train to the end, or (``halving``) to the rung; nothing where it is done."""
        label = f"candidate {self.index + 1}/{n} {self.point}"
        saved = self._saved(halving)
        if saved:
            self.result = saved
            log.info("%s: val_score %.4f (done before)", label, saved["val_score"])
            return
        if self.prep is None:
            self.prep = prepare(
                self.run, traces, labels, folds, selection=True, cache=self.summaries
            )
        if self.run.model not in NEURAL_MODELS:
            checkpoint = fit_classical(self.run, self.prep, self.model, self.history)
        else:
            until = halving.rung_epochs if halving else None
            checkpoint = fit_neural(
                self.run, self.prep, self.model, self.history, until_epoch=until
            )
            if isinstance(checkpoint, Paused):
                self.paused = checkpoint
                log.info(
                    "%s: at the rung (epoch %d), best val_score %.4f",
                    label,
                    checkpoint.epoch,
                    best_until(checkpoint.history, checkpoint.epoch),
                )
                return
        self.paused = None
        self._record(
            float(checkpoint["best_val_score"]),
            int(checkpoint.get("best_epoch", 0)),
            len(read_history(self.history)),  # 1 for a closed form
        )
        log.info("%s: val_score %.4f", label, self.result["val_score"])

    def rung_score(self, halving: Halving) -> float:
        """The best validation score of the first ``rung_epochs`` epochs."""
        if self.paused is not None:
            return best_until(self.paused.history, halving.rung_epochs)
        if "halving" in self.result:  # stopped at this rung in an earlier run
            return float(self.result["val_score"])
        return best_until(read_history(self.history), halving.rung_epochs)

    def eliminate(self, halving: Halving, score: float, n: int) -> None:
        """Out of the race at the rung, with ``score`` there: it cannot be chosen. A
        paused fit stops for good (its resume point is deleted); its result records
        the halving, so that only a rerun under the same halving takes it."""
        log.info("candidate %d/%d %s: out at the rung", self.index + 1, n, self.point)
        if self.paused is None:
            return  # it had finished by the rung: its result stands, it is just not chosen
        paused, self.paused = self.paused, None
        best_epoch = next(int(r["epoch"]) for r in paused.history if float(r["val_score"]) == score)
        self._record(score, best_epoch, paused.epoch, halving=halving.as_dict())
        write_history(self.history, paused.history)  # for wormgnn.replay
        partial_of(self.model).unlink(missing_ok=True)


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
        parser.add_argument(
            "--halving",
            type=int,
            nargs=2,
            metavar=("RUNG_EPOCHS", "KEEP"),
            default=None,
            help="successive halving: every candidate trains RUNG_EPOCHS epochs, then only "
            "the KEEP best train on (default: every candidate to its end)",
        )

    args, run = parse_run(argv, __doc__.split("\n")[0], arguments)
    with command_errors():
        search = files.parse_json_arg(args.search, "search")
        halving = Halving(*args.halving) if args.halving else None
        run_selection(
            run,
            search,
            args.traces,
            args.labels,
            args.folds,
            args.out,
            args.epoch_fraction,
            halving,
        )


if __name__ == "__main__":
    main()
