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


def get_final_outputs():
    unknown = [d for d in config["targets"]["datasets"] if d not in config["datasets"]]
    if unknown:
        raise ValueError(
            f"targets.datasets names {unknown}, which are not under `datasets` in the "
            f"config (known: {sorted(config['datasets'])})"
        )
    outputs = []
    for dataset in config["targets"]["datasets"]:
        outputs += [
            f"results/{dataset}/preprocessed/summary.json",
            f"results/{dataset}/labels/summary.json",
            f"results/{dataset}/folds.json",
        ]
    return outputs
