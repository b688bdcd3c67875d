# Stages 3-4: per-fold training (on a GPU where one exists) and evaluation. A fold's
# train (and evaluate) job runs every seed in turn: each seed's files and numbers are
# those of a job for that seed alone (tested), and the fold pays one process start
# (about 4 s, 3 of them importing torch) instead of one per seed.
#
# Every job takes one thread (torch's and the BLAS pools', which Snakemake sets from
# `threads`), so `--cores N` runs N jobs and never oversubscribes the CPU. Measured on 2
# cores (the fixture's 34 fold-0 lowo jobs): two 1-thread jobs side by side finished
# them in 6.0 min, one 2-thread job at a time in 7.8 min.


rule select:
    input:
        traces="results/{dataset}/preprocessed/traces.h5",
        labels="results/{dataset}/labels/labels.h5",
        folds="results/{dataset}/folds.json",
    output:
        selection=SELECTION,
    log:
        "logs/{dataset}/{task}/{protocol}/{model}/fold{fold}/select.log",
    benchmark:
        "benchmarks/{dataset}/{task}/{protocol}/{model}/fold{fold}/select.tsv"
    wildcard_constraints:
        task="forecast|behaviour",
        protocol="lowo|within|lodo",
        fold=r"\d+",
    conda:
        TORCH_ENV
    threads: 1
    resources:
        gpu=uses_gpu,
        gpu_slots=uses_gpu,
    params:
        run=get_run_config,
        search=lambda wc: as_json(search_of(wc.model)),
        fidelity=get_selection_fidelity_arg,
    shell:
        "log_to {log} python -m wormgnn.select --traces {input.traces} --labels {input.labels}"
        " --folds {input.folds} --run {params.run:q} --search {params.search:q}"
        " {params.fidelity} --threads {threads} --out {output.selection}"


rule train:
    input:
        traces="results/{dataset}/preprocessed/traces.h5",
        labels="results/{dataset}/labels/labels.h5",
        folds="results/{dataset}/folds.json",
        selection=get_selection,
    output:
        model=per_seed("model.pt"),
        history=per_seed("history.csv"),
    log:
        f"logs/{FOLD_JOB}/train.log",
    benchmark:
        f"benchmarks/{FOLD_JOB}/train.tsv"
    wildcard_constraints:
        task="forecast|behaviour",
        protocol="lowo|within|lodo",
        fold=r"\d+",
    conda:
        TORCH_ENV
    threads: 1
    resources:
        gpu=uses_gpu,
        gpu_slots=uses_gpu,
    params:
        run=get_run_config,
        selection=get_selection_arg,
        seeds=SEEDS_ARG,
    shell:
        "log_to {log} python -m wormgnn.train --traces {input.traces} --labels {input.labels}"
        " --folds {input.folds} --run {params.run:q} {params.selection} --threads {threads}"
        " --seeds {params.seeds} --model-file {output.model} --history {output.history}"


rule evaluate:
    input:
        model=per_seed("model.pt"),
        traces="results/{dataset}/preprocessed/traces.h5",
        labels="results/{dataset}/labels/labels.h5",
        folds="results/{dataset}/folds.json",
        selection=get_selection,
        truth=get_truth,
    output:
        metrics=per_seed("metrics.json"),
        predictions=per_seed("predictions.h5"),
    log:
        f"logs/{FOLD_JOB}/evaluate.log",
    benchmark:
        f"benchmarks/{FOLD_JOB}/evaluate.tsv"
    wildcard_constraints:
        task="forecast|behaviour",
        protocol="lowo|within|lodo",
        fold=r"\d+",
    conda:
        TORCH_ENV
    threads: 1
    params:
        run=get_run_config,
        truth=get_truth_arg,
        selection=get_selection_arg,
        seeds=SEEDS_ARG,
    shell:
        "log_to {log} python -m wormgnn.evaluate --traces {input.traces} --labels {input.labels}"
        " --folds {input.folds} --run {params.run:q} {params.selection} --threads {threads}"
        " --seeds {params.seeds} --model-file {input.model} {params.truth}"
        " --metrics {output.metrics}"
        " --predictions {output.predictions}"
