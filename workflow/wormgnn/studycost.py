"""What a whole study costs: Snakemake's plan, each job kind's measured time, the total.

    python -m wormgnn.bench --study --configfile config.yaml --cores 2 --out bench/

1. **Plan.** The data stages run first (they decide the folds), then
   ``snakemake --summary`` lists every output the study would make. Each ``select``,
   ``train`` and ``evaluate`` job is one fold's (a train or evaluate job writes every
   seed's files), and its *kind* is (rule, task, protocol, model).
2. **Measure.** Unless ``--no-run``, Snakemake runs one job of every kind: fold 0 of
   each (task, protocol, model), with its selection. Every such rule writes
   Snakemake's ``benchmark:`` file (wall seconds ``s`` and ``cpu_time``); every
   benchmark file already in the working directory is read, so a finished or partial
   study measures itself. Snakemake's progress shows as it runs, and the same command
   after a stop carries on (a job the stop cut off runs again).
3. **Project.** Per kind: the mean measured wall time × the planned jobs; core-seconds
   weigh each job by the threads its rule reserves. The wall time on N cores is the
   core-seconds / N: ideal packing, so a lower bound (the last jobs of a DAG run with
   cores idle).

Every job pays its own start-up (the imports of ``python -m wormgnn.<stage>``), so the
measured times include it.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wormgnn import files

log = logging.getLogger("wormgnn.studycost")

REPO = Path(__file__).resolve().parents[2]

#: A per-fold output of the study, and the rule that makes it.
JOB_OUTPUT = re.compile(
    r"^results/(?P<dataset>[^/]+)/(?P<task>forecast|behaviour)/(?P<protocol>lowo|within|lodo)/"
    r"(?P<model>[^/]+)/fold(?P<fold>\d+)/(?:seed(?P<seed>\d+)/)?"
    r"(?P<file>selection\.json|model\.pt|metrics\.json)$"
)
RULE_OF = {"selection.json": "select", "model.pt": "train", "metrics.json": "evaluate"}
#: The threads each rule reserves (workflow/rules/models.smk; a test keeps them equal).
THREADS = {"select": 1, "train": 1, "evaluate": 1}


@dataclass(frozen=True)
class Job:
    """One ``select``, ``train`` or ``evaluate`` job: one per fold (a fold's train and
    evaluate jobs run every seed)."""

    rule: str
    dataset: str
    task: str
    protocol: str
    model: str
    fold: int

    @property
    def kind(self) -> tuple[str, str, str, str]:
        return (self.rule, self.task, self.protocol, self.model)

    @property
    def benchmark(self) -> str:
        fold = f"benchmarks/{self.dataset}/{self.task}/{self.protocol}/{self.model}/fold{self.fold}"
        return f"{fold}/{self.rule}.tsv"


def parse_output(path: str) -> Job | None:
    """The job that makes ``path``, or None for an output that is not per fold."""
    m = JOB_OUTPUT.match(path)
    if m is None:
        return None
    return Job(
        RULE_OF[m["file"]], m["dataset"], m["task"], m["protocol"], m["model"], int(m["fold"])
    )


def snakemake(workdir: Path, args: list[str], *more: str, show: bool = False) -> str:
    """Run the repository's Snakefile in ``workdir``; its stdout (stops on failure).
    ``show`` passes Snakemake's own output through, so a long run shows its progress."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    done = subprocess.run(
        [*cmd, *args, *more], cwd=workdir, env=env, capture_output=not show, text=True
    )
    if done.returncode != 0:
        if show:  # its messages are above
            raise SystemExit(f"error: snakemake {' '.join(more)} failed (its log is above)")
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise SystemExit(f"error: snakemake {' '.join(more)} failed:\n{tail}")
    return done.stdout or ""


def plan(workdir: Path, args: list[str]) -> dict[Job, str]:
    """Every select/train/evaluate job of the study, from ``snakemake --summary``, with
    one output of each (a target that runs it)."""
    out = snakemake(workdir, args, "--summary")
    jobs: dict[Job, str] = {}
    for line in out.splitlines():
        path = line.split("\t", 1)[0]
        job = parse_output(path)
        if job is not None:
            jobs.setdefault(job, path)
    return jobs


def read_benchmark(path: Path) -> dict[str, float]:
    """Wall seconds ``s`` and ``cpu_time`` of a Snakemake benchmark file."""
    with path.open() as fh:
        row = next(csv.DictReader(fh, delimiter="\t"))
    return {"s": float(row["s"]), "cpu_time": float(row.get("cpu_time") or 0.0)}


def project(
    jobs: list[Job], workdir: Path, cores: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per kind: planned and measured jobs, mean wall time, projected seconds; and the
    totals. A kind with no measured job is listed with ``mean_s`` None."""
    planned: dict[tuple, int] = defaultdict(int)
    measured: dict[tuple, list[dict[str, float]]] = defaultdict(list)
    for job in jobs:
        planned[job.kind] += 1
        bench = workdir / job.benchmark
        if bench.exists():
            measured[job.kind].append(read_benchmark(bench))
    rows = []
    for kind in sorted(planned):
        rule, task, protocol, model = kind
        times = measured.get(kind, [])
        mean = sum(t["s"] for t in times) / len(times) if times else None
        rows.append(
            {
                "rule": rule,
                "task": task,
                "protocol": protocol,
                "model": model,
                "planned": planned[kind],
                "measured": len(times),
                "mean_s": mean,
                "mean_cpu_s": sum(t["cpu_time"] for t in times) / len(times) if times else None,
                "threads": THREADS[rule],
                "projected_s": None if mean is None else mean * planned[kind],
            }
        )
    known = [r for r in rows if r["projected_s"] is not None]
    core_s = sum(r["projected_s"] * r["threads"] for r in known)
    totals = {
        "jobs": sum(r["planned"] for r in rows),
        "jobs_measured": sum(r["measured"] for r in rows),
        "kinds_not_measured": [
            "/".join((r["rule"], r["task"], r["protocol"], r["model"]))
            for r in rows
            if r["mean_s"] is None
        ],
        "job_seconds": sum(r["projected_s"] for r in known),
        "core_seconds": core_s,
        "cores": cores,
        "wall_s_lower_bound": core_s / cores,
    }
    for rule in THREADS:
        totals[f"{rule}_seconds"] = sum(r["projected_s"] for r in known if r["rule"] == rule)
    return rows, totals


def table(rows: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    def seconds(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    lines = [
        "| rule | task | protocol | model | planned | measured | mean (s) | projected (s) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['rule']} | {r['task']} | {r['protocol']} | {r['model']} | {r['planned']} | "
            f"{r['measured']} | {seconds(r['mean_s'])} | {seconds(r['projected_s'])} |"
        )
    lines += [
        "",
        f"- jobs planned: {totals['jobs']} ({totals['jobs_measured']} measured)",
        "- job time: "
        + ", ".join(f"{rule} {totals[f'{rule}_seconds'] / 3600:.2f} h" for rule in THREADS),
        f"- {totals['core_seconds'] / 3600:.2f} core-hours: at least "
        f"{totals['wall_s_lower_bound'] / 60:.0f} min on {totals['cores']} cores",
    ]
    if totals["kinds_not_measured"]:
        lines.append(f"- not measured (left out of the totals): {totals['kinds_not_measured']}")
    return "\n".join(lines)


def run(
    workdir: Path, args: list[str], cores: int, out: Path, measure: bool = True
) -> dict[str, Any]:
    """Plan the study that ``args`` (e.g. ``--configfile``) define in ``workdir``,
    measure one job of every kind (``measure``), and write ``study.json``/``study.md``."""
    log.info("planning the study in %s", workdir)
    snakemake(workdir, args, "--cores", str(cores), "--until", "make_folds")
    jobs = plan(workdir, args)
    if not jobs:
        raise SystemExit("error: the study plans no select, train or evaluate job")
    if measure:  # fold 0 of each kind; its evaluate job needs its train and select jobs
        targets = sorted(out for j, out in jobs.items() if j.fold == 0 and j.rule == "evaluate")
        log.info("measuring %d folds (one of every kind) on %d cores", len(targets), cores)
        # a stopped run carries on: its finished jobs stay, a job cut off is run again
        more = ("--cores", str(cores), "--rerun-incomplete", *targets)
        snakemake(workdir, args, *more, show=True)
    rows, totals = project(list(jobs), workdir, cores)
    result = {"workdir": str(workdir), "args": args, "kinds": rows, "totals": totals}
    files.write_json(out / "study.json", result)
    text = table(rows, totals)
    (out / "study.md").write_text(text + "\n")
    print(text)
    return result
