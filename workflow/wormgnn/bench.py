"""Training benchmark: throughput, epoch time and peak memory of every model.

    python -m wormgnn.bench --out bench/           # CPU, and CUDA when present

On a Kato-sized synthetic dataset (5 worms, about 3100 frames at about 3 fps, 110-130
ROIs of which 40 are identified in every worm), it trains each model on the first
``lowo`` fold for ``--batches`` optimiser steps after ``--warmup`` steps, and reports
windows per second, the implied time of one epoch over the fold's training windows, and
peak memory (process RSS on the CPU, ``max_memory_allocated`` on CUDA). Each (model,
device) runs in its own process so that peaks do not mix. The GNN is measured with the
dense decoder (the default), with PyG's sparse ``MessagePassing`` on the same fully
connected graphs, and on every ROI (``node_set: all``).

Writes ``bench.json`` and ``bench.md`` (a table) to ``--out``, and checks two targets:
the GNN trains at no less than 1/5 of the LSTM's throughput on the shared node set, and
one GNN epoch of the fold takes under 5 s on a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import logging
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
    ("gnn_all", "gnn", {"node_set": "all"}),
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
    loader = prep.loader(prep.fit, batch_size, True, generator)
    record: dict[str, Any] = {
        "device": device,
        "task": task,
        "node_set": prep.ds.node_set,
        "n_nodes": prep.ds.n_nodes,
        "fit_windows": loader.n_windows,
    }
    if model == "linear":
        x, y = stack_windows(prep.loader(prep.fit, 4096))
        start = time.perf_counter()
        LinearModel(task, model_config("linear", params), run.horizon).fit(x, y)
        seconds = time.perf_counter() - start
        record.update(windows_per_s=len(x) / seconds, epoch_s=seconds, steps=1)
    else:
        net = build_for(run, prep).to(dev)
        optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
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
            optimiser.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                seconds += time.perf_counter() - start
                n_windows += batch.x.shape[0]
        rate = n_windows / seconds
        record.update(
            windows_per_s=rate,
            epoch_s=loader.n_windows / rate,
            steps=batches,
            parameters=sum(p.numel() for p in net.parameters()),
        )
        if dev.type == "cuda":
            record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return record


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| device | model | nodes | windows/s | epoch (s) | peak RSS (MB) | peak GPU (MB) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        gpu = f"{r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r else "–"
        lines.append(
            f"| {r['device']} | {r['label']} | {r['n_nodes'] or 'all ROIs'} | "
            f"{r['windows_per_s']:.0f} | {r['epoch_s']:.1f} | {r['peak_rss_mb']:.0f} | {gpu} |"
        )
    return "\n".join(lines)


def check_targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    by = {(r["device"], r["label"]): r for r in records}
    for device in sorted({r["device"] for r in records}):
        gnn, lstm = by.get((device, "gnn")), by.get((device, "lstm"))
        if gnn and lstm:
            ratio = gnn["windows_per_s"] / lstm["windows_per_s"]
            checks.append(
                {
                    "target": "gnn throughput >= 1/5 of lstm (shared nodes)",
                    "device": device,
                    "value": ratio,
                    "passed": ratio >= 0.2,
                }
            )
        dense, sparse = by.get((device, "gnn")), by.get((device, "gnn_sparse"))
        if dense and sparse:
            checks.append(
                {
                    "target": "dense decoder faster than PyG MessagePassing",
                    "device": device,
                    "value": dense["windows_per_s"] / sparse["windows_per_s"],
                    "passed": dense["windows_per_s"] > sparse["windows_per_s"],
                }
            )
        if device == "cuda" and gnn:
            checks.append(
                {
                    "target": "gnn epoch of a Kato-sized lowo fold < 5 s",
                    "device": device,
                    "value": gnn["epoch_s"],
                    "passed": gnn["epoch_s"] < 5.0,
                }
            )
    return checks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("bench"), help="folder for bench.json/.md")
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: OUT/data)"
    )
    parser.add_argument("--task", default="forecast", choices=["forecast", "behaviour"])
    parser.add_argument("--batches", type=int, default=30, help="timed optimiser steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--devices", nargs="*", default=None, help="default: cpu, and cuda if present"
    )
    parser.add_argument("--models", nargs="*", default=None, help="labels from the case list")
    parser.add_argument(
        "--one", nargs=3, metavar=("LABEL", "DEVICE", "ROOT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    files.setup_logging()
    cases = {label: (model, params) for label, model, params in CASES}
    if args.one:  # child process: one measurement, JSON on stdout
        label, device, root = args.one
        model, params = cases[label]
        record = measure(
            Path(root), model, params, device, args.task, args.batches, args.warmup, args.batch_size
        )
        print(json.dumps({"label": label, **record}))
        return
    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    root = build_dataset(args.data or args.out / "data")
    records = []
    for device in devices:
        for label in args.models or list(cases):
            cmd = [
                sys.executable,
                "-m",
                "wormgnn.bench",
                "--one",
                label,
                device,
                str(root),
                "--task",
                args.task,
                "--batches",
                str(args.batches),
                "--warmup",
                str(args.warmup),
                "--batch-size",
                str(args.batch_size),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"error: benchmark of {label} on {device} failed:\n{done.stderr}")
            records.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = records[-1]
            log.info(
                "%-15s %-4s %8.0f windows/s  epoch %6.1f s  RSS %5.0f MB",
                label,
                device,
                r["windows_per_s"],
                r["epoch_s"],
                r["peak_rss_mb"],
            )
    checks = check_targets(records)
    result = {
        "task": args.task,
        "batch_size": args.batch_size,
        "batches": args.batches,
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
            f"- {c['target']} ({c['device']}): {c['value']:.3g} → "
            + ("pass" if c["passed"] else "FAIL")
            for c in checks
        )
    )
    (args.out / "bench.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
