"""Replay early stopping and selection's rung on a finished study's validation histories.

``python -m wormgnn.replay RESULTS [--patience 3 4 5] [--rung 4] [--json OUT]``

Every neural training run writes its validation score after each epoch: a seed's
``history.csv`` and a selection candidate's ``selection/candidate<i>.csv``. Training is
deterministic, and ``patience`` only decides when the loop ends, so a run with a shorter
patience is its recorded run cut at the point where that patience runs out: its
history says, without training anything, how many epochs the shorter patience saves and
what validation score it keeps. Selection's successive halving (``selection.halving``)
is replayed the same way, at a rung no later than the recorded one: each candidate's
score at the rung, the ``keep`` best, and the one chosen among them.

Only validation scores are read (training's split of the training worms, and
selection's); no test worm or block enters, so a setting chosen from this report is
not chosen on test scores. What it cannot replay, it says:

- a patience longer than the recorded one, or a rung later than the recorded rung
  (the histories end there);
- a selection in which a candidate the replay keeps was stopped at the recorded rung and
  would have trained on past it (its later epochs were never run): that selection is
  counted as not replayable;
- a candidate stopped at the rung by a ``select`` that did not yet keep such a
  candidate's history (only its score at the rung): it is taken as it was recorded, at
  the recorded rung only, and the selection is counted as *assumed*;
- seeds are replayed with the hyperparameters the recorded selection chose. A seed that
  is the chosen candidate's own run (``train`` reused it) is counted once, with
  selection.

Closed-form fits (one history row) have nothing to replay and are left out.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wormgnn import files


@dataclass(frozen=True)
class Stop:
    """Where early stopping with some patience ends a run."""

    best: float
    best_epoch: int
    epochs: int
    ended: bool  # patience ran out (else the history did)


def replay(scores: list[float], patience: int) -> Stop:
    """The training loop's early stopping over one run's per-epoch validation scores: the
    best so far is kept; the run ends after ``patience`` epochs without progress (or at
    the end of the history, where the recorded run ended)."""
    if patience < 1:
        raise ValueError(f"patience {patience} must be at least 1")
    best, best_epoch, bad = -math.inf, 0, 0
    for epoch, score in enumerate(scores, 1):
        if score > best:
            best, best_epoch, bad = score, epoch, 0
        else:
            bad += 1
            if bad >= patience:
                return Stop(best, best_epoch, epoch, True)
    return Stop(best, best_epoch, len(scores), False)


def read_scores(path: Path) -> list[float]:
    with open(path, newline="") as handle:
        return [float(row["val_score"]) for row in csv.DictReader(handle)]


@dataclass
class Selection:
    """One fold's recorded selection: its candidates' histories and what it chose."""

    path: Path
    task: str
    patience: int
    halving: dict[str, int] | None
    chosen: int
    histories: list[list[float] | None]  # None: a stopped candidate's, not kept
    cut: list[bool]  # stopped at the rung, before early stopping ended it
    rung_scores: list[float | None]
    epochs: list[int]
    seeds: list[list[float]] = field(default_factory=list)  # trained by train, not reused


def collect(results: Path) -> list[Selection]:
    """Every neural selection under ``results`` (a study's results folder), with its
    fold's seed histories."""
    found = []
    for path in sorted(Path(results).rglob("selection.json")):
        summary = files.read_json(path)
        work = path.parent / "selection"
        cands = summary["candidates"]
        saved = [files.read_json(work / f"candidate{i}.json") for i in range(len(cands))]
        cut = ["halving" in c for c in saved]
        histories = [
            None
            if cut[i] and not (work / f"candidate{i}.csv").exists()
            else read_scores(work / f"candidate{i}.csv")
            for i in range(len(cands))
        ]
        if all(h is not None and len(h) <= 1 for h in histories):
            continue  # closed-form fits
        chosen = summary["chosen_index"]
        seeds = []
        for history in sorted(path.parent.glob("seed*/history.csv")):
            scores = read_scores(history)
            if scores != histories[chosen]:  # not the chosen candidate's own run
                seeds.append(scores)
        selection = Selection(
            path=path,
            task=summary["run"]["task"],
            patience=int(saved[0]["fingerprint"]["run"]["training"]["patience"]),
            halving=summary.get("halving"),
            chosen=chosen,
            histories=histories,
            cut=cut,
            rung_scores=[c.get("rung_score") for c in cands],
            epochs=[int(c["epochs"]) for c in cands],
            seeds=seeds,
        )
        _check_recorded(selection)
        found.append(selection)
    if not found:
        raise ValueError(f"no neural model's selection.json under {results}")
    return found


def _check_recorded(sel: Selection) -> None:
    """Replaying the recorded settings must give the recorded runs, else the histories
    are not what this module assumes (another patience, or a truncated file)."""
    for i, scores in enumerate(sel.histories):
        if sel.cut[i] or scores is None:
            continue
        if replay(scores, sel.patience).epochs != len(scores):
            raise ValueError(
                f"{sel.path.parent / 'selection'}/candidate{i}.csv: early stopping with the "
                f"recorded patience {sel.patience} ends it before its last epoch "
                f"({len(scores)}); the history does not match the recorded run"
            )


@dataclass(frozen=True)
class SelectionReplay:
    chosen: int
    epochs: int  # every candidate's epochs under the replayed settings
    assumed: bool  # a stopped candidate without its history was taken as recorded


def replay_selection(sel: Selection, patience: int, rung: int | None) -> SelectionReplay | None:
    """The selection under ``patience`` and, where it raced, a rung of ``rung`` epochs
    (None: the recorded rung) with the recorded ``keep``; None where the histories do not
    reach what the replay would train."""
    if patience > sel.patience:
        raise ValueError(f"patience {patience} is longer than the recorded {sel.patience}")
    n = len(sel.histories)
    known = [i for i in range(n) if sel.histories[i] is not None]
    stops = {i: replay(sel.histories[i], patience) for i in known}
    missing = [i for i in range(n) if i not in stops]
    if sel.halving is None:
        keep, at = list(range(n)), None
    else:
        recorded_rung = sel.halving["rung_epochs"]
        at = recorded_rung if rung is None else rung
        if at > recorded_rung:
            raise ValueError(f"rung {at} is later than the recorded {recorded_rung}")
        if missing and at != recorded_rung:
            return None  # a stopped candidate's score at another rung is not known
        at_rung = {i: replay(sel.histories[i][:at], patience).best for i in known}
        at_rung.update({i: sel.rung_scores[i] for i in missing})
        ranked = sorted(range(n), key=lambda i: (-at_rung[i], i))
        keep = sorted(ranked[: sel.halving["keep"]])
    for i in keep:  # a kept run must end inside its recorded epochs
        if i in missing or (sel.cut[i] and not stops[i].ended):
            return None

    def trained(i: int) -> int:  # a kept run to its stop; the others to the rung at most
        if i in missing:
            return sel.epochs[i]
        return stops[i].epochs if i in keep else min(stops[i].epochs, at)

    epochs = sum(trained(i) for i in range(n))
    chosen = max(keep, key=lambda i: stops[i].best)
    return SelectionReplay(chosen, epochs, bool(missing))


def report(selections: list[Selection], patiences: list[int], rung: int | None) -> list[dict]:
    """One row per patience: epochs against the recorded ones, the validation score each
    run keeps, and how many selections choose as recorded."""
    rows = []
    for patience in patiences:
        replayed = [(s, replay_selection(s, patience, rung)) for s in selections]
        done = [(s, r) for s, r in replayed if r is not None]
        runs = [(s.task, h) for s, _ in done for h in s.seeds]
        runs += [(s.task, s.histories[s.chosen]) for s, _ in done]
        loss: dict[str, list[float]] = {"forecast": [], "behaviour": []}
        for task, scores in runs:
            full, cut = max(scores), replay(scores, patience).best
            # forecast: -MSE, as a share of the recorded error; behaviour: macro-F1 points
            loss[task].append((full - cut) / abs(full) if task == "forecast" else full - cut)
        seed_epochs = sum(replay(h, patience).epochs for s, _ in done for h in s.seeds)
        rows.append(
            {
                "patience": patience,
                "rung": rung,
                "selections": len(selections),
                "replayed": len(done),
                "assumed": sum(r.assumed for _, r in done),
                "same_choice": sum(r.chosen == s.chosen for s, r in done),
                "selection_epochs": sum(r.epochs for _, r in done),
                "selection_epochs_recorded": sum(sum(s.epochs) for s, _ in done),
                "seed_epochs": seed_epochs,
                "seed_epochs_recorded": sum(len(h) for s, _ in done for h in s.seeds),
                **{f"{task}_loss": _spread(values) for task, values in loss.items() if values},
            }
        )
    return rows


#: A loss this large (1 % of the MSE, or 0.01 macro-F1) is counted: on the real fixture
#: the gnn's whole forecast skill over persistence is 5-10 % of its MSE, so the tail,
#: not the median, is what moves a study's scores.
MATERIAL = 0.01


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "runs": len(values),
        "unchanged": sum(v == 0 for v in values),
        "material": sum(v >= MATERIAL for v in values),
        "median": statistics.median(values),
        "max": max(values),
    }


def format_rows(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        sel = row["selection_epochs"] / max(row["selection_epochs_recorded"], 1)
        seeds = row["seed_epochs"] / max(row["seed_epochs_recorded"], 1)
        rung = "recorded" if row["rung"] is None else row["rung"]
        lines.append(
            f"patience {row['patience']}, rung {rung}: {row['replayed']} of "
            f"{row['selections']} selections replayable ({row['assumed']} assuming the "
            f"stopped candidates as recorded), {row['same_choice']} choose as recorded; "
            f"epochs {sel:.2f} of the recorded in selection, {seeds:.2f} in seeds"
        )
        for task, what in (("forecast", "share of -MSE"), ("behaviour", "macro-F1")):
            if f"{task}_loss" in row:
                s = row[f"{task}_loss"]
                lines.append(
                    f"  {task}: {s['runs']} runs, {s['unchanged']} keep their best, "
                    f"{s['material']} lose {MATERIAL} or more; validation loss ({what}) "
                    f"median {s['median']:.4f}, max {s['max']:.4f}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.replay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("results", type=Path, help="a study's results folder")
    parser.add_argument(
        "--patience", type=int, nargs="+", help="default: 2 to the recorded patience"
    )
    parser.add_argument("--rung", type=int, default=None, help="default: the recorded rung")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    try:
        selections = collect(args.results)
        recorded = min(s.patience for s in selections)
        rows = report(selections, args.patience or list(range(2, recorded + 1)), args.rung)
    except (ValueError, OSError, KeyError) as err:
        raise SystemExit(f"error: {err}") from err
    print(format_rows(rows))
    if args.json is not None:
        files.write_json(args.json, rows)


if __name__ == "__main__":
    main()
