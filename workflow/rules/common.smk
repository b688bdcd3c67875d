# Input functions and targets. Rules stay declarative; the logic is here.
import json
import re


def datasets_by_source(source):
    return [name for name, ds in config["datasets"].items() if ds["source"] == source]


def names_regex(names):
    """A wildcard constraint matching exactly these dataset names (nothing if empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def get_raw_mat(wildcards):
    """The raw Kato-layout file: a local path as configured, else under resources/raw."""
    ds = dataset_config(wildcards)
    if ds["source"] == "local":
        return ds["path"]
    return f"resources/raw/{wildcards.dataset}.mat"


def get_root_arg(wildcards):
    root = dataset_config(wildcards).get("root")
    return f"--root {root}" if root else ""


def as_json(block):
    return json.dumps(block, separators=(",", ":"))


NEURAL_MODELS = ("mlp", "lstm", "gnn", "gnn_connectome")
FORECAST_ONLY_MODELS = ("persistence",)
FOLD_SUBDIR = "{dataset}/{task}/{protocol}/{model}/fold{fold}/seed{seed}"
FOLD_DIR = f"results/{FOLD_SUBDIR}"


def get_run_config(wildcards):
    """The resolved configuration of one training job, as JSON for the module."""
    params = dict(config.get("models", {}).get(wildcards.model) or {})
    training = {**config.get("training", {}), **params.pop("training", {})}
    exp = config["experiment"]
    run = {
        "dataset": wildcards.dataset,
        "task": wildcards.task,
        "protocol": wildcards.protocol,
        "model": wildcards.model,
        "fold": int(wildcards.fold),
        "seed": int(wildcards.seed),
        "window": exp["window"],
        "horizon": exp["horizon"],
        "exclude_label_neurons": config["labels"]["exclude_label_neurons"],
        "connectome": exp["connectome"],
        "training": training,
        "model_params": params,
    }
    return as_json(run)


def uses_gpu(wildcards):
    """Neural models ask for a GPU unless training.device is cpu."""
    device = config.get("training", {}).get("device", "auto")
    return int(wildcards.model in NEURAL_MODELS and device != "cpu")


def get_truth(wildcards):
    """The synthetic ground-truth graph, for edge scoring; none for real data."""
    if dataset_config(wildcards)["source"] == "synthetic":
        return f"resources/raw/{wildcards.dataset}.truth.h5"
    return []


def get_truth_arg(wildcards, input):
    return f"--truth {input.truth}" if input.truth else ""


def n_folds(dataset, protocol):
    """Fold count from make_folds' output (a checkpoint: known once it has run)."""
    folds = checkpoints.make_folds.get(dataset=dataset).output.folds
    with open(folds) as handle:
        return len(json.load(handle)[protocol])


def get_fold_outputs(dataset):
    exp = config["experiment"]
    outputs = []
    for task in exp["tasks"]:
        for protocol in exp["protocols"]:
            for model in exp["models"]:
                if task != "forecast" and model in FORECAST_ONLY_MODELS:
                    continue
                outputs += expand(
                    f"{FOLD_DIR}/metrics.json",
                    dataset=dataset,
                    task=task,
                    protocol=protocol,
                    model=model,
                    fold=range(n_folds(dataset, protocol)),
                    seed=exp["seeds"],
                )
    return outputs


def get_target_datasets():
    unknown = [d for d in config["targets"]["datasets"] if d not in config["datasets"]]
    if unknown:
        raise ValueError(
            f"targets.datasets names {unknown}, which are not under `datasets` in the "
            f"config (known: {sorted(config['datasets'])})"
        )
    return config["targets"]["datasets"]


def get_data_outputs():
    """Stages 1-2 of every target dataset (static: known before anything runs)."""
    return [
        f"results/{dataset}/{output}"
        for dataset in get_target_datasets()
        for output in ("preprocessed/summary.json", "labels/summary.json", "folds.json")
    ]


def get_model_outputs(wildcards):
    """Stages 3-4: one metrics.json per fold job, once make_folds has run."""
    return [
        out for dataset in get_target_datasets() for out in get_fold_outputs(dataset)
    ]
