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
        cfg=lambda wc: as_json(
            {
                k: v
                for k, v in dataset_config(wc).get("synthetic", {}).items()
                if k != "format"
            }
        ),
    shell:
        "log_to {log} python -m wormgnn.simulate --dataset {wildcards.dataset} --config {params.cfg:q}"
        " --mat {output.mat} --truth {output.truth}"


rule synthetic_nwb:
    input:
        mat="resources/raw/{dataset}.mat",
    output:
        manifest="resources/raw/{dataset}/manifest.json",
    log:
        "logs/export/{dataset}.log",
    wildcard_constraints:
        dataset=names_regex(
            [
                d
                for d in datasets_by_source("synthetic")
                if raw_format(config["datasets"][d]) == "nwb"
            ]
        ),
    conda:
        "../../envs/data.yaml"
    shell:
        "log_to {log} python -m wormgnn.export --raw {input.mat} --dataset {wildcards.dataset}"
        " --out-dir resources/raw/{wildcards.dataset} --manifest {output.manifest}"


rule dandi:
    output:
        manifest="resources/raw/{dataset}/manifest.json",
    log:
        "logs/dandi/{dataset}.log",
    wildcard_constraints:
        dataset=names_regex(datasets_by_source("dandi")),
    conda:
        "../../envs/data.yaml"
    params:
        dandiset=lambda wc: dataset_config(wc)["dandiset"],
        version=lambda wc: dataset_config(wc)["version"],
        assets=lambda wc: " ".join(shlex.quote(a) for a in dataset_config(wc)["assets"]),
        api=lambda wc: dataset_config(wc)["api"],
    shell:
        "log_to {log} python -m wormgnn.dandi --dandiset {params.dandiset} --version {params.version}"
        " --assets {params.assets} --api {params.api:q} --manifest {output.manifest}"


rule export_nwb:
    input:
        raw=get_raw_files,
    output:
        manifest="results/{dataset}/nwb/manifest.json",
    log:
        "logs/{dataset}/export_nwb.log",
    wildcard_constraints:
        dataset=names_regex(not_pools()),
    conda:
        "../../envs/data.yaml"
    params:
        read=get_read_args,
    shell:
        "log_to {log} python -m wormgnn.export --raw {input.raw:q} {params.read}"
        " --dataset {wildcards.dataset} --out-dir results/{wildcards.dataset}/nwb"
        " --manifest {output.manifest}"


rule preprocess:
    input:
        raw=get_raw_files,
    output:
        traces="results/{dataset}/preprocessed/traces.h5",
        summary="results/{dataset}/preprocessed/summary.json",
    log:
        "logs/{dataset}/preprocessed.log",
    wildcard_constraints:
        dataset=names_regex(not_pools()),
    conda:
        "../../envs/data.yaml"
    params:
        cfg=lambda wc: as_json(preprocess_config(wc.dataset)),
        read=get_read_args,
    shell:
        "log_to {log} python -m wormgnn.preprocess --raw {input.raw:q} {params.read}"
        " --dataset {wildcards.dataset} --config {params.cfg:q} --traces {output.traces}"
        " --summary {output.summary}"


rule align_labels:
    input:
        raw=get_raw_files,
        traces="results/{dataset}/preprocessed/traces.h5",
    output:
        labels="results/{dataset}/labels/labels.h5",
        summary="results/{dataset}/labels/summary.json",
    log:
        "logs/{dataset}/labels.log",
    wildcard_constraints:
        dataset=names_regex(not_pools()),
    conda:
        "../../envs/data.yaml"
    params:
        cfg=as_json(config["labels"]),
        read=get_read_args,
    shell:
        "log_to {log} python -m wormgnn.align_labels --raw {input.raw:q} {params.read}"
        " --traces {input.traces} --config {params.cfg:q} --labels {output.labels}"
        " --summary {output.summary}"


rule pool_traces:
    input:
        members=lambda wc: member_outputs(wc, "preprocessed/traces.h5"),
    output:
        traces="results/{dataset}/preprocessed/traces.h5",
        summary="results/{dataset}/preprocessed/summary.json",
    log:
        "logs/{dataset}/preprocessed.log",
    wildcard_constraints:
        dataset=names_regex(datasets_by_source("pool")),
    conda:
        "../../envs/data.yaml"
    params:
        members=lambda wc: " ".join(pool_members(wc.dataset)),
        fps=lambda wc: (
            f"--target-fps {dataset_config(wc)['target_fps']}"
            if dataset_config(wc).get("target_fps")
            else ""
        ),
        zscore=lambda wc: (
            "" if preprocess_config(wc.dataset)["zscore"] else "--no-zscore"
        ),
    shell:
        "log_to {log} python -m wormgnn.pool traces --dataset {wildcards.dataset}"
        " --members {params.members} --member-traces {input.members} {params.fps}"
        " {params.zscore} --traces {output.traces} --summary {output.summary}"


rule pool_labels:
    input:
        traces="results/{dataset}/preprocessed/traces.h5",
        member_traces=lambda wc: member_outputs(wc, "preprocessed/traces.h5"),
        member_labels=lambda wc: member_outputs(wc, "labels/labels.h5"),
    output:
        labels="results/{dataset}/labels/labels.h5",
        summary="results/{dataset}/labels/summary.json",
    log:
        "logs/{dataset}/labels.log",
    wildcard_constraints:
        dataset=names_regex(datasets_by_source("pool")),
    conda:
        "../../envs/data.yaml"
    params:
        members=lambda wc: " ".join(pool_members(wc.dataset)),
        cfg=as_json(config["labels"]),
    shell:
        "log_to {log} python -m wormgnn.pool labels --traces {input.traces}"
        " --members {params.members} --member-traces {input.member_traces}"
        " --member-labels {input.member_labels} --config {params.cfg:q}"
        " --labels {output.labels} --summary {output.summary}"


checkpoint make_folds:
    input:
        traces="results/{dataset}/preprocessed/traces.h5",
        labels="results/{dataset}/labels/summary.json",
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
        " --gap-s {params.gap_s} --labels-summary {input.labels} --out {output.folds}"
