"""Windows of activity for training and evaluation, per fold, without leakage.

A *window* starting at frame ``s`` holds the input frames ``s .. s+W-1``; for
``forecast`` its targets are frames ``s+W .. s+W+H-1`` of the ΔF/F channel, for
``behaviour`` the class label at frame ``s+W-1``. Windows never cross a segment border,
so no training window reaches into a test block (or into its ``within`` gap).

The validation split is carved from the training segments only: the last
``val_fraction`` of each training worm's frames, with a gap of ``W+H`` frames so that no
training window overlaps a validation window. Test worms and test segments are never
touched by anything fitted.

Node sets:
- ``shared``: the identified neurons present in every worm, in one fixed (sorted) order,
  so fixed-size models can use them.
- ``all``: every ROI of each worm (the count differs per worm); batches are padded and
  carry a node mask.
For ``behaviour``, the label-defining neurons are removed from both sets by default.

Node names: models with a name embedding (``identity``) get each node's index in a
*vocabulary*, the sorted names of the training worms (:func:`name_vocabulary`); unnamed
ROIs and names the training worms lacked are 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from wormgnn import files
from wormgnn.connectome import Connectome
from wormgnn.models.common import model_inputs

log = logging.getLogger("wormgnn.data")

TASKS = ("forecast", "behaviour")
NODE_SETS = ("shared", "all")


@dataclass
class Worm:
    """One worm's preprocessed activity, restricted to a node set.

    Shapes: ``x`` (T, N, C); ``labels`` (T,) with -1 for excluded frames.
    """

    worm: int
    x: torch.Tensor
    names: list[str]
    roi_index: np.ndarray
    labels: np.ndarray | None
    fps: float

    @property
    def n_nodes(self) -> int:
        return self.x.shape[1]


@dataclass
class Dataset:
    worms: dict[int, Worm]
    task: str
    node_set: str
    channels: list[str]
    classes: list[str]
    window: int
    horizon: int

    @property
    def in_channels(self) -> int:
        return len(self.channels)

    @property
    def n_nodes(self) -> int | None:
        """The fixed node count of the ``shared`` set; ``None`` for ``all``."""
        sizes = {w.n_nodes for w in self.worms.values()}
        return sizes.pop() if self.node_set == "shared" and len(sizes) == 1 else None

    @property
    def span(self) -> int:
        """Frames one window occupies: inputs plus forecast targets."""
        return self.window + (self.horizon if self.task == "forecast" else 0)


def load_dataset(
    traces_path: Path,
    labels_path: Path,
    task: str,
    node_set: str,
    window: int,
    horizon: int,
    exclude_label_neurons: bool = True,
    only_worms: set[int] | None = None,
) -> Dataset:
    """Read ``traces.h5`` (and ``labels.h5``) into per-worm tensors for one node set;
    ``only_worms``: read these worms' traces and labels only (selection never reads the
    test worm)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is unknown; use one of {TASKS}")
    if node_set not in NODE_SETS:
        raise ValueError(f"node_set {node_set!r} is unknown; use one of {NODE_SETS}")
    worms = {}
    with h5py.File(traces_path, "r") as tr, h5py.File(labels_path, "r") as lb:
        channels = files.read_strings(tr["channels"])
        classes = files.read_strings(lb["classes"])
        shared = files.read_strings(tr["shared_neurons"])
        use_channels = [0] if task == "forecast" else list(range(len(channels)))
        blocked: set[str] = set()
        if task == "behaviour" and exclude_label_neurons:
            for key in lb["worms"]:
                names = files.read_strings(tr[f"worms/{key}/names"])
                usable = lb[f"worms/{key}/behaviour_input"][()]
                blocked |= {n for n, ok in zip(names, usable, strict=True) if n and not ok}
        for key in sorted(tr["worms"], key=int):
            if only_worms is not None and int(key) not in only_worms:
                continue
            g = tr[f"worms/{key}"]
            names = files.read_strings(g["names"])
            if node_set == "shared":
                pos = {n: i for i, n in enumerate(names)}
                keep = [pos[n] for n in shared if n not in blocked]
            else:
                keep = [i for i, n in enumerate(names) if n not in blocked]
            x = g["traces"][()][:, keep][:, :, use_channels]
            labels = lb[f"worms/{key}/labels"][()].astype(np.int64) if task == "behaviour" else None
            worms[int(key)] = Worm(
                worm=int(key),
                x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                names=[names[i] for i in keep],
                roi_index=g["roi_index"][()][keep],
                labels=labels,
                fps=float(g.attrs["fps"]),
            )
    if node_set == "shared" and not next(iter(worms.values())).names:
        raise ValueError(f"{traces_path}: the shared node set is empty for task {task}")
    return Dataset(
        worms, task, node_set, [channels[c] for c in use_channels], classes, window, horizon
    )


# --------------------------------------------------------------------------- splits
Segments = dict[int, list[tuple[int, int]]]


PROTOCOLS = ("lowo", "within", "lodo")


def fold_segments(folds_path: Path, protocol: str, fold: int) -> tuple[Segments, Segments]:
    """Train and test segments of one fold, keyed by worm."""
    folds = files.read_json(folds_path)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is unknown; use one of {PROTOCOLS}")
    if protocol not in folds:
        raise ValueError(
            f"{folds_path}: no {protocol} folds ({folds.get('plan', {}).get('lodo_reason')})"
        )
    if not 0 <= fold < len(folds[protocol]):
        raise ValueError(
            f"{folds_path}: {protocol} has {len(folds[protocol])} folds, not fold {fold}"
        )
    entry = folds[protocol][fold]

    def parse(block: dict[str, list[list[int]]]) -> Segments:
        return {int(w): [(a, b) for a, b in segs] for w, segs in block.items()}

    return parse(entry["train"]), parse(entry["test"])


def split_validation(train: Segments, val_fraction: float, gap: int) -> tuple[Segments, Segments]:
    """Carve validation from the end of each worm's training frames, behind a gap."""
    fit: Segments = {}
    val: Segments = {}
    for worm, segments in train.items():
        total = sum(b - a for a, b in segments)
        need = int(round(total * val_fraction))
        fit[worm], val[worm] = [], []
        remaining = need
        for a, b in reversed(segments):
            if remaining > 0:
                take = min(remaining, b - a)
                val[worm].insert(0, (b - take, b))
                remaining -= take
                b = b - take - gap
            if b > a:
                fit[worm].insert(0, (a, b))
    return fit, val


def name_vocabulary(ds: Dataset, segments: Segments) -> list[str]:
    """The sorted neuron names of the worms ``segments`` covers (the training worms):
    a test worm's names reach a model only where a training worm had them too."""
    return sorted({n for w in segments for n in ds.worms[w].names if n})


def window_starts(ds: Dataset, segments: Segments) -> list[tuple[int, np.ndarray]]:
    """Start frames of every complete window inside the segments, per worm.

    Behaviour windows whose label (at the last input frame) is excluded are dropped.
    """
    out = []
    for worm, segs in sorted(segments.items()):
        starts = [np.arange(a, b - ds.span + 1) for a, b in segs if b - a >= ds.span]
        s = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        if ds.task == "behaviour" and s.size:
            s = s[ds.worms[worm].labels[s + ds.window - 1] >= 0]
        if s.size:
            out.append((worm, s.astype(np.int64)))
    return out


# --------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """Padded windows. Shapes: ``x`` (B, N, W, C); ``mask`` (B, N); ``y`` forecast
    (B, N, H) or behaviour (B,); ``graph`` (B, N, N) fixed adjacency or None;
    ``context`` (B, N, L) the ΔF/F of the L frames ending at each window's last input
    frame, NaN before the start of the window's segment, or None; ``node_ids`` (B, N)
    each node's index in the vocabulary (0: unnamed, unseen or padding), or None;
    ``summary`` the tensors of each window's :class:`ContextSummary`, padded (from the
    loader's cache; then ``context`` is None)."""

    x: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor
    graph: torch.Tensor | None
    worm: torch.Tensor
    start: torch.Tensor
    context: torch.Tensor | None = None
    node_ids: torch.Tensor | None = None
    summary: dict[str, torch.Tensor] | None = None

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.x.to(device),
            self.mask.to(device),
            self.y.to(device),
            None if self.graph is None else self.graph.to(device),
            self.worm,
            self.start,
            None if self.context is None else self.context.to(device),
            None if self.node_ids is None else self.node_ids.to(device),
            None if self.summary is None else {k: v.to(device) for k, v in self.summary.items()},
        )

    @property
    def inputs(self) -> dict[str, Any]:
        """The keyword inputs (context or its summary, node names) of the models that
        read them."""
        return model_inputs(self.context, self.node_ids, self.summary)


@dataclass
class ContextSummary:
    """What a model reads from each window's context, computed from the data alone
    (``gnn``: :func:`wormgnn.models.nri.context_summary`). The loader computes it once
    per window and reuses it every epoch, instead of building the context each batch.

    ``compute``: (B, N, L) context → {name: (B, *nodes, ...)}; ``node_dims``: per name,
    how many dimensions after the batch's are nodes (padded to a batch's largest worm).
    """

    compute: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    node_dims: dict[str, int] = field(default_factory=dict)
    #: Above this many bytes for one loader the summary is computed per batch instead.
    #: The ``all`` node set of a Kato-sized fold (about 10,800 training windows of 110-130
    #: nodes, 16 candidate senders each) needs about 1.9 GiB; per batch, computing it is
    #: two thirds of a training step.
    max_bytes: int = 3 * 2**30
    #: What ``compute`` depends on besides the context (its keyword settings), so that two
    #: summaries with the same settings give the same rows (:class:`SummaryCache`).
    settings: tuple = ()


class SummaryCache:
    """Every window's context summary, kept per set of windows for the loaders built
    after the first over the same windows: a resumed fit, the next seed of a train job,
    the next candidate of a selection. Building them is most of building a ``gnn``
    loader (7-19 s on the shared set of a Kato-sized fold and 57-86 s on every ROI, at
    2 threads), and they are a pure function of the data and the windows, so the rows
    are the same bits either way. One cache serves one dataset (one set of input files).
    """

    def __init__(self) -> None:
        self._rows: dict[tuple, dict[str, list[torch.Tensor]]] = {}

    @staticmethod
    def key(ds: Dataset, segments: Segments, context: int, summary: ContextSummary) -> tuple:
        """What a loader's summaries are a function of: the node set, the frames a window
        spans, the context length, the summary's settings, and each worm's segments."""
        worms = tuple(
            (w, ds.worms[w].n_nodes, tuple(sorted((int(a), int(b)) for a, b in segs)))
            for w, segs in sorted(segments.items())
        )
        return (ds.node_set, ds.window, ds.span, context, summary.settings, worms)

    def get(self, key: tuple) -> dict[str, list[torch.Tensor]] | None:
        return self._rows.get(key)

    def put(self, key: tuple, rows: dict[str, list[torch.Tensor]]) -> None:
        self._rows[key] = rows


class WindowLoader:
    """Iterates over batches of windows; shuffled with an explicit generator. With
    ``fraction`` < 1 (shuffled only), each pass yields that share of the windows, drawn
    afresh: the first ones of the pass's permutation.

    With ``context`` > 0 each batch also carries each window's causal context
    (:class:`Batch`): it never reaches before the start of the window's own segment, so it
    sees no frame of a validation split, a ``within`` gap or another fold's test block.
    With a ``vocabulary`` (:func:`name_vocabulary`) each batch carries ``node_ids``.
    """

    def __init__(
        self,
        ds: Dataset,
        segments: Segments,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        graphs: dict[int, torch.Tensor] | None = None,
        context: int = 0,
        vocabulary: list[str] | None = None,
        summary: ContextSummary | None = None,
        fraction: float = 1.0,
        cache: SummaryCache | None = None,
    ):
        if not 0 < fraction <= 1 or (fraction < 1 and not shuffle):
            raise ValueError(f"fraction {fraction}: must be in (0, 1], and below 1 only shuffled")
        self.ds = ds
        self.fraction = fraction
        self.context = max(context, ds.window) if context else 0
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.graphs = graphs
        pairs = window_starts(ds, segments)
        self.worm_of = (
            np.concatenate([np.full(s.size, w) for w, s in pairs]) if pairs else np.zeros(0, int)
        )
        self.start_of = np.concatenate([s for _, s in pairs]) if pairs else np.zeros(0, int)
        # the first frame of each window's segment: the context stops there
        self.segment_of = np.zeros(0, int)
        if pairs:
            firsts = []
            for w, s in pairs:
                seg_a = np.array(sorted(a for a, _ in segments[w]))
                firsts.append(seg_a[np.searchsorted(seg_a, s, side="right") - 1])
            self.segment_of = np.concatenate(firsts)
        self.node_ids = None
        if vocabulary is not None:
            index = {name: i for i, name in enumerate(vocabulary, start=1)}
            self.node_ids = {
                w: torch.tensor([index.get(n, 0) for n in worm.names], dtype=torch.long)
                for w, worm in ds.worms.items()
            }
        # (T - span + 1, N, C, span) views: a window is one index, no copy per frame
        self.views = {w: ds.worms[w].x.unfold(0, ds.span, 1) for w in ds.worms}
        self.summary = summary
        self.cached: dict[str, list[torch.Tensor]] | None = None
        if summary is not None and self.context and self.n_windows:
            key = SummaryCache.key(ds, segments, self.context, summary)
            self.cached = cache.get(key) if cache is not None else None
            if self.cached is None:
                self.cached = self._summarise_all(summary)
                if cache is not None and self.cached is not None:
                    cache.put(key, self.cached)

    def __len__(self) -> int:
        return (self.windows_per_pass + self.batch_size - 1) // self.batch_size

    @property
    def n_windows(self) -> int:
        return int(len(self.start_of))

    @property
    def windows_per_pass(self) -> int:
        """Windows one iteration yields: ``fraction`` of them, at least one."""
        return max(1, round(self.fraction * self.n_windows)) if self.n_windows else 0

    def __iter__(self):
        n = len(self.start_of)
        order = (
            torch.randperm(n, generator=self.generator).numpy() if self.shuffle else np.arange(n)
        )
        order = order[: self.windows_per_pass]  # a fresh draw each pass (shuffled only)
        for i in range(0, len(order), self.batch_size):
            yield self.collate(order[i : i + self.batch_size])

    def collate(self, idx: np.ndarray) -> Batch:
        ds = self.ds
        worms, starts = self.worm_of[idx], self.start_of[idx]
        items, ys = [], []
        for w, s in zip(worms, starts, strict=True):
            win = self.views[w][s]  # (N, C, span)
            items.append(win[..., : ds.window].permute(0, 2, 1))  # (N, W, C)
            if ds.task == "forecast":
                ys.append(win[:, 0, ds.window :])  # (N, H) ΔF/F targets
            else:
                ys.append(torch.tensor(ds.worms[w].labels[s + ds.window - 1]))
        # padded to the batch's largest worm; torch's pad_sequence, not PyG's
        # to_dense_batch, so that jobs without a GNN never import PyG (2 s per job)
        sizes = torch.tensor([t.shape[0] for t in items])
        x = pad_sequence(items, batch_first=True)  # (B, Nmax, W, C)
        mask = torch.arange(x.shape[1])[None, :] < sizes[:, None]  # (B, Nmax)
        if ds.task == "forecast":
            y = pad_sequence(ys, batch_first=True)  # (B, Nmax, H)
        else:
            y = torch.stack(ys)
        graph = None
        if self.graphs is not None:
            n_max = x.shape[1]
            graph = torch.zeros(len(items), n_max, n_max)
            for b, w in enumerate(worms):
                g = self.graphs[w]
                graph[b, : g.shape[0], : g.shape[1]] = g
        context = summary = None
        if self.cached is not None:
            n_max = x.shape[1]
            summary = {
                key: torch.stack(
                    [_pad_nodes(rows[i], n_max, self.summary.node_dims[key]) for i in idx]
                )
                for key, rows in self.cached.items()
            }
        elif self.context:
            context = pad_sequence(self._contexts(idx), batch_first=True)  # (B, N, L)
        node_ids = None
        if self.node_ids is not None:
            node_ids = pad_sequence([self.node_ids[w] for w in worms], batch_first=True)
        return Batch(
            x,
            mask,
            y,
            graph,
            torch.from_numpy(worms),
            torch.from_numpy(starts),
            context,
            node_ids,
            summary,
        )

    def _summarise_all(self, summary: ContextSummary) -> dict[str, list[torch.Tensor]] | None:
        """Every window's summary, in window order (one worm per chunk, so no padding),
        or None where it would exceed ``summary.max_bytes``."""
        rows: dict[str, list[torch.Tensor]] = {}
        n = self.n_windows
        chunk = 64
        for a in range(0, n, chunk):
            idx = np.arange(a, min(a + chunk, n))
            for w in np.unique(self.worm_of[idx]):
                part = idx[self.worm_of[idx] == w]
                with torch.no_grad():
                    out = summary.compute(torch.stack(self._contexts(part)))
                for key, value in out.items():
                    if value.untyped_storage().nbytes() > value.nbytes:
                        value = value.clone()  # a view (a diagonal): keep its own bytes only
                    rows.setdefault(key, []).extend(value.unbind(0))
            if a == 0:
                per_window = sum(v[0].numel() * v[0].element_size() for v in rows.values())
                if per_window * n > summary.max_bytes:
                    log.info(
                        "context summaries of %d windows would take %.1f GiB; computing "
                        "them per batch instead",
                        n,
                        per_window * n / 2**30,
                    )
                    return None
        return rows

    def _contexts(self, idx: np.ndarray) -> list[torch.Tensor]:
        """Per window, (N, L): ΔF/F up to its last input frame, NaN-padded at the front."""
        out = []
        length = self.context
        for w, s, first in zip(
            self.worm_of[idx], self.start_of[idx], self.segment_of[idx], strict=True
        ):
            end = int(s) + self.ds.window
            begin = max(int(first), end - length)
            ctx = torch.full((self.ds.worms[w].n_nodes, length), float("nan"))
            ctx[:, length - (end - begin) :] = self.ds.worms[w].x[begin:end, :, 0].T
            out.append(ctx)
        return out


def _pad_nodes(t: torch.Tensor, n_max: int, node_dims: int) -> torch.Tensor:
    """Zero-pad the first ``node_dims`` dimensions of ``t`` to ``n_max``."""
    pad: list[int] = []
    for dim in reversed(range(t.dim())):  # F.pad lists the last dimension first
        pad += [0, n_max - t.shape[dim]] if dim < node_dims else [0, 0]
    return torch.nn.functional.pad(t, pad) if any(pad) else t


def connectome_graphs(
    ds: Dataset, connectome: Connectome, shuffle_seed: int | None = None
) -> dict[int, torch.Tensor]:
    """Per worm, the anatomical adjacency [sender, receiver] among its nodes (unnamed
    nodes and names missing from the connectome get no edges).

    With ``shuffle_seed`` (``gnn_shuffled``), the dataset's connectome-known names are
    first permuted among themselves, one seeded permutation for every worm: each node
    takes another neuron's wiring, so the graph keeps its degrees (on the ``shared``
    node set, exactly) but connects the wrong neurons."""
    rename: dict[str, str] = {}
    if shuffle_seed is not None:
        known = connectome.index()
        names = sorted({n for worm in ds.worms.values() for n in worm.names if n in known})
        order = np.random.default_rng(shuffle_seed).permutation(len(names))
        rename = {name: names[i] for name, i in zip(names, order, strict=True)}
    return {
        w: torch.from_numpy(
            connectome.restrict([rename.get(n, n) for n in worm.names]).astype(np.float32)
        )
        for w, worm in ds.worms.items()
    }
