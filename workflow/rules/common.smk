# Input functions and targets. Rules stay declarative; the logic is here.
import json
import re


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",


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


# The conda env of the torch rules: the CPU build, or with `--config torch_env=cuda`
# (e.g. on a GPU cluster) the CUDA build of the same pinned versions.
TORCH_ENV = {"cpu": "../../envs/torch.yaml", "cuda": "../../envs/torch-cuda.yaml"}[
    config.get("torch_env", "cpu")
]
NEURAL_MODELS = (
    "mlp",
    "lstm",
    "gnn",
    "gnn_connectome",
    "gnn_shuffled",
    "gnn_full",
    "gnn_nograph",
)
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


def models_for(task):
    """The configured models that have a variant for ``task``."""
    models = config["experiment"]["models"]
    if task == "forecast":
        return list(models)
    return [m for m in models if m not in FORECAST_ONLY_MODELS]


def get_fold_outputs(
    dataset,
    tasks=None,
    protocols=None,
    models=None,
    folds=None,
    seeds=None,
    name="metrics.json",
):
    """One path per fold job (``name`` in its directory), for the configured tasks,
    protocols, models, folds and seeds, or the given subsets of them."""
    exp = config["experiment"]
    outputs = []
    for task in tasks or exp["tasks"]:
        for protocol in protocols or exp["protocols"]:
            for model in models_for(task):
                if models is not None and model not in models:
                    continue
                outputs += expand(
                    f"{FOLD_DIR}/{name}",
                    dataset=dataset,
                    task=task,
                    protocol=protocol,
                    model=model,
                    fold=range(n_folds(dataset, protocol)) if folds is None else folds,
                    seed=exp["seeds"] if seeds is None else seeds,
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


# --------------------------------------------------------------------------- results
def get_aggregate_inputs(wildcards):
    return get_fold_outputs(
        wildcards.dataset, tasks=[wildcards.task], protocols=[wildcards.protocol]
    )


def showcase():
    """The fold job whose held-out worm the trace and ethogram figures show: lowo
    (else the first protocol), fold 0, the first seed."""
    protocols = config["experiment"]["protocols"]
    return {
        "protocol": "lowo" if "lowo" in protocols else protocols[0],
        "fold": 0,
        "seed": config["experiment"]["seeds"][0],
    }


def get_showcase_predictions(task, skip=FORECAST_ONLY_MODELS):
    """Input function: the showcase fold's predictions.h5 of every model of ``task``."""

    def inputs(wildcards):
        pick = showcase()
        return get_fold_outputs(
            wildcards.dataset,
            tasks=[task],
            protocols=[pick["protocol"]],
            models=[m for m in models_for(task) if m not in skip],
            folds=[pick["fold"]],
            seeds=[pick["seed"]],
            name="predictions.h5",
        )

    return inputs


def get_summaries(tasks, name="summary.csv"):
    """Input function: ``name`` (an aggregate's output) of every protocol of each of
    ``tasks`` (as run)."""

    def inputs(wildcards):
        exp = config["experiment"]
        return expand(
            f"results/{{dataset}}/{{task}}/{{protocol}}/{name}",
            dataset=wildcards.dataset,
            task=[t for t in exp["tasks"] if t in tasks and models_for(t)],
            protocol=exp["protocols"],
        )

    return inputs


def graph_task():
    tasks = config["experiment"]["tasks"]
    return "forecast" if "forecast" in tasks else tasks[0]


def get_graph_runs(name):
    """Input function: ``name`` of every gnn run, folds × seeds, of the graph task under
    the showcase protocol: the runs whose edge AUROCs summary.csv averages."""

    def inputs(wildcards):
        return get_fold_outputs(
            wildcards.dataset,
            tasks=[graph_task()],
            protocols=[showcase()["protocol"]],
            models=["gnn"],
            name=name,
        )

    return inputs


def figure_names():
    """The figures the configured experiment can draw."""
    exp = config["experiment"]
    names = ["rulegraph"]
    forecast = "forecast" in exp["tasks"] and models_for("forecast")
    behaviour = "behaviour" in exp["tasks"] and models_for("behaviour")
    if forecast:
        names += ["forecast_score"]
        if [m for m in models_for("forecast") if m not in FORECAST_ONLY_MODELS]:
            names += ["forecast_traces"]
    if behaviour:
        names += ["ethogram", "confusion"]
    if forecast or behaviour:
        names += ["comparison"]
    if "gnn" in exp["models"]:
        names += ["graph"]
    return names


def get_result_outputs():
    """Stages 5-6 of every target dataset: aggregates and figures (static paths)."""
    exp = config["experiment"]
    outputs = []
    for dataset in get_target_datasets():
        for task in exp["tasks"]:
            if models_for(task):
                outputs += expand(
                    "results/{dataset}/{task}/{protocol}/{name}",
                    dataset=dataset,
                    task=task,
                    protocol=exp["protocols"],
                    name=["summary.csv", "stats.json"],
                )
        outputs += [f"results/{dataset}/figures/{n}.png" for n in figure_names()]
    return outputs
