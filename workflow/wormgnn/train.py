"""Train one (dataset, task, protocol, model, fold, seed): ``model.pt`` and ``history.csv``.

The loop is flat: config → data → model → optimiser → ``train_epoch`` / ``evaluate`` per
epoch → keep the best on validation → stop after ``patience`` epochs without progress.
Validation is carved from the training segments only (:mod:`wormgnn.data`).

- Forecast models predict the next frame's change and are trained on their own H-step
  rollout (MSE over horizons 1..H), which is how they are evaluated.
- Behaviour models minimise class-weighted cross-entropy (weights from the training
  labels); validation selects on macro-F1.
- The GNN adds ``kl_weight`` × KL(edge posterior ‖ sparsity prior) and ``context_weight``
  × the error of its graph's model of the context (:class:`~wormgnn.models.nri.ContextDecoder`).

After every epoch the full state (model, optimiser, early-stopping counters, history and
every random generator) goes to ``model.pt.partial``; a job killed mid-training and
started again resumes from there and ends with the same numbers as an uninterrupted run.
The partial checkpoint also holds a fingerprint of what the model saw: the run config,
the content of the input files (traces, labels, folds) and the training code
(:data:`TRAINING_CODE`). A restart resumes only when all three match, else it starts
afresh and says which differs.

SIGTERM (``kill``, ``scancel``, Slurm's time limit) and SIGINT (Ctrl-C) stop the loop at
the next batch, and so does the death of the workflow that started the job (an orphaned
job stops by itself). The partial checkpoint of the last complete epoch stays on disk, so
a rerun resumes there with the same numbers; the part of an epoch that was under way is
redone.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import hashlib
import logging
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wormgnn import files
from wormgnn.connectome import load_connectome
from wormgnn.data import (
    ContextSummary,
    Dataset,
    Segments,
    SummaryCache,
    WindowLoader,
    connectome_graphs,
    fold_segments,
    load_dataset,
    name_vocabulary,
    split_validation,
)
from wormgnn.models import NEURAL_MODELS, build_model, rollout
from wormgnn.models.baselines import LinearModel, persistence_forecast
from wormgnn.models.nri import SUMMARY_NODE_DIMS, context_summary
from wormgnn.models.registry import FORECAST_ONLY, GNN_MODELS, model_config, node_set_of

log = logging.getLogger("wormgnn.train")


@dataclass
class TrainConfig:
    """``training`` in config.yaml (per-model overrides under ``models.<name>.training``)."""

    batch_size: int = 64
    max_epochs: int = 60
    patience: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    val_fraction: float = 0.15
    # Share of the training windows drawn afresh each epoch. Neighbouring windows share
    # all but one frame, so a fraction of them carries most of an epoch's information;
    # early stopping then checks validation more often per window trained on.
    epoch_fraction: float = 1.0
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class RunConfig:
    """Everything that determines one training run; saved in every checkpoint."""

    dataset: str
    task: str
    protocol: str
    model: str
    fold: int
    seed: int
    window: int = 16
    horizon: int = 5
    exclude_label_neurons: bool = True
    connectome: str = "Cook2019Herm"
    training: dict[str, Any] = field(default_factory=dict)
    model_params: dict[str, Any] = field(default_factory=dict)

    def train_config(self) -> TrainConfig:
        return files.settings(TrainConfig, self.training, "training")


#: The package's sources that decide what training computes, relative to the package
#: (a folder covers its ``.py`` files). A partial checkpoint resumes only under the same
#: code; tests check that this covers every ``wormgnn`` module ``train`` imports.
TRAINING_CODE = ("train.py", "data.py", "connectome.py", "names.py", "files.py", "models")


def code_digest() -> str:
    """sha256 over the sources in :data:`TRAINING_CODE` (their paths and contents)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for entry in TRAINING_CODE:
        root = package / entry
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(run: RunConfig, inputs: dict[str, Path]) -> dict[str, Any]:
    """What a checkpoint was fitted on: the run config, the inputs' content, the code."""
    return {
        "run": asdict(run),
        "inputs": {name: files.sha256(path) for name, path in inputs.items()},
        "code": code_digest(),
    }


def fingerprint_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why a partial checkpoint may not be resumed (``None`` when it may)."""
    if "fingerprint" not in saved:
        return "it has no fingerprint of its inputs (written by an older wormgnn)"
    old = saved["fingerprint"]
    if old["run"] != current["run"]:
        changed = sorted(k for k in current["run"] if old["run"].get(k) != current["run"][k])
        return f"it was written with another configuration (changed: {', '.join(changed)})"
    changed = sorted(k for k in current["inputs"] if old["inputs"].get(k) != current["inputs"][k])
    if changed:
        return f"its input files have changed since ({', '.join(changed)})"
    if old["code"] != current["code"]:
        return "the training code has changed since"
    return None


class Stopped(Exception):
    """Training was asked to stop: by a signal (``status`` 128 + its number), or because
    the workflow that started it is gone (``status`` 1)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


def ancestors() -> tuple[int, int] | None:
    """(parent, grandparent) process IDs; ``None`` where ``/proc`` cannot tell."""
    try:
        parent = os.getppid()
        with open(f"/proc/{parent}/stat") as handle:
            # the command name (2nd field) may hold spaces; the 4th field is its parent
            return parent, int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class StopOnSignal:
    """While active, SIGTERM and SIGINT set :attr:`signum` instead of ending the process;
    the training loop checks it before each batch (:meth:`check`).

    :meth:`check` also notices, once a second, when the job has been orphaned: Snakemake
    runs ``bash -c`` → ``python``, and when Snakemake dies (``kill -9``, a lost session)
    or the shell does, the parent or grandparent process changes. The job then stops as
    on SIGTERM instead of running on unseen."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, watch_every_s: float = 1.0) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._family = ancestors()
        self._watch_every_s = watch_every_s
        self._watched = time.monotonic()

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        log.warning("%s received: stopping at the next batch", signal.Signals(signum).name)

    def check(self) -> None:
        if self.signum is not None:
            raise Stopped(f"stopped by {signal.Signals(self.signum).name}", 128 + self.signum)
        now = time.monotonic()
        if self._family is not None and now - self._watched >= self._watch_every_s:
            self._watched = now
            if ancestors() != self._family:
                log.warning("the process that started this job is gone: stopping")
                raise Stopped("stopped: the workflow that started this job is gone", 1)

    def __enter__(self) -> StopOnSignal:
        try:
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: signals cannot be caught here
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


#: Deterministic mode's debugging aid, filling every new tensor with NaN, stays off: no
#: result reads memory before writing it (a test trains each kind of neural model with
#: it on and off and gets the same fit, to the bit), and the fill was 16 % of an LSTM step on
#: the CPU, whose oneDNN backward allocates per time step.
FILL_UNINITIALIZED = False


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for data shuffling."""
    random.seed(seed)
    # Our code passes explicit generators; the global NumPy state is seeded (and saved on
    # resume) for libraries that still draw from it.
    np.random.seed(seed)  # noqa: NPY002
    # cuBLAS is deterministic only with a fixed workspace, set before CUDA starts; the
    # first seed's reuse of selection's fit and a resume rely on reproducible runs.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)  # every device's generator
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = FILL_UNINITIALIZED
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "training.device is 'cuda' but no CUDA device is available; use auto or cpu"
        )
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


# --------------------------------------------------------------------------- data
@dataclass
class Prepared:
    ds: Dataset
    fit: Segments
    val: Segments
    test: Segments
    graphs: dict[int, torch.Tensor] | None
    context: int = 0  # frames of causal context the model's encoder reads (gnn)
    vocabulary: list[str] | None = None  # the training worms' names (GNNs with identity)
    inputs: dict[str, Path] = field(default_factory=dict)  # the files it was read from
    split: str = ""  # how validation was drawn (selection only)
    summary: ContextSummary | None = None  # what the model reads from the context (gnn)
    # its loaders' summaries, for the next loader over the same windows (a seed, a resume)
    cache: SummaryCache = field(default_factory=SummaryCache)

    def loader(
        self,
        segments: Segments,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        fraction: float = 1.0,
    ) -> WindowLoader:
        """Windows of ``segments`` with everything this model reads (``fraction``: of
        them per pass, drawn afresh each time; see :class:`WindowLoader`)."""
        return WindowLoader(
            self.ds,
            segments,
            batch_size,
            shuffle,
            generator,
            self.graphs,
            self.context,
            self.vocabulary,
            self.summary,
            fraction,
            self.cache,
        )


def selection_split(
    train: Segments, protocol: str, val_fraction: float, gap: int
) -> tuple[Segments, Segments, str]:
    """Hyperparameter selection's (fit, validation) inside a fold's training data: across
    worms (``lowo``, ``lodo``) with two or more training worms, the last training worm is
    held out; otherwise the end of each training worm's frames, as training does."""
    worms = sorted(train)
    if protocol in ("lowo", "lodo") and len(worms) >= 2:
        held = worms[-1]
        fit = {w: segs for w, segs in train.items() if w != held}
        return fit, {held: train[held]}, f"training worm {held} held out"
    fit, val = split_validation(train, val_fraction, gap)
    return fit, val, f"the last {val_fraction:.0%} of each training worm's frames"


def prepare(
    run: RunConfig,
    traces: Path,
    labels: Path,
    folds: Path,
    selection: bool = False,
    cache: SummaryCache | None = None,
) -> Prepared:
    """Load the node set the model needs and this fold's fit/validation/test segments.
    With ``selection``, only the fold's training worms are read, split by
    :func:`selection_split`, and there is no test segment. ``cache``: context summaries
    shared with other preparations of the same files (a selection's candidates)."""
    mcfg = model_config(run.model, run.model_params)
    if run.task == "behaviour" and run.model in FORECAST_ONLY:
        raise ValueError(f"{run.model} is a forecast-only model; it has no behaviour variant")
    train, test = fold_segments(folds, run.protocol, run.fold)
    ds = load_dataset(
        traces,
        labels,
        run.task,
        node_set_of(run.model, mcfg),
        run.window,
        run.horizon,
        run.exclude_label_neurons,
        only_worms=set(train) if selection else None,
    )
    cfg = run.train_config()
    split = ""
    if selection:
        fit, val, split = selection_split(train, run.protocol, cfg.val_fraction, ds.span)
        train, test = fit, {}
    else:
        fit, val = split_validation(train, cfg.val_fraction, gap=ds.span)
    graphs = None
    if run.model in ("gnn_connectome", "gnn_shuffled"):  # wiring permuted by the seed
        shuffle = run.seed if run.model == "gnn_shuffled" else None
        graphs = connectome_graphs(ds, load_connectome(run.connectome), shuffle)
    context, summary = 0, None
    if run.model == "gnn":
        context = mcfg.context_frames
        # the context loss's statistics only where there is a context loss
        samples = None if mcfg.context_weight > 0 else 0
        settings = {"lags": mcfg.context_lags, "samples": samples, "senders": mcfg.sender_count}
        summary = ContextSummary(
            functools.partial(context_summary, **settings),
            SUMMARY_NODE_DIMS,
            settings=tuple(sorted(settings.items())),
        )
    named = run.model in GNN_MODELS and run.task in mcfg.identity
    vocabulary = name_vocabulary(ds, train) if named else None
    inputs = {"traces": Path(traces), "labels": Path(labels), "folds": Path(folds)}
    return Prepared(
        ds,
        fit,
        val,
        test,
        graphs,
        context,
        vocabulary,
        inputs,
        split,
        summary,
        cache if cache is not None else SummaryCache(),
    )


def stack_windows(loader: WindowLoader) -> tuple[np.ndarray, np.ndarray]:
    """All windows of a fixed-size loader as arrays: x (B, N, W, C), y."""
    xs, ys = [], []
    for batch in loader:
        xs.append(batch.x.numpy())
        ys.append(batch.y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------- neural
#: Regularisers a model may return in its :class:`ModelOutput`, and the config field of
#: each one's weight.
REGULARISERS = {"kl": "kl_weight", "context_loss": "context_weight"}


def regulariser_weights(model_config: Any) -> dict[str, float]:
    """The weight of each regulariser under a model's config (0 where it has none)."""
    return {name: getattr(model_config, key, 0.0) for name, key in REGULARISERS.items()}


def batch_loss(
    model: torch.nn.Module,
    batch,
    task: str,
    horizon: int,
    weights: dict[str, float],
    class_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Loss of one batch; returns (loss, predictions, parts for logging). ``weights``
    (from :func:`regulariser_weights`) weighs the regularisers the model returns."""
    if task == "forecast":
        pred, first = rollout(model, batch.x, batch.mask, batch.graph, horizon, **batch.inputs)
        err = (pred - batch.y) ** 2 * batch.mask[:, :, None]
        data_loss = err.sum() / (batch.mask.sum() * horizon)
    else:
        first = model(batch.x, batch.mask, batch.graph, **batch.inputs)
        pred = first.pred
        data_loss = F.cross_entropy(pred, batch.y, weight=class_weights)
    loss = data_loss
    parts = {"data": float(data_loss.detach())}
    for name in REGULARISERS:
        value = getattr(first, name)
        if value is not None:
            loss = loss + weights[name] * value
            parts[name] = float(value.detach())
    return loss, pred, parts


def train_epoch(
    model,
    loader,
    optimiser,
    run: RunConfig,
    cfg: TrainConfig,
    device,
    weights,
    class_weights,
    stop: StopOnSignal | None = None,
) -> dict[str, float]:
    model.train()
    totals: dict[str, float] = {}
    n = 0
    bar = tqdm(loader, desc="train", leave=False, file=sys.stderr, disable=None)
    for batch in bar:
        if stop is not None:
            stop.check()
        batch = batch.to(device)
        loss, _, parts = batch_loss(model, batch, run.task, run.horizon, weights, class_weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimiser.step()
        b = batch.x.shape[0]
        n += b
        for key, value in {"loss": float(loss.detach()), **parts}.items():
            totals[key] = totals.get(key, 0.0) + value * b
    return {k: v / max(n, 1) for k, v in totals.items()}


@torch.no_grad()
def evaluate(model, loader, run: RunConfig, device, weights, class_weights) -> dict[str, float]:
    """Validation loss and the selection metric (forecast: -MSE; behaviour: macro-F1)."""
    model.eval()
    total, n = 0.0, 0
    sq, count = 0.0, 0.0
    y_true, y_pred = [], []
    for batch in loader:
        batch = batch.to(device)
        loss, pred, _ = batch_loss(model, batch, run.task, run.horizon, weights, class_weights)
        total += float(loss) * batch.x.shape[0]
        n += batch.x.shape[0]
        if run.task == "forecast":
            sq += float(((pred - batch.y) ** 2 * batch.mask[:, :, None]).sum())
            count += float(batch.mask.sum()) * run.horizon
        else:
            y_true.append(batch.y.cpu().numpy())
            y_pred.append(pred.argmax(1).cpu().numpy())
    if run.task == "forecast":
        score = -sq / max(count, 1.0)
    else:
        score = macro_f1(np.concatenate(y_true), np.concatenate(y_pred))
    return {"val_loss": total / max(n, 1), "val_score": score}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """scikit-learn's macro-F1, imported only by the jobs that score behaviour."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro"))


def class_weights_of(ds: Dataset, loader: WindowLoader) -> torch.Tensor:
    """Inverse-frequency class weights from the training windows only."""
    labels = np.concatenate(
        [
            ds.worms[w].labels[loader.start_of[loader.worm_of == w] + ds.window - 1]
            for w in np.unique(loader.worm_of)
        ]
    )
    counts = np.bincount(labels, minlength=len(ds.classes)).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(ds.classes), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every generator a training run draws from; on a GPU also the device's own, from
    which its Gumbel noise and dropout masks come (a CPU run never starts CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def build_for(run: RunConfig, prep: Prepared) -> torch.nn.Module:
    """The run's neural model, sized for the dataset's node set, channels, classes and
    names."""
    ds = prep.ds
    return build_model(
        run.model,
        run.task,
        model_config(run.model, run.model_params),
        n_nodes=ds.n_nodes,
        window=ds.window,
        in_channels=ds.in_channels,
        n_classes=len(ds.classes),
        n_names=len(prep.vocabulary or ()),
    )


def make_optimiser(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, in torch's fused form: the same update as the loop over parameters, in
    one kernel (a GNN step's optimiser update falls from 2.4 to 0.6 ms on the CPU; on the
    CPU from torch 2.4, hence the project's floor)."""
    return torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )


def partial_of(out: Path) -> Path:
    """Where training keeps its resume point beside ``out``."""
    return out.with_name(out.name + ".partial")


@dataclass
class Paused:
    """A run stopped by ``until_epoch`` (:func:`fit_neural`) before early stopping or
    ``max_epochs`` ended it: its resume point holds ``epoch`` epochs, and ``history``
    their rows."""

    epoch: int
    history: list[dict[str, Any]]


def best_until(history: list[dict[str, Any]], epoch: int) -> float:
    """The best validation score of a run's first ``epoch`` epochs (history rows)."""
    scores = [float(row["val_score"]) for row in history if int(row["epoch"]) <= epoch]
    return max(scores, default=-np.inf)


def fit_neural(
    run: RunConfig,
    prep: Prepared,
    out: Path,
    history_out: Path,
    keep_partial: bool = False,
    until_epoch: int | None = None,
) -> dict[str, Any] | Paused:
    """Train with early stopping, saving a resume point after every epoch; a finished
    run deletes it unless ``keep_partial`` (:func:`train_seeds`). With ``until_epoch``,
    a run that has not finished by then stops there and returns :class:`Paused`,
    keeping its resume point and writing no outputs; called again without it, the run
    resumes and ends exactly as one run would (selection's successive halving)."""
    cfg = run.train_config()
    device = resolve_device(cfg.device)
    generator = seed_everything(run.seed)
    ds = prep.ds
    mcfg = model_config(run.model, run.model_params)
    model = build_for(run, prep).to(device)
    optimiser = make_optimiser(model, cfg)
    fit_loader = prep.loader(prep.fit, cfg.batch_size, True, generator, cfg.epoch_fraction)
    val_loader = prep.loader(prep.val, cfg.batch_size)
    if fit_loader.n_windows == 0 or val_loader.n_windows == 0:
        raise ValueError(
            f"fold {run.fold}: no complete training or validation windows "
            f"({fit_loader.n_windows}, {val_loader.n_windows}); shorten the window"
        )
    class_weights = class_weights_of(ds, fit_loader).to(device) if run.task == "behaviour" else None
    weights = regulariser_weights(mcfg)
    log.info(
        "%s/%s/%s fold %d seed %d on %s (%d torch threads, OMP_NUM_THREADS=%s): %d fit, "
        "%d val windows, %s nodes, %d parameters",
        run.task,
        run.protocol,
        run.model,
        run.fold,
        run.seed,
        device,
        torch.get_num_threads(),
        os.environ.get("OMP_NUM_THREADS", "unset"),
        fit_loader.n_windows,
        val_loader.n_windows,
        ds.n_nodes or "variable",
        sum(p.numel() for p in model.parameters()),
    )

    partial = partial_of(out)
    fingerprint_now = fingerprint(run, prep.inputs)
    state = {
        "epoch": 0,
        "best_score": -np.inf,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "best_state": None,
    }
    if partial.exists():
        saved = torch.load(partial, map_location=device, weights_only=False)
        why = fingerprint_mismatch(saved, fingerprint_now)
        if why is None:
            model.load_state_dict(saved["model"])
            optimiser.load_state_dict(saved["optimiser"])
            _set_rng_state(saved["rng"], generator, device)
            state = saved["state"]
            log.info("resuming from the checkpoint of epoch %d (%s)", state["epoch"], partial)
        else:
            log.warning("not resuming from %s: %s; starting afresh", partial, why)

    with StopOnSignal() as stop:
        try:
            while state["epoch"] < cfg.max_epochs and state["bad_epochs"] < cfg.patience:
                if until_epoch is not None and state["epoch"] >= until_epoch:
                    log.info("paused after epoch %d; %s holds it", state["epoch"], partial)
                    return Paused(state["epoch"], state["history"])
                epoch = state["epoch"] + 1
                start = time.perf_counter()
                train_stats = train_epoch(
                    model, fit_loader, optimiser, run, cfg, device, weights, class_weights, stop
                )
                stop.check()
                train_seconds = time.perf_counter() - start
                val_stats = evaluate(model, val_loader, run, device, weights, class_weights)
                row = {
                    "epoch": epoch,
                    "train_loss": train_stats["loss"],
                    "train_kl": train_stats.get("kl", 0.0),
                    "train_context": train_stats.get("context_loss", 0.0),
                    **val_stats,
                    "seconds": time.perf_counter() - start,
                    "train_windows_per_s": fit_loader.windows_per_pass / train_seconds,
                }
                state["history"].append(row)
                if val_stats["val_score"] > state["best_score"]:
                    state.update(
                        best_score=val_stats["val_score"],
                        best_epoch=epoch,
                        bad_epochs=0,
                        best_state={
                            k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                        },
                    )
                else:
                    state["bad_epochs"] += 1
                state["epoch"] = epoch
                log.info(
                    "epoch %3d  train %.4f  val %.4f  val_score %.4f  %.1fs%s",
                    epoch,
                    row["train_loss"],
                    row["val_loss"],
                    row["val_score"],
                    row["seconds"],
                    "  *" if state["best_epoch"] == epoch else "",
                )
                save_partial(partial, fingerprint_now, model, optimiser, generator, device, state)
        except Stopped:
            log.warning(
                "stopped during epoch %d; %s; rerun to resume",
                state["epoch"] + 1,
                f"{partial} holds epoch {state['epoch']}"
                if state["epoch"] > 0
                else "no epoch was complete, so a rerun starts afresh",
            )
            raise
    log.info("best epoch %d (val_score %.4f)", state["best_epoch"], state["best_score"])
    checkpoint = {
        "state_dict": state["best_state"],
        "best_epoch": state["best_epoch"],
        "best_val_score": state["best_score"],
    }
    write_history(history_out, state["history"])
    save_checkpoint(out, run, prep, checkpoint, fingerprint_now)
    if not keep_partial:
        partial.unlink(missing_ok=True)
    return checkpoint


def save_partial(
    partial: Path, fingerprint_now, model, optimiser, generator, device, state
) -> None:
    """Everything a restarted job needs to continue exactly where this epoch ended."""
    with files.atomic_path(partial) as tmp:
        torch.save(
            {
                "fingerprint": fingerprint_now,
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "rng": _rng_state(generator, device),
                "state": state,
            },
            tmp,
        )


# --------------------------------------------------------------------------- outputs
def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        keys = list(rows[0]) if rows else ["epoch"]
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def read_history(path: Path) -> list[dict[str, str]]:
    """The rows :func:`write_history` wrote (values as text)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def save_checkpoint(
    out: Path,
    run: RunConfig,
    prep: Prepared,
    payload: dict[str, Any],
    fingerprint_now: dict[str, Any] | None = None,
) -> None:
    ds = prep.ds
    fingerprint_now = fingerprint_now or fingerprint(run, prep.inputs)
    meta = {
        "inputs_sha256": fingerprint_now["inputs"],
        "code_sha256": fingerprint_now["code"],
        "node_set": ds.node_set,
        "n_nodes": ds.n_nodes,
        "channels": ds.channels,
        "classes": ds.classes,
        "names": {str(w): wd.names for w, wd in ds.worms.items()},
        "vocabulary": prep.vocabulary,
        "split": split_key(prep),
    }
    with files.atomic_path(out) as tmp:
        torch.save({"format": 1, "run": asdict(run), "meta": meta, **payload}, tmp)


def split_key(prep: Prepared) -> str:
    """The frames a run fitted on and validated on, as one comparable string."""
    return files.json.dumps(
        {
            part: {str(w): [[int(a), int(b)] for a, b in segs] for w, segs in sorted(s.items())}
            for part, s in (("fit", prep.fit), ("val", prep.val))
        },
        sort_keys=True,
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def fit_classical(run: RunConfig, prep: Prepared, out: Path, history_out: Path) -> dict[str, Any]:
    """``persistence`` (nothing to fit) and ``linear`` (closed form / sklearn)."""
    seed_everything(run.seed)
    payload: dict[str, Any] = {"state_dict": None, "best_epoch": 0}
    fit_loader = prep.loader(prep.fit, 4096)
    val_loader = prep.loader(prep.val, 4096)
    x_val, y_val = stack_windows(val_loader)
    if run.model == "linear":
        x_fit, y_fit = stack_windows(fit_loader)
        model = LinearModel(run.task, model_config("linear", run.model_params), run.horizon).fit(
            x_fit, y_fit, run.seed
        )
        payload["linear"] = {k: torch.from_numpy(np.asarray(v)) for k, v in model.params.items()}
        pred = model.predict(x_val) if run.task == "forecast" else model.predict_classes(x_val)
    else:
        pred = persistence_forecast(x_val, run.horizon)
    if run.task == "forecast":
        score = -float(np.mean((pred - y_val) ** 2))
    else:
        score = macro_f1(y_val, pred)
    payload["best_val_score"] = score
    write_history(
        history_out, [{"epoch": 1, "val_score": score, "n_fit_windows": fit_loader.n_windows}]
    )
    save_checkpoint(out, run, prep, payload)
    log.info("%s: val_score %.4f", run.model, score)
    return payload


def run_training(
    run: RunConfig,
    traces: Path,
    labels: Path,
    folds: Path,
    out: Path,
    history: Path,
    keep_partial: bool = False,
    selection: Path | None = None,
) -> dict[str, Any]:
    """Fit one seed; a neural run that ``selection``'s chosen candidate already is
    (:func:`selected_fit`) takes that fit instead of training again."""
    prep = prepare(run, traces, labels, folds)
    if run.model in NEURAL_MODELS:
        if selection is not None and (reused := selected_fit(run, prep, selection)):
            checkpoint, fitted_history, fingerprint_now = reused
            with files.atomic_path(history) as tmp:
                shutil.copyfile(fitted_history, tmp)
            save_checkpoint(out, run, prep, checkpoint, fingerprint_now)
            return checkpoint
        return fit_neural(run, prep, out, history, keep_partial)
    return fit_classical(run, prep, out, history)


def selected_fit(
    run: RunConfig, prep: Prepared, selection: Path
) -> tuple[dict[str, Any], Path, dict[str, Any]] | None:
    """The chosen candidate's fit (checkpoint, history, fingerprint) when ``select``
    already trained exactly this run: the same configuration and seed, input files, code,
    and fit and validation frames. That holds where selection validates as training does
    (``within``, or one training worm); training it again would repeat the same numbers."""
    summary = files.read_json(selection)
    chosen = summary.get("chosen_fit")
    if not chosen or summary.get("seed") != run.seed:
        return None
    model = selection.parent / chosen
    history = model.with_suffix(".csv")
    if not (model.exists() and history.exists()):
        return None
    saved = load_checkpoint(model)
    meta = saved["meta"]
    if meta.get("split") != split_key(prep):
        return None  # selection held a training worm out
    now = fingerprint(run, prep.inputs)
    then = {"run": saved["run"], "inputs": meta["inputs_sha256"], "code": meta["code_sha256"]}
    why = fingerprint_mismatch({"fingerprint": then}, now)
    if why is not None:
        log.info("seed %d: not taking selection's fit %s: %s", run.seed, model, why)
        return None
    log.info(
        "seed %d: selection trained this very run (same settings, seed and split); "
        "using its fit, %s",
        run.seed,
        model,
    )
    keep = ("state_dict", "best_epoch", "best_val_score")
    return {k: saved[k] for k in keep}, history, now


def with_point(run: RunConfig, point: dict[str, Any]) -> RunConfig:
    """``run`` with hyperparameters set: ``training.<key>`` in its training settings,
    any other key in its model parameters."""
    training, params = dict(run.training), dict(run.model_params)
    for key, value in point.items():
        if key.startswith("training."):
            training[key.removeprefix("training.")] = value
        else:
            params[key] = value
    return replace(run, training=training, model_params=params)


def apply_selection(run: RunConfig, selection: Path) -> RunConfig:
    """``run`` with the hyperparameters that ``select`` chose for its fold."""
    chosen = files.read_json(selection)
    where = {k: chosen["run"][k] for k in ("dataset", "task", "protocol", "model", "fold")}
    if where != {k: getattr(run, k) for k in where}:
        raise ValueError(f"{selection} is the selection of {where}, not of this run")
    return with_point(run, chosen["chosen"])


def parse_run(
    argv: list[str] | None,
    description: str,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[argparse.Namespace, RunConfig]:
    """Arguments shared by ``train``, ``evaluate`` and ``select`` (which adds its own
    through ``more`` and has no model file)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--traces", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--folds", type=Path, required=True)
    parser.add_argument(
        "--model-file", type=Path, nargs="+", required=more is None, help="model.pt, per seed"
    )
    parser.add_argument("--run", required=True, help="the resolved run config, as JSON")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="run each of these seeds in turn (default: the run's seed); the files per seed "
        "are given in the same order",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--history", type=Path, nargs="+", help="history.csv per seed (train)")
    parser.add_argument("--metrics", type=Path, nargs="+", help="metrics.json per seed (evaluate)")
    parser.add_argument(
        "--predictions", type=Path, nargs="+", help="predictions.h5 per seed (evaluate)"
    )
    parser.add_argument(
        "--truth", type=Path, default=None, help="synthetic ground truth (evaluate)"
    )
    parser.add_argument(
        "--selection", type=Path, default=None, help="selection.json: the chosen hyperparameters"
    )
    if more is not None:
        more(parser)
    args = parser.parse_args(argv)
    files.setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    values = files.parse_json_arg(args.run, "run")
    try:
        run = RunConfig(**values)
        if args.selection:
            run = apply_selection(run, args.selection)
    except TypeError as err:
        raise SystemExit(f"error: --run: {err}") from err
    except (ValueError, KeyError) as err:
        raise SystemExit(f"error: --selection: {err}") from err
    return args, run


def seed_runs(
    args: argparse.Namespace, run: RunConfig, options: list[str]
) -> list[tuple[RunConfig, list[Path]]]:
    """The run of each of ``--seeds`` (default: the run's own seed) and its files: the
    i-th seed takes the i-th path of each of ``options`` (``model_file``, ...)."""
    seeds = args.seeds or [run.seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {seeds}: a seed is given twice")
    paths = {name: getattr(args, name) or [] for name in options}
    for name, given in paths.items():
        if len(given) != len(seeds):
            raise ValueError(
                f"--{name.replace('_', '-')}: {len(given)} path(s) for the {len(seeds)} "
                f"seed(s) {seeds}; give one per seed, in the same order"
            )
    return [
        (replace(run, seed=seed), [paths[name][i] for name in options])
        for i, seed in enumerate(seeds)
    ]


@contextlib.contextmanager
def command_errors(resume: str = "rerun to resume") -> Iterator[None]:
    """A module's ``main``: bad input (ValueError) ends with its ``error: ...`` line, and
    a stop by signal with its message, ``resume`` and the signal's exit status."""
    try:
        yield
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    except Stopped as stopped:
        print(f"error: {stopped}; {resume}", file=sys.stderr)
        raise SystemExit(stopped.status) from None


def train_seeds(
    runs: list[tuple[RunConfig, list[Path]]],
    traces: Path,
    labels: Path,
    folds: Path,
    selection: Path | None = None,
) -> None:
    """Train each (run, [model file, history]) in turn, in this one process: each seed
    is seeded and built afresh, so its numbers are those of a job for it alone. A
    finished seed keeps its resume point until every seed is done: Snakemake removes a
    failed job's outputs, and a rerun then rewrites a finished seed's files from it
    without training again."""
    many = len(runs) > 1
    for i, (run, (out, history)) in enumerate(runs, start=1):
        if many:
            log.info("seed %d (%d of %d)", run.seed, i, len(runs))
        run_training(run, traces, labels, folds, out, history, many, selection)
    for _, (out, _) in runs:
        partial_of(out).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    args, run = parse_run(argv, "Train one model on one fold, for each of its seeds.")
    with command_errors("rerun to resume from the last complete epoch"):
        runs = seed_runs(args, run, ["model_file", "history"])
        train_seeds(runs, args.traces, args.labels, args.folds, args.selection)


if __name__ == "__main__":
    main()
