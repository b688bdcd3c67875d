# Stages 1-2: raw data (download or simulate), ΔF/F preprocessing, labels, folds.


rule download:
    output:
        mat="resources/raw/{dataset}.mat",
    log:
        "logs/download/{dataset}.log",
    wildcard_constraints:
        dataset=names_regex(datasets_by_source("osf")),
    conda:
        "../../envs/data.yaml"
    params:
        node=lambda wc: dataset_config(wc)["osf_node"],
        file=lambda wc: dataset_config(wc)["file"],
        api=lambda wc: dataset_config(wc)["osf_api"],
        sha256=lambda wc: dataset_config(wc).get("sha256") or "",
    shell:
        "log_to {log} python -m wormgnn.download --node {params.node} --file {params.file:q}"
        " --api {params.api:q} --sha256 '{params.sha256}' --out {output.mat}"


rule simulate:
    output:
        mat="resources/raw/{dataset}.mat",
        truth="resources/raw/{dataset}.truth.h5",
    log:
        "logs/simulate/{dataset}.log",
    wildcard_constraints:
        dataset=names_regex(datasets_by_source("synthetic")),
    conda:
        "../../envs/data.yaml"
    params:
        cfg=lambda wc: as_json(dataset_config(wc).get("synthetic", {})),
    shell:
        "log_to {log} python -m wormgnn.simulate --dataset {wildcards.dataset} --config {params.cfg:q}"
        " --mat {output.mat} --truth {output.truth}"


rule preprocess:
    input:
        mat=get_raw_mat,
    output:
        traces="results/{dataset}/preprocessed/traces.h5",
        summary="results/{dataset}/preprocessed/summary.json",
    log:
        "logs/{dataset}/preprocessed.log",
    conda:
        "../../envs/data.yaml"
    params:
        cfg=as_json(config["preprocess"]),
        root=get_root_arg,
    shell:
        "log_to {log} python -m wormgnn.preprocess --raw {input.mat:q} --dataset {wildcards.dataset}"
        " {params.root} --config {params.cfg:q} --traces {output.traces}"
        " --summary {output.summary}"


rule align_labels:
    input:
        mat=get_raw_mat,
        traces="results/{dataset}/preprocessed/traces.h5",
    output:
        labels="results/{dataset}/labels/labels.h5",
        summary="results/{dataset}/labels/summary.json",
    log:
        "logs/{dataset}/labels.log",
    conda:
        "../../envs/data.yaml"
    params:
        cfg=as_json(config["labels"]),
        root=get_root_arg,
    shell:
        "log_to {log} python -m wormgnn.align_labels --raw {input.mat:q} --traces {input.traces}"
        " {params.root} --config {params.cfg:q} --labels {output.labels}"
        " --summary {output.summary}"


checkpoint make_folds:
    input:
        traces="results/{dataset}/preprocessed/traces.h5",
    output:
        folds="results/{dataset}/folds.json",
    log:
        "logs/{dataset}/folds.log",
    conda:
        "../../envs/data.yaml"
    params:
        n_folds=config["folds"]["within"]["n_folds"],
        gap_s=config["folds"]["within"]["gap_s"],
    shell:
        "log_to {log} python -m wormgnn.make_folds --traces {input.traces} --within-folds {params.n_folds}"
        " --gap-s {params.gap_s} --out {output.folds}"
