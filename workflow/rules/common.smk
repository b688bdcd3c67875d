# Input functions and targets. Rules stay declarative; the logic is here.
import glob
import json
import re

from snakemake.exceptions import WorkflowError

from wormgnn.schemes import STATES_BY_SOURCE, scheme_classes, unsupported_classes
from wormgnn.search import grid


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",


def datasets_by_source(source):
    return [name for name, ds in config["datasets"].items() if ds["source"] == source]


def names_regex(names):
    """A wildcard constraint matching exactly these dataset names (nothing if empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def not_pools():
    return [name for name, ds in config["datasets"].items() if ds["source"] != "pool"]


def member_outputs(wildcards, name):
    """``name`` (e.g. preprocessed/traces.h5) of every member of a pool, in order."""
    return [f"results/{m}/{name}" for m in pool_members(wildcards.dataset)]


def raw_format(ds):
    """The file format of a dataset's raw files: kato (one .mat) or nwb (one per worm)."""
    if ds["source"] == "synthetic":
        return "nwb" if ds.get("synthetic", {}).get("format") == "nwb" else "kato"
    return "nwb" if ds["source"] in ("nwb", "dandi") else "kato"


def nwb_files(name, ds):
    """The files of an `nwb` dataset: its `path` as a file, a folder or a glob, sorted."""
    path = os.path.expanduser(ds["path"])
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "*.nwb")))
    else:
        found = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
    if not found:
        raise WorkflowError(
            f"dataset {name}: `path: {ds['path']}` matches no NWB file "
            "(give a file, a folder of .nwb files, or a glob)"
        )
    return found


def get_raw_files(wildcards):
    """The raw files of a dataset: a Kato .mat (downloaded, simulated or local), NWB files,
    or the manifest.json that lists the NWB files of a dandi or NWB-format synthetic set.
    """
    name, ds = wildcards.dataset, dataset_config(wildcards)
    if ds["source"] == "local":
        return [ds["path"]]
    if ds["source"] == "nwb":
        return nwb_files(name, ds)
    if raw_format(ds) == "nwb":
        return [f"resources/raw/{name}/manifest.json"]
    return [f"resources/raw/{name}.mat"]


READ_KEYS = ("root", "series", "uncertain_names", "behaviour")


def get_read_args(wildcards):
    """`--format` and `--options` (how to read the raw files) of a dataset's rules."""
    ds = dataset_config(wildcards)
    options = {k: ds[k] for k in READ_KEYS if ds.get(k) is not None}
    return f"--format {raw_format(ds)} --options {shlex.quote(as_json(options))}"


def preprocess_config(name):
    """The preprocess settings of a dataset: the top-level block, then its own."""
    return {**config["preprocess"], **config["datasets"][name].get("preprocess", {})}


def pool_members(name):
    """The member datasets of a pool (checked: they exist and are not pools)."""
    members = config["datasets"][name]["members"]
    for member in members:
        if member not in config["datasets"]:
            raise WorkflowError(
                f"pool {name}: member {member!r} is not under `datasets` "
                f"(known: {sorted(config['datasets'])})"
            )
        if config["datasets"][member]["source"] == "pool":
            raise WorkflowError(
                f"pool {name}: member {member} is itself a pool; list its members"
            )
    return members


def check_pool_schemes():
    """Every member of a pool must support the label scheme (e.g. no turns from NWB)."""
    labels = config["labels"]
    try:
        classes = scheme_classes(labels["scheme"], labels.get("schemes"))
    except ValueError as err:
        raise WorkflowError(str(err)) from None
    for name in datasets_by_source("pool"):
        for member in pool_members(name):
            source = config["datasets"][member]["source"]
            missing = unsupported_classes(STATES_BY_SOURCE[source], classes)
            if missing:
                raise WorkflowError(
                    f"pool {name}: member {member} (source {source}) cannot be labelled by "
                    f"labels.scheme {labels['scheme']}: its recordings carry the states "
                    f"{', '.join(STATES_BY_SOURCE[source])}, so class(es) {missing} never "
                    "occur. Use a scheme every member supports: fwdrev (forward vs reversal)."
                )


check_pool_schemes()


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
# One train and one evaluate job per fold: the job runs every seed in turn, in one
# process, and writes each seed's files under seed<s>/ (the same files, and numbers,
# as a job per seed; the process starts, and imports torch, once per fold).
FOLD_JOB = "{dataset}/{task}/{protocol}/{model}/fold{fold}"
FOLD_DIR = f"results/{FOLD_JOB}/seed{{seed}}"
SELECTION = f"results/{FOLD_JOB}/selection.json"
SEEDS_ARG = " ".join(str(s) for s in config["experiment"]["seeds"])


def per_seed(name):
    """``name`` in every configured seed's directory of the fold job's wildcards."""
    return expand(
        f"{FOLD_DIR}/{name}", seed=config["experiment"]["seeds"], allow_missing=True
    )


def get_run_config(wildcards):
    """The resolved configuration of one fold's job, as JSON for the module, with the
    first seed: select trains with it, and train and evaluate run every seed, passed as
    ``--seeds``."""
    params = dict(config.get("models", {}).get(wildcards.model) or {})
    params.pop("search", None)
    training = {**config.get("training", {}), **params.pop("training", {})}
    exp = config["experiment"]
    run = {
        "dataset": wildcards.dataset,
        "task": wildcards.task,
        "protocol": wildcards.protocol,
        "model": wildcards.model,
        "fold": int(wildcards.fold),
        "seed": exp["seeds"][0],
        "window": exp["window"],
        "horizon": exp["horizon"],
        "exclude_label_neurons": config["labels"]["exclude_label_neurons"],
        "connectome": exp["connectome"],
        "training": training,
        "model_params": params,
    }
    return as_json(run)


def selects(model):
    """Whether ``model``'s hyperparameters are selected per fold (it has a search grid)."""
    return bool(config["selection"]["enabled"] and search_of(model))


def search_of(model):
    return (config.get("models", {}).get(model) or {}).get("search") or {}


def check_search_budgets():
    """Every selected model has exactly `selection.budget` candidates per task (the
    same budget for all), and persistence, which has no hyperparameters, none."""
    if not config["selection"]["enabled"]:
        return
    budget = config["selection"]["budget"]
    exp = config["experiment"]
    for model in exp["models"]:
        if model in FORECAST_ONLY_MODELS:
            continue
        for task in exp["tasks"]:
            try:
                size = len(grid(search_of(model), task))
            except ValueError as err:
                raise WorkflowError(f"models.{model}.{err}") from None
            if size != budget:
                raise WorkflowError(
                    f"models.{model}.search has {size} candidate(s) for {task}, but "
                    f"selection.budget is {budget}: every model gets the same budget. Give "
                    f"it {budget} (the product of its value lists), or set "
                    "selection.enabled: false to train with the configured values."
                )


check_search_budgets()


def get_selection(wildcards):
    """The fold's selection.json when the model is selected, else nothing."""
    return SELECTION.format(**wildcards) if selects(wildcards.model) else []


def get_selection_arg(wildcards, input):
    return f"--selection {input.selection}" if input.selection else ""


def get_selection_fidelity_arg(wildcards):
    """select's --epoch-fraction (the candidates' share of windows per epoch) and
    --halving (successive halving), where set."""
    fraction = config["selection"].get("epoch_fraction")
    halving = config["selection"].get("halving")
    args = [] if fraction is None else [f"--epoch-fraction {fraction}"]
    if halving:
        args.append(f"--halving {halving['rung_epochs']} {halving['keep']}")
    return " ".join(args)


def uses_gpu(wildcards):
    """Neural models ask for a GPU unless training.device is cpu: `gpu` (one device per
    job, what the Slurm executor submits as --gpus) and `gpu_slots` (a share of the
    local GPU; the default profile lets several jobs share it)."""
    device = config.get("training", {}).get("device", "auto")
    return int(wildcards.model in NEURAL_MODELS and device != "cpu")


def get_truth(wildcards):
    """The synthetic ground-truth graph, for edge scoring; none for real data or pools."""
    if dataset_config(wildcards)["source"] == "synthetic":
        return f"resources/raw/{wildcards.dataset}.truth.h5"
    return []


def get_truth_arg(wildcards, input):
    return f"--truth {input.truth}" if input.truth else ""


def folds_of(dataset):
    """make_folds' output (a checkpoint: known once it has run)."""
    folds = checkpoints.make_folds.get(dataset=dataset).output.folds
    with open(folds) as handle:
        return json.load(handle)


def n_folds(dataset, protocol):
    return len(folds_of(dataset).get(protocol) or [])


def plan_of(dataset):
    """What ``dataset`` supports, from folds.json (see wormgnn.make_folds.plan)."""
    return {
        "behaviour": True,
        "n_shared_neurons": None,
        **folds_of(dataset).get("plan", {}),
    }


def node_set_of(model):
    """The node set a model runs on: its config's node_set; the fixed-size baselines
    (linear, mlp, lstm) always use `shared`."""
    return (config.get("models", {}).get(model) or {}).get("node_set", "shared")


def models_for(task, dataset=None):
    """The configured models that have a variant for ``task`` and, once ``dataset``'s
    folds exist, can run on it (a model on the `shared` node set needs a shared neuron).
    """
    models = config["experiment"]["models"]
    if task != "forecast":
        models = [m for m in models if m not in FORECAST_ONLY_MODELS]
    if dataset is not None and plan_of(dataset)["n_shared_neurons"] == 0:
        skipped = [m for m in models if node_set_of(m) == "shared"]
        note_once(
            dataset,
            f"no identified neuron is in every worm, so the models on the shared node set "
            f"are not planned: {', '.join(skipped)} (those on `all` still run)",
            bool(skipped),
        )
        models = [m for m in models if node_set_of(m) != "shared"]
    return list(models)


_NOTES = set()


def note_once(dataset, text, when=True):
    """Say once why something is not planned for ``dataset`` (dry runs show it)."""
    if when and (dataset, text) not in _NOTES:
        _NOTES.add((dataset, text))
        print(f"wormgnn: dataset {dataset}: {text}", file=sys.stderr)


def tasks_for(dataset):
    """The configured tasks that ``dataset`` supports (behaviour needs labels)."""
    plan = plan_of(dataset)
    tasks = list(config["experiment"]["tasks"])
    if "behaviour" in tasks and not plan["behaviour"]:
        note_once(
            dataset, f"behaviour jobs are not planned: {plan['behaviour_reason']}"
        )
        tasks.remove("behaviour")
    return [t for t in tasks if models_for(t, dataset)]


def protocols_for(dataset):
    """The configured protocols that ``dataset`` has folds for (lodo: pools only)."""
    folds = folds_of(dataset)
    protocols = [p for p in config["experiment"]["protocols"] if folds.get(p)]
    missing = [p for p in config["experiment"]["protocols"] if not folds.get(p)]
    note_once(
        dataset,
        f"protocol(s) {', '.join(missing)} not planned: {plan_of(dataset).get('lodo_reason')}",
        bool(missing),
    )
    return protocols


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
    for task in tasks or tasks_for(dataset):
        for protocol in protocols or protocols_for(dataset):
            for model in models_for(task, dataset):
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


def showcase(dataset):
    """The fold job whose held-out worm the trace and ethogram figures show: lowo
    (else the first protocol), fold 0, the first seed."""
    protocols = protocols_for(dataset)
    return {
        "protocol": "lowo" if "lowo" in protocols else protocols[0],
        "fold": 0,
        "seed": config["experiment"]["seeds"][0],
    }


def get_showcase_predictions(task, skip=FORECAST_ONLY_MODELS):
    """Input function: the showcase fold's predictions.h5 of every model of ``task``."""

    def inputs(wildcards):
        pick = showcase(wildcards.dataset)
        return get_fold_outputs(
            wildcards.dataset,
            tasks=[task],
            protocols=[pick["protocol"]],
            models=[m for m in models_for(task, wildcards.dataset) if m not in skip],
            folds=[pick["fold"]],
            seeds=[pick["seed"]],
            name="predictions.h5",
        )

    return inputs


def get_summaries(tasks, name="summary.csv"):
    """Input function: ``name`` (an aggregate's output) of every protocol of each of
    ``tasks`` (as run)."""

    def inputs(wildcards):
        return expand(
            f"results/{{dataset}}/{{task}}/{{protocol}}/{name}",
            dataset=wildcards.dataset,
            task=[t for t in tasks_for(wildcards.dataset) if t in tasks],
            protocol=protocols_for(wildcards.dataset),
        )

    return inputs


def get_frame_s_arg(wildcards):
    """The frame period of a dataset's preprocessed traces, for a time axis: from its
    preprocessed summary (known by the time figures are planned), else the config."""
    summary = f"results/{wildcards.dataset}/preprocessed/summary.json"
    if dataset_config(wildcards)["source"] == "pool" and os.path.exists(summary):
        with open(summary) as handle:
            fps = json.load(handle)["fps"]
    elif dataset_config(wildcards)["source"] == "pool":
        fps = dataset_config(wildcards).get("target_fps")
    else:
        fps = preprocess_config(wildcards.dataset).get("target_fps")
    return f"--frame-s {1 / fps}" if fps else ""


def graph_task(dataset):
    tasks = tasks_for(dataset)
    return "forecast" if "forecast" in tasks else tasks[0]


def get_graph_runs(name):
    """Input function: ``name`` of every gnn run, folds × seeds, of the graph task under
    the showcase protocol: the runs whose edge AUROCs summary.csv averages."""

    def inputs(wildcards):
        return get_fold_outputs(
            wildcards.dataset,
            tasks=[graph_task(wildcards.dataset)],
            protocols=[showcase(wildcards.dataset)["protocol"]],
            models=["gnn"],
            name=name,
        )

    return inputs


def figure_names(dataset):
    """The figures the configured experiment can draw on ``dataset``."""
    names = ["rulegraph"]
    tasks = tasks_for(dataset)
    forecast = "forecast" in tasks
    if forecast:
        names += ["forecast_score"]
        if [
            m for m in models_for("forecast", dataset) if m not in FORECAST_ONLY_MODELS
        ]:
            names += ["forecast_traces"]
    if "behaviour" in tasks:
        names += ["ethogram", "confusion"]
    if tasks:
        names += ["comparison"]
    if "gnn" in models_for(graph_task(dataset), dataset) if tasks else False:
        names += ["graph"]
    return names


def get_result_outputs(wildcards):
    """Stages 5-6 of every target dataset: aggregates and figures (once the folds exist)."""
    outputs = []
    for dataset in get_target_datasets():
        outputs += expand(
            "results/{dataset}/{task}/{protocol}/{name}",
            dataset=dataset,
            task=tasks_for(dataset),
            protocol=protocols_for(dataset),
            name=["summary.csv", "stats.json"],
        )
        outputs += [f"results/{dataset}/figures/{n}.png" for n in figure_names(dataset)]
    return outputs
