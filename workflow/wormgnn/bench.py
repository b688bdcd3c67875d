"""Training benchmark: throughput, epoch time, FLOP efficiency and peak memory of every
model, on both tasks.

    python -m wormgnn.bench --out bench/ --threads 2   # CPU, and CUDA when present

On a Kato-sized synthetic dataset (5 worms, about 3100 frames at about 3 fps, 110-130
ROIs of which 40 are identified in every worm), it trains each model on the first
``lowo`` fold for ``--batches`` optimiser steps after ``--warmup`` steps, and reports
windows per second, the implied time of one epoch over the fold's training windows, the
time to build the loader once per training run (for the ``gnn``, every window's cached
context summary; the steps' windows/s leave it out), and peak memory (process RSS on the
CPU, ``max_memory_allocated`` on CUDA). Each (task, model, device) runs in its own process
so that peaks do not mix. The GNN is measured with the dense decoder (the default), with
PyG's sparse ``MessagePassing`` on the same fully connected graphs, and on every ROI
(``node_set: all``).

For each neural model it also counts the FLOPs of one training step per window
(``torch.utils.flop_counter``: matrix products only) and divides the achieved FLOP/s by
those of a dense 1024² float32 matrix product timed in the same process: the distance to
the machine's limit.

Writes ``bench.json`` and ``bench.md`` (a table) to ``--out`` and checks the targets, per
task and device: the GNN trains at no less than 1/5 of the LSTM's throughput, the GNN on
every ROI at no less than 1/8 of its throughput on the shared set, and one GNN epoch of
the fold takes under 5 s on a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wormgnn import files

log = logging.getLogger("wormgnn.bench")

#: (label, model, model_params) measured on each device.
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("linear", "linear", {}),
    ("mlp", "mlp", {}),
    ("lstm", "lstm", {}),
    ("gnn", "gnn", {}),
    ("gnn_sparse", "gnn", {"impl": "sparse"}),
    ("gnn_all", "gnn", {"node_set": "all"}),  # 16 candidate senders per receiver
    ("gnn_all_dense", "gnn", {"node_set": "all", "senders": 0}),  # every pair
    ("gnn_connectome", "gnn_connectome", {}),
]


def build_dataset(
    root: Path,
    name: str = "bench",
    synthetic: Any = None,
    preprocess_cfg: Any = None,
    within_folds: int = 5,
    gap_s: float = 30.0,
) -> Path:
    """Simulate, preprocess, label and fold a synthetic population in-process (a
    Kato-sized one by default): ``root/{name}.mat``, ``{name}.truth.h5``, ``traces.h5``,
    ``labels.h5``, ``folds.json``. An existing ``folds.json`` is reused."""
    from wormgnn import align_labels, make_folds, preprocess, simulate

    root.mkdir(parents=True, exist_ok=True)
    if (root / "folds.json").exists():
        return root
    mat = root / f"{name}.mat"
    simulate.run(synthetic or simulate.SyntheticConfig(), name, mat, root / f"{name}.truth.h5")
    pre = preprocess_cfg or preprocess.PreprocessConfig()
    preprocess.run(mat, name, pre, root / "traces.h5", root / "preprocessed.json")
    scheme = align_labels.Scheme.named("kato4")
    align_labels.run(
        mat,
        root / "traces.h5",
        scheme,
        list(align_labels.LABEL_NEURONS),
        True,
        root / "labels.h5",
        root / "labels.json",
    )
    make_folds.run(root / "traces.h5", within_folds, gap_s, root / "folds.json")
    return root


def measure(
    root: Path,
    model: str,
    params: dict[str, Any],
    device: str,
    task: str,
    batches: int,
    warmup: int,
    batch_size: int,
) -> dict[str, Any]:
    """Time ``batches`` training steps of one model (runs in a child process)."""
    import torch

    from wormgnn.models.baselines import LinearModel
    from wormgnn.models.registry import model_config
    from wormgnn.train import (
        RunConfig,
        batch_loss,
        build_for,
        make_optimiser,
        prepare,
        regulariser_weights,
        seed_everything,
        stack_windows,
    )

    run = RunConfig(
        dataset="bench",
        task=task,
        protocol="lowo",
        model=model,
        fold=0,
        seed=0,
        training={"batch_size": batch_size, "device": device},
        model_params=params,
    )
    prep = prepare(run, root / "traces.h5", root / "labels.h5", root / "folds.json")
    generator = seed_everything(0)
    dev = torch.device(device)
    # Building the loader includes, for the gnn, every window's context summary (cached
    # once per training run); the steps' windows/s below leave it out, so it is reported.
    start = time.perf_counter()
    loader = prep.loader(prep.fit, batch_size, True, generator)
    record: dict[str, Any] = {
        "device": device,
        "task": task,
        "node_set": prep.ds.node_set,
        "n_nodes": prep.ds.n_nodes,
        "fit_windows": loader.n_windows,
        "loader_s": time.perf_counter() - start,
    }
    if model == "linear":
        x, y = stack_windows(prep.loader(prep.fit, 4096))
        import sklearn.linear_model  # noqa: F401  (imported by fit; not part of its time)

        start = time.perf_counter()
        LinearModel(task, model_config("linear", params), run.horizon).fit(x, y)
        seconds = time.perf_counter() - start
        record.update(windows_per_s=len(x) / seconds, epoch_s=seconds, steps=1)
    else:
        net = build_for(run, prep).to(dev)
        cfg = run.train_config()
        optimiser = make_optimiser(net, cfg)
        weights = torch.ones(len(prep.ds.classes), device=dev) if task == "behaviour" else None
        regularisers = regulariser_weights(model_config(model, params))
        iterator = iter(loader)
        n_windows, seconds = 0, 0.0
        for step in range(warmup + batches):
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            if step == warmup and dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            batch = batch.to(dev)  # host → device copy counts: it is part of training
            loss, _, _ = batch_loss(net, batch, task, run.horizon, regularisers, weights)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            optimiser.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                seconds += time.perf_counter() - start
                n_windows += batch.x.shape[0]
        rate = n_windows / seconds
        flops = step_flops(net, batch, task, run.horizon, regularisers, weights) / batch.x.shape[0]
        peak = matmul_flops_per_s(dev)
        record.update(
            windows_per_s=rate,
            epoch_s=loader.n_windows / rate,
            steps=batches,
            parameters=sum(p.numel() for p in net.parameters()),
            flops_per_window=flops,
            achieved_flops_per_s=flops * rate,
            matmul_flops_per_s=peak,
            efficiency=flops * rate / peak,
        )
        if dev.type == "cuda":
            record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return record


def step_flops(net, batch, task: str, horizon: int, regularisers, weights) -> float:
    """FLOPs of one training step (forward and backward) on ``batch``, as
    ``torch.utils.flop_counter`` counts them (matrix products and convolutions; the
    elementwise work is not counted, so the efficiency below is an upper bound)."""
    from torch.utils.flop_counter import FlopCounterMode

    from wormgnn.train import batch_loss

    with FlopCounterMode(display=False) as counter:
        loss, _, _ = batch_loss(net, batch, task, horizon, regularisers, weights)
        loss.backward()
    net.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_flops_per_s(device, n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of a dense float32 (n × n)(n × n) product on ``device`` with this process's
    threads: the machine's practical limit, against which a training step is compared."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| device | task | model | nodes | windows/s | epoch (s) | loader, once (s) | "
        "MFLOP/window | of matmul FLOP/s | peak RSS (MB) | peak GPU (MB) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        gpu = f"{r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r else "–"
        flops = f"{r['flops_per_window'] / 1e6:.1f}" if "flops_per_window" in r else "–"
        share = f"{r['efficiency']:.1%}" if "efficiency" in r else "–"
        lines.append(
            f"| {r['device']} | {r['task']} | {r['label']} | {r['n_nodes'] or 'all ROIs'} | "
            f"{r['windows_per_s']:.0f} | {r['epoch_s']:.1f} | {r['loader_s']:.1f} | "
            f"{flops} | {share} | "
            f"{r['peak_rss_mb']:.0f} | {gpu} |"
        )
    if any(r["label"] == "lstm" for r in records):
        lines.append(
            "\n(lstm: torch's FLOP counter does not see inside the fused LSTM kernel, so its "
            "FLOPs and share are not meaningful)"
        )
    return "\n".join(lines)


#: (target, numerator label, denominator label, the ratio it must reach)
RATIO_TARGETS = [
    ("gnn throughput >= 1/5 of lstm (shared nodes)", "gnn", "lstm", 1 / 5),
    ("gnn on every ROI >= 1/8 of gnn on the shared set", "gnn_all", "gnn", 1 / 8),
]


def check_targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, per device and task: throughput ratios, the dense decoder
    against PyG's, and (CUDA) one GNN epoch of the fold under 5 s."""
    checks = []
    by = {(r["device"], r.get("task", "forecast"), r["label"]): r for r in records}
    for device, task in sorted({(d, t) for d, t, _ in by}):

        def rate(label: str, device: str = device, task: str = task) -> float | None:
            r = by.get((device, task, label))
            return r["windows_per_s"] if r else None

        for target, top, bottom, least in RATIO_TARGETS:
            if rate(top) and rate(bottom):
                ratio = rate(top) / rate(bottom)
                checks.append(
                    {
                        "target": target,
                        "device": device,
                        "task": task,
                        "value": ratio,
                        "passed": ratio >= least,
                    }
                )
        if rate("gnn") and rate("gnn_sparse"):
            checks.append(
                {
                    "target": "dense decoder faster than PyG MessagePassing",
                    "device": device,
                    "task": task,
                    "value": rate("gnn") / rate("gnn_sparse"),
                    "passed": rate("gnn") > rate("gnn_sparse"),
                }
            )
        gnn = by.get((device, task, "gnn"))
        if device == "cuda" and gnn:
            checks.append(
                {
                    "target": "gnn epoch of a Kato-sized lowo fold < 5 s",
                    "device": device,
                    "task": task,
                    "value": gnn["epoch_s"],
                    "passed": gnn["epoch_s"] < 5.0,
                }
            )
    return checks


def measure_in_child(
    label: str, device: str, task: str, root: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """:func:`measure` in a fresh process, so that peaks and thread pools do not mix."""
    cmd = [sys.executable, "-m", "wormgnn.bench", "--one", label, device, str(root)]
    cmd += ["--tasks", task, "--batches", str(args.batches), "--warmup", str(args.warmup)]
    cmd += ["--batch-size", str(args.batch_size)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: benchmark of {label} ({task}) on {device} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("bench"), help="folder for bench.json/.md")
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: OUT/data)"
    )
    parser.add_argument(
        "--tasks", nargs="+", default=["forecast", "behaviour"], choices=["forecast", "behaviour"]
    )
    parser.add_argument("--batches", type=int, default=30, help="timed optimiser steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own)"
    )
    parser.add_argument(
        "--devices", nargs="*", default=None, help="default: cpu, and cuda if present"
    )
    parser.add_argument("--models", nargs="*", default=None, help="labels from the case list")
    parser.add_argument(
        "--one", nargs=3, metavar=("LABEL", "DEVICE", "ROOT"), help=argparse.SUPPRESS
    )
    study = parser.add_argument_group(
        "the whole study's cost (wormgnn.studycost): --study plans it with Snakemake, runs "
        "one job of every kind, and projects the total"
    )
    study.add_argument("--study", action="store_true", help="project the study's cost")
    study.add_argument(
        "--workdir", type=Path, default=Path.cwd(), help="Snakemake's working directory"
    )
    study.add_argument("--configfile", type=Path, nargs="*", default=[], help="config file(s)")
    study.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    study.add_argument(
        "--no-run", action="store_true", help="project from the benchmark files already there"
    )
    args = parser.parse_args(argv)
    files.setup_logging()
    if args.study:
        from wormgnn import studycost

        # Snakemake runs in the working directory: name the config files from here
        missing = [str(f) for f in args.configfile if not f.is_file()]
        if missing:
            raise SystemExit(f"error: --configfile: no such file: {', '.join(missing)}")
        if args.no_run and not args.workdir.is_dir():
            raise SystemExit(f"error: --workdir {args.workdir}: no such folder to project from")
        args.workdir.mkdir(parents=True, exist_ok=True)  # a new study's working directory
        configs = [str(f.resolve()) for f in args.configfile]
        snakemake_args = ["--configfile", *configs] if configs else []
        studycost.run(
            args.workdir.resolve(),
            snakemake_args,
            args.cores,
            args.out,
            measure=not args.no_run,
        )
        return
    cases = {label: (model, params) for label, model, params in CASES}
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:  # child process: one measurement, JSON on stdout
        label, device, root = args.one
        model, params = cases[label]
        record = measure(
            Path(root),
            model,
            params,
            device,
            args.tasks[0],
            args.batches,
            args.warmup,
            args.batch_size,
        )
        print(json.dumps({"label": label, **record}))
        return

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    root = build_dataset(args.data or args.out / "data")
    records = []
    for device in devices:
        for task in args.tasks:
            for label in args.models or list(cases):
                records.append(measure_in_child(label, device, task, root, args))
                r = records[-1]
                log.info(
                    "%-9s %-15s %-4s %8.0f windows/s  epoch %6.1f s  RSS %5.0f MB",
                    task,
                    label,
                    device,
                    r["windows_per_s"],
                    r["epoch_s"],
                    r["peak_rss_mb"],
                )
    checks = check_targets(records)
    result = {
        "tasks": args.tasks,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "threads": args.threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "records": records,
        "targets": checks,
    }
    files.write_json(args.out / "bench.json", result)
    text = (
        table(records)
        + "\n\n"
        + "\n".join(
            f"- {c['target']} ({c['device']}, {c['task']}): {c['value']:.3g} → "
            + ("pass" if c["passed"] else "FAIL")
            for c in checks
        )
    )
    (args.out / "bench.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
