"""The synthetic worm: a virtual population written in the OSF ``.mat`` layout.

It lets the whole pipeline run offline, and its known interaction graph lets relation
inference be scored, which real data cannot do.

**Network.** ``n_neurons`` rate neurons on a sparse directed graph: the anatomical
connectome (``cect``, chemical synapses with at least ``min_synapses`` contacts, plus gap
junctions both ways) restricted to the best-connected neurons and the command neurons,
or, where ``cect`` is missing or ``graph: random``, a seeded random graph of the same
density. Each presynaptic neuron has one sign (Dale's principle). The dynamics are

    τ dx_i/dt = -x_i + g Σ_j W_ji tanh(x_j) + d_i(s(t)) + σ ξ_i(t),

with W scaled to spectral radius ``coupling`` (< 1: stable, but strongly interacting),
private Ornstein-Uhlenbeck noise ξ (so each neuron's fluctuations propagate to its
targets, which makes the graph identifiable), and a drive d from the behavioural state.

**Behaviour.** A latent state machine FWD → SLOW → REV1|REV2|REVSUS → DT|VT → FWD (with
shortcuts FWD → REV and REV → FWD) with gamma-distributed dwell times on the scale of
Kato et al. 2015 (forward runs of tens of seconds, reversals of a few). Each state
drives its command neurons: AVB, RIB, VB, DB forward; AVA, AVD, AVE, RIM, AIB, VA, DA in
reversals; SMDV/RIV in ventral and SMDD/RIV in dorsal turns.

**Imaging.** Rates drive calcium through a GCaMP-like first-order filter (rise ``τ``,
decay ``tau_calcium_s``); fluorescence is ``F = F0 (1 + a·Ca) · bleach(t) + b`` with a
two-exponential photobleaching, shot noise (∝ √F) and read noise, sampled at each worm's
own frame rate. Each worm records a different ROI subset: ``n_core`` neurons are
recorded and identified in every worm; the others are identified with probability
``identified_prob``, sometimes ambiguously (two candidate names). A few short NaN gaps
mimic lost frames.

Outputs: ``{dataset}.mat`` (old Kato schema, root ``WT_NoStim``, with ``traces_raw``) and
``{dataset}.truth.h5`` (the graph, the effective weights and each ROI's neuron).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wormgnn import files, matfile
from wormgnn.connectome import ConnectomeUnavailable, load_connectome
from wormgnn.kato import KATO8_CODES

log = logging.getLogger("wormgnn.simulate")

#: Command neurons driven by each behavioural state (Kato et al. 2015, Fig. 6;
#: Chalfie et al. 1985; Gray et al. 2005). Negative entries are inhibited.
STATE_DRIVE: dict[str, dict[str, float]] = {
    "FWD": {"AVB": 1.0, "RIB": 0.8, "VB1": 0.6, "VB2": 0.6, "DB1": 0.6, "AVA": -0.8, "RIM": -0.6},
    "SLOW": {"AVB": 0.3, "RIB": 0.2, "AVA": -0.3},
    "REV1": {
        "AVA": 1.0,
        "AVE": 0.8,
        "AVD": 0.7,
        "RIM": 0.7,
        "AIB": 0.6,
        "VA1": 0.6,
        "DA1": 0.6,
        "AVB": -0.8,
    },
    "REV2": {
        "AVA": 1.2,
        "AVE": 0.9,
        "AVD": 0.8,
        "RIM": 0.8,
        "AIB": 0.7,
        "VA1": 0.7,
        "DA1": 0.7,
        "AVB": -0.9,
    },
    "REVSUS": {
        "AVA": 1.4,
        "AVE": 1.0,
        "AVD": 0.9,
        "RIM": 0.9,
        "AIB": 0.8,
        "VA1": 0.8,
        "DA1": 0.8,
        "AVB": -1.0,
    },
    "VT": {"SMDV": 1.2, "RIV": 1.0, "AVA": -0.4},
    "DT": {"SMDD": 1.2, "RIV": 1.0, "AVA": -0.4},
    "NOSTATE": {},
}
#: Mean dwell (s) per state; gamma-distributed with shape 3.
DWELL_S = {
    "FWD": 25.0,
    "SLOW": 10.0,
    "REV1": 3.0,
    "REV2": 6.0,
    "REVSUS": 14.0,
    "DT": 4.0,
    "VT": 4.0,
    "NOSTATE": 3.0,
}
#: Transition probabilities of the latent state machine.
TRANSITIONS = {
    "FWD": {"SLOW": 0.65, "REV1": 0.15, "REV2": 0.1, "REVSUS": 0.05, "NOSTATE": 0.05},
    "SLOW": {"REV1": 0.3, "REV2": 0.3, "REVSUS": 0.15, "FWD": 0.25},
    "REV1": {"VT": 0.4, "DT": 0.35, "FWD": 0.25},
    "REV2": {"VT": 0.4, "DT": 0.4, "FWD": 0.2},
    "REVSUS": {"VT": 0.45, "DT": 0.45, "FWD": 0.1},
    "VT": {"FWD": 1.0},
    "DT": {"FWD": 1.0},
    "NOSTATE": {"FWD": 1.0},
}
#: Label-defining and command neurons, always part of the simulated network.
COMMAND_NEURONS = sorted(
    {
        f"{c}{side}"
        for c in ("AVA", "AVB", "AVD", "AVE", "RIM", "RIB", "AIB", "SMDV", "SMDD", "RIV")
        for side in "LR"
    }
    | {"VA1", "VB1", "VB2", "DA1", "DB1"}
)


@dataclass
class SyntheticConfig:
    """The ``synthetic`` block of a dataset in ``config.yaml``."""

    seed: int = 0
    n_worms: int = 5
    duration_s: float = 1080.0
    fps: float = 2.9
    fps_jitter: float = 0.03
    n_neurons: int = 150
    rois_per_worm: list[int] = field(default_factory=lambda: [110, 130])
    n_core: int = 40
    identified_prob: float = 0.2
    ambiguous_prob: float = 0.05
    graph: str = "connectome"  # connectome | random
    connectome: str = "Cook2019Herm"
    min_synapses: float = 15.0
    random_density: float = 0.05
    coupling: float = 0.95
    tau_s: float = 1.0
    tau_calcium_s: float = 0.8
    noise: float = 1.0
    noise_tau_s: float = 0.5
    drive_gain: float = 1.5
    dt_s: float = 0.05
    nan_gaps_per_worm: int = 3
    #: The raw form the workflow gives the dataset: the .mat this module writes, or
    #: (nwb) one NWB file per worm exported from it by wormgnn.export.
    format: str = "mat"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SyntheticConfig:
        cfg = files.settings(cls, values, "synthetic")
        lo, hi = cfg.rois_per_worm
        if not cfg.n_core <= lo <= hi <= cfg.n_neurons:
            raise ValueError(
                f"synthetic: need n_core ({cfg.n_core}) <= rois_per_worm ({lo}..{hi}) <= "
                f"n_neurons ({cfg.n_neurons})"
            )
        if cfg.format not in ("mat", "nwb"):
            raise ValueError(f"synthetic.format is {cfg.format!r}; use mat or nwb")
        if cfg.graph not in ("connectome", "random"):
            raise ValueError(f"synthetic.graph is {cfg.graph!r}; use connectome or random")
        return cfg


@dataclass
class Network:
    names: list[str]
    adjacency: np.ndarray  # (n, n) bool, [pre, post]
    weights: np.ndarray  # (n, n) signed effective weights, [pre, post]
    source: str


# --------------------------------------------------------------------------- network
def build_network(cfg: SyntheticConfig, rng: np.random.Generator) -> Network:
    """The simulated graph: connectome-derived where possible, else seeded random."""
    names, adjacency, source = None, None, "random"
    if cfg.graph == "connectome":
        try:
            conn = load_connectome(cfg.connectome)
        except ConnectomeUnavailable as err:
            log.warning("%s; falling back to a seeded random graph", err)
        else:
            full = (conn.chemical >= cfg.min_synapses) | (conn.gap >= cfg.min_synapses)
            np.fill_diagonal(full, False)
            degree = full.sum(0) + full.sum(1)
            idx = conn.index()
            chosen = [idx[n] for n in COMMAND_NEURONS]
            for i in np.argsort(-degree, kind="stable"):
                if len(chosen) >= cfg.n_neurons:
                    break
                if i not in chosen:
                    chosen.append(int(i))
            chosen.sort()
            names = [conn.names[i] for i in chosen]
            adjacency = full[np.ix_(chosen, chosen)]
            source = f"connectome:{conn.source}"
    if adjacency is None:
        n = cfg.n_neurons
        extra = [_letter_name(i) for i in range(n - len(COMMAND_NEURONS))]
        names = sorted(COMMAND_NEURONS + extra)
        adjacency = rng.random((n, n)) < cfg.random_density
        np.fill_diagonal(adjacency, False)
    n = len(names)
    sign = np.where(rng.random(n) < 0.75, 1.0, -1.0)  # one sign per presynaptic neuron
    weights = adjacency * sign[:, None] * rng.uniform(0.5, 1.5, (n, n))
    radius = np.max(np.abs(np.linalg.eigvals(weights))) if adjacency.any() else 1.0
    weights *= cfg.coupling / radius
    return Network(names=names, adjacency=adjacency, weights=weights, source=source)


def _letter_name(i: int) -> str:
    """Digit-free placeholder names (``XAA``, ``XAB``, …) for random-graph neurons."""
    return "X" + chr(65 + i // 26 % 26) + chr(65 + i % 26)


# --------------------------------------------------------------------------- behaviour
def sample_states(duration_s: float, rng: np.random.Generator) -> list[tuple[float, str]]:
    """(start time, state) segments of the latent behavioural state machine."""
    t, state, segments = 0.0, "FWD", []
    while t < duration_s:
        segments.append((t, state))
        t += rng.gamma(3.0, DWELL_S[state] / 3.0)
        options = TRANSITIONS[state]
        state = rng.choice(list(options), p=list(options.values()))
    return segments


def states_at(segments: list[tuple[float, str]], times: np.ndarray) -> np.ndarray:
    starts = np.array([s for s, _ in segments])
    labels = np.array([st for _, st in segments])
    return labels[np.searchsorted(starts, times, side="right") - 1]


def drive_matrix(names: list[str]) -> np.ndarray:
    """(n_states, n) drive of each Kato state (in KATO8_CODES order) on each neuron."""
    drive = np.zeros((len(KATO8_CODES), len(names)))
    for s, state in enumerate(KATO8_CODES):
        for cls_name, value in STATE_DRIVE[state].items():
            for i, name in enumerate(names):
                if name == cls_name or name in (cls_name + "L", cls_name + "R"):
                    drive[s, i] = value
    return drive


# --------------------------------------------------------------------------- dynamics
def simulate_worm(net: Network, cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Integrate one worm and image it. Returns frame-level arrays and ROI metadata."""
    n = len(net.names)
    dt = cfg.dt_s
    steps = int(np.ceil(cfg.duration_s / dt)) + 1
    fine_t = np.arange(steps) * dt
    segments = sample_states(cfg.duration_s, rng)
    code = {s: i for i, s in enumerate(KATO8_CODES)}
    fine_state = np.array([code[s] for s in states_at(segments, fine_t)])
    drive = drive_matrix(net.names) * cfg.drive_gain
    bias = rng.normal(0.0, 0.3, n)
    x = rng.normal(0.0, 0.5, n)
    xi = np.zeros(n)
    ca = np.zeros(n)
    calcium = np.empty((steps, n))
    a_noise = np.exp(-dt / cfg.noise_tau_s)
    b_noise = cfg.noise * np.sqrt(1 - a_noise**2)
    w_t = net.weights.T  # [post, pre] for the matrix-vector product
    for k in range(steps):
        xi = a_noise * xi + b_noise * rng.standard_normal(n)
        inputs = w_t @ np.tanh(x) + drive[fine_state[k]] + bias + xi
        x = x + dt / cfg.tau_s * (-x + inputs)
        rate = 1.0 / (1.0 + np.exp(-2.0 * x))
        ca += dt / cfg.tau_calcium_s * (rate - ca)
        calcium[k] = ca

    fps = cfg.fps * (1 + rng.uniform(-cfg.fps_jitter, cfg.fps_jitter))
    n_frames = int(np.floor(cfg.duration_s * fps))
    frame_t = np.arange(n_frames) / fps
    frame_idx = np.minimum(np.round(frame_t / dt).astype(int), steps - 1)
    states = fine_state[frame_idx] + 1  # 1-based codes, as in the old schema

    rois = _choose_rois(net.names, cfg, rng)
    ca_roi = calcium[frame_idx][:, rois]  # (T, N)
    n_rois = len(rois)
    f0 = rng.lognormal(np.log(400.0), 0.4, n_rois)
    amp = rng.uniform(0.6, 1.6, n_rois)
    tau_fast, tau_slow = rng.uniform(150, 300), rng.uniform(1500, 4000)
    frac = rng.uniform(0.2, 0.4)
    bleach = frac * np.exp(-frame_t / tau_fast) + (1 - frac) * np.exp(-frame_t / tau_slow)
    clean = f0 * (1 + amp * ca_roi)  # unbleached fluorescence
    signal_f = clean * bleach[:, None]
    raw = signal_f + rng.normal(0, 1, signal_f.shape) * (0.8 * np.sqrt(signal_f) + 2.0) + 20.0
    corrected = (raw - 20.0) / bleach[:, None] / f0 - 1.0  # what the lab's pipeline gives
    _punch_nan_gaps(raw, corrected, cfg.nan_gaps_per_worm, rng)
    ids = _identities(net.names, rois, cfg, rng)
    return {
        "fps": fps,
        "time": frame_t,
        "states": states,
        "raw": raw,
        "dff": corrected,
        "rois": rois,
        "ids": ids,
    }


def _choose_rois(names: list[str], cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    n = len(names)
    core = np.arange(min(cfg.n_core, n))  # _core_order put the core neurons first
    rest = rng.permutation(np.arange(len(core), n))
    n_rois = int(rng.integers(cfg.rois_per_worm[0], cfg.rois_per_worm[1] + 1))
    chosen = np.concatenate([core, rest[: n_rois - len(core)]])
    return rng.permutation(chosen)  # ROI order differs per worm


def _identities(
    names: list[str], rois: np.ndarray, cfg: SyntheticConfig, rng: np.random.Generator
) -> list[list[str]]:
    ids: list[list[str]] = []
    for r in rois:
        if r < cfg.n_core:
            ids.append([names[r]])
        elif rng.random() < cfg.identified_prob:
            if rng.random() < cfg.ambiguous_prob:
                other = names[int(rng.integers(len(names)))]
                ids.append([names[r], other] if other != names[r] else [names[r], "---"])
            else:
                ids.append([names[r]])
        else:
            ids.append([])
    return ids


def _punch_nan_gaps(
    raw: np.ndarray, dff: np.ndarray, n_gaps: int, rng: np.random.Generator
) -> None:
    for _ in range(n_gaps):
        roi = int(rng.integers(raw.shape[1]))
        start = int(rng.integers(1, raw.shape[0] - 6))
        length = int(rng.integers(1, 6))
        raw[start : start + length, roi] = np.nan
        dff[start : start + length, roi] = np.nan


def _core_order(net: Network, n_core: int) -> Network:
    """Reorder neurons so the first ``n_core`` are the command neurons, then the best
    connected: those are recorded and identified in every worm."""
    degree = net.adjacency.sum(0) + net.adjacency.sum(1)
    is_command = np.array([n in COMMAND_NEURONS for n in net.names])
    order = np.lexsort((np.arange(len(net.names)), -degree, ~is_command))
    core = sorted(order[:n_core].tolist(), key=lambda i: net.names[i])
    rest = sorted(order[n_core:].tolist(), key=lambda i: net.names[i])
    perm = np.array(core + rest)
    return Network(
        names=[net.names[i] for i in perm],
        adjacency=net.adjacency[np.ix_(perm, perm)],
        weights=net.weights[np.ix_(perm, perm)],
        source=net.source,
    )


# --------------------------------------------------------------------------- stage
def run(cfg: SyntheticConfig, dataset: str, mat_out: Path, truth_out: Path) -> None:
    """Simulate ``cfg.n_worms`` worms; write the ``.mat`` and the ground-truth file."""
    rng = np.random.default_rng(cfg.seed)
    net = _core_order(build_network(cfg, rng), cfg.n_core)
    log.info(
        "%s: %d neurons, %d directed edges (%s)",
        dataset,
        len(net.names),
        int(net.adjacency.sum()),
        net.source,
    )
    worms = []
    for w in range(cfg.n_worms):
        worm_rng = np.random.default_rng([cfg.seed, w + 1])
        worms.append(simulate_worm(net, cfg, worm_rng))
        log.info(
            "worm %d: %d ROIs, %d frames at %.3f fps",
            w,
            len(worms[-1]["rois"]),
            worms[-1]["time"].size,
            worms[-1]["fps"],
        )
    fields = {
        "IDs": [w["ids"] for w in worms],
        "States": [w["states"].astype(np.float64) for w in worms],
        "dataset": [
            f"{dataset} synthetic worm {i} (wormgnn, seed {cfg.seed})" for i in range(len(worms))
        ],
        "fps": [np.float64(w["fps"]) for w in worms],
        "timeVectorSeconds": [w["time"] for w in worms],
        "traces": [w["dff"] for w in worms],
        "traces_raw": [w["raw"] for w in worms],
    }
    with files.atomic_path(mat_out) as tmp:
        matfile.write_struct(tmp, "WT_NoStim", fields)
    with files.atomic_path(truth_out) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(
            source=net.source, seed=cfg.seed, config=json.dumps(asdict(cfg)), dataset=dataset
        )
        files.write_strings(h5, "neurons", net.names)
        h5.create_dataset("adjacency", data=net.adjacency)
        h5.create_dataset("weights", data=net.weights)
        for w, worm in enumerate(worms):
            h5.create_dataset(f"worms/{w}/roi_neuron", data=worm["rois"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.simulate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset", required=True, help="dataset name (recorded in outputs)")
    parser.add_argument("--config", default="{}", help="the synthetic config block, as JSON")
    parser.add_argument("--mat", type=Path, required=True, help="output .mat (Kato layout)")
    parser.add_argument("--truth", type=Path, required=True, help="output ground-truth .h5")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        cfg = SyntheticConfig.from_dict(files.parse_json_arg(args.config, "config"))
        run(cfg, args.dataset, args.mat, args.truth)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
