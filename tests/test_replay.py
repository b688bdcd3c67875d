"""wormgnn.replay: early stopping and selection's rung replayed on recorded validation
histories predict what a real run with the shorter settings does."""

import csv
import json
from dataclasses import replace

import pytest
from wormgnn import replay, select

from tests.test_select import _run


def test_replay_is_the_training_loops_early_stopping():
    scores = [1.0, 2.0, 1.5, 1.6, 3.0, 2.9]
    assert replay.replay(scores, 2) == replay.Stop(2.0, 2, 4, True)
    assert replay.replay(scores, 3) == replay.Stop(3.0, 5, 6, False)  # the history ran out
    assert replay.replay([0.5, 0.5], 1) == replay.Stop(0.5, 1, 2, True)  # ties are no progress
    with pytest.raises(ValueError, match="at least 1"):
        replay.replay(scores, 0)


def _select(tiny_results, out, patience, rung):
    training = {"max_epochs": 12, "batch_size": 64, "patience": patience}
    run = replace(_run("mlp", layers=1), protocol="within", training=training)
    search = {"hidden": [8, 16], "dropout": [0.0, 0.3]}
    paths = [tiny_results[k] for k in ("traces", "labels", "folds")]
    return select.run_selection(run, search, *paths, out, halving=select.Halving(rung, 2))


def test_a_replayed_selection_is_the_selection_run_with_those_settings(tiny_results, tmp_path):
    """Recorded with patience 4 and rung 3; replayed at patience 2 and rung 2, it gives the
    choice, the epochs and the kept runs' scores of a real selection at those settings."""
    _select(tiny_results, tmp_path / "recorded" / "selection.json", patience=4, rung=3)
    (recorded,) = replay.collect(tmp_path / "recorded")
    predicted = replay.replay_selection(recorded, patience=2, rung=2)
    assert predicted is not None and not predicted.assumed
    real = _select(tiny_results, tmp_path / "real" / "selection.json", patience=2, rung=2)
    assert predicted.chosen == real["chosen_index"]
    assert predicted.epochs == sum(c["epochs"] for c in real["candidates"])
    kept = [i for i, c in enumerate(real["candidates"]) if not c["eliminated"]]
    for i in kept:
        stop = replay.replay(recorded.histories[i], 2)
        assert stop.best == real["candidates"][i]["val_score"]
    # at its own settings the replay is the record
    same = replay.replay_selection(recorded, patience=4, rung=None)
    assert same.epochs == sum(recorded.epochs)
    rows = replay.report([recorded], [2, 4], rung=2)
    assert [r["patience"] for r in rows] == [2, 4] and rows[0]["replayed"] == 1
    assert rows[1]["forecast_loss"]["max"] == 0.0  # patience 4 keeps every best
    assert rows[1]["forecast_loss"]["material"] == 0
    with pytest.raises(ValueError, match="longer than the recorded 4"):
        replay.replay_selection(recorded, patience=5, rung=None)
    with pytest.raises(ValueError, match="later than the recorded 3"):
        replay.replay_selection(recorded, patience=2, rung=4)


def _write_selection(root, histories, patience=3, halving=None, cut=()):
    work = root / "forecast" / "within" / "mlp" / "fold0" / "selection"
    work.mkdir(parents=True)
    cands = []
    for i, scores in enumerate(histories):
        saved = {"fingerprint": {"run": {"training": {"patience": patience}}}}
        if i in cut:
            saved["halving"] = halving
        (work / f"candidate{i}.json").write_text(json.dumps(saved))
        with open(work / f"candidate{i}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch", "val_score"])
            writer.writerows(enumerate(scores, 1))
        cand = {"epochs": len(scores), "val_score": max(scores)}
        if halving:
            cand.update(rung_score=max(scores[: halving["rung_epochs"]]), eliminated=i in cut)
        cands.append(cand)
    chosen = max(range(len(histories)), key=lambda i: max(histories[i]))
    summary = {
        "run": {"task": "forecast"},
        "budget": len(histories),
        "halving": halving,
        "chosen_index": chosen,
        "candidates": cands,
    }
    (work.parent / "selection.json").write_text(json.dumps(summary))
    return work


def test_a_stopped_candidate_without_its_history_is_taken_as_recorded(tmp_path):
    """An older select kept no history of a candidate stopped at the rung: the replay
    takes it as recorded at the recorded rung, says so, and refuses another rung."""
    halving = {"rung_epochs": 2, "keep": 1}
    work = _write_selection(
        tmp_path, [[-3.0, -2.0, -1.5, -1.6, -1.7, -1.8], [-3.0, -2.5]], halving=halving, cut={1}
    )
    (work / "candidate1.csv").unlink()
    (sel,) = replay.collect(tmp_path)
    assert sel.histories[1] is None
    got = replay.replay_selection(sel, patience=2, rung=None)
    assert got == replay.SelectionReplay(chosen=0, epochs=5 + 2, assumed=True)
    assert replay.replay_selection(sel, patience=2, rung=1) is None


def test_bad_inputs_say_what_is_wrong(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no neural model's selection.json"):
        replay.main([str(tmp_path)])
    # a run that patience 3 would have ended at epoch 4, recorded with 6 epochs
    _write_selection(tmp_path, [[-1.0, -2.0, -2.0, -2.0, -2.0, -0.5]], patience=3)
    with pytest.raises(SystemExit, match="does not match the recorded run"):
        replay.main([str(tmp_path)])


def test_the_command_prints_every_patience_and_writes_json(tmp_path, capsys):
    _write_selection(tmp_path / "r", [[-3.0, -2.0, -2.1, -2.2, -2.3], [-3.0, -1.0, -1.1, -1.2]])
    replay.main([str(tmp_path / "r"), "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    assert "patience 2, rung recorded: 1 of 1 selections replayable" in out
    assert "patience 3, rung recorded" in out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["patience"] for r in rows] == [2, 3]
    assert rows[0]["selection_epochs"] == 4 + 4 and rows[1]["selection_epochs"] == 9
    # patience 2 keeps -2.0 and -1.0 (the recorded bests): nothing lost
    assert rows[0]["forecast_loss"] == {
        "runs": 1,
        "unchanged": 1,
        "material": 0,
        "median": 0.0,
        "max": 0.0,
    }
