# Stages 5-6: aggregates over folds × seeds, figures, and what the report shows.
# `snakemake --report report.html` collects every output marked report(...) below,
# with its caption from workflow/report/.

FIGURE_DIR = "results/{dataset}/figures"


rule aggregate:
    input:
        metrics=get_aggregate_inputs,
    output:
        summary=report(
            "results/{dataset}/{task}/{protocol}/summary.csv",
            caption="../report/summary.rst",
            category="{dataset}",
            subcategory="{task}",
            labels={"table": "summary", "protocol": "{protocol}"},
        ),
        stats=report(
            "results/{dataset}/{task}/{protocol}/stats.json",
            caption="../report/stats.rst",
            category="{dataset}",
            subcategory="{task}",
            labels={"table": "paired tests", "protocol": "{protocol}"},
        ),
    log:
        "logs/{dataset}/{task}/{protocol}/aggregate.log",
    wildcard_constraints:
        task="forecast|behaviour",
        protocol="lowo|within|lodo",
    conda:
        "../../envs/figures.yaml"
    params:
        cfg=as_json(config.get("aggregate", {})),
    shell:
        "log_to {log} python -m wormgnn.aggregate --metrics {input.metrics} --config {params.cfg:q}"
        " --summary {output.summary} --stats {output.stats}"


rule resolved_config:
    output:
        report(
            "results/config.yaml",
            caption="../report/config.rst",
            category="pipeline",
            labels={"file": "resolved configuration"},
        ),
    log:
        "logs/resolved_config.log",
    conda:
        "../../envs/figures.yaml"
    params:
        cfg=as_json(config),
    shell:
        "log_to {log} python -m wormgnn.audit config --config {params.cfg:q} --out {output}"


rule rulegraph:
    input:
        config="results/config.yaml",
        # make_folds is a checkpoint: until its output exists, Snakemake cannot see the
        # fold jobs, and the graph would lack train, evaluate and what follows them.
        folds=expand("results/{dataset}/folds.json", dataset=get_target_datasets()),
    output:
        "results/rulegraph.dot",
    log:
        "logs/rulegraph.log",
    conda:
        "../../envs/figures.yaml"
    params:
        snakefile=workflow.main_snakefile,
    shell:
        "log_to {log} python -m wormgnn.audit rulegraph --snakefile {params.snakefile:q}"
        " --configfile {input.config} --out {output}"


rule figure_rulegraph:
    input:
        dot="results/rulegraph.dot",
    output:
        report(
            f"{FIGURE_DIR}/rulegraph.png",
            caption="../report/rulegraph.rst",
            category="pipeline",
            labels={"figure": "7 rule graph", "dataset": "{dataset}"},
        ),
    log:
        "logs/{dataset}/figures/rulegraph.log",
    conda:
        "../../envs/figures.yaml"
    shell:
        "log_to {log} python -m wormgnn.figures rulegraph --dot {input.dot} --out {output}"


rule figure_forecast_traces:
    input:
        predictions=get_showcase_predictions("forecast"),
    output:
        png=report(
            f"{FIGURE_DIR}/forecast_traces.png",
            caption="../report/forecast_traces.rst",
            category="{dataset}",
            subcategory="figures",
            labels={"figure": "1 forecast traces"},
        ),
        pdf=f"{FIGURE_DIR}/forecast_traces.pdf",
    log:
        "logs/{dataset}/figures/forecast_traces.log",
    conda:
        "../../envs/figures.yaml"
    params:
        showcase=lambda wc: showcase(wc.dataset),  # for the caption
    shell:
        "log_to {log} python -m wormgnn.figures forecast-traces --predictions {input.predictions}"
        " --out {output.png}"


rule figure_forecast_score:
    input:
        summaries=get_summaries(["forecast"]),
    output:
        png=report(
            f"{FIGURE_DIR}/forecast_score.png",
            caption="../report/forecast_score.rst",
            category="{dataset}",
            subcategory="figures",
            labels={"figure": "2 forecast score by horizon"},
        ),
        pdf=f"{FIGURE_DIR}/forecast_score.pdf",
    log:
        "logs/{dataset}/figures/forecast_score.log",
    conda:
        "../../envs/figures.yaml"
    params:
        frame_s=get_frame_s_arg,
    shell:
        "log_to {log} python -m wormgnn.figures forecast-score --summary {input.summaries}"
        " {params.frame_s} --out {output.png}"


rule figure_ethogram:
    input:
        predictions=get_showcase_predictions("behaviour"),
    output:
        png=report(
            f"{FIGURE_DIR}/ethogram.png",
            caption="../report/ethogram.rst",
            category="{dataset}",
            subcategory="figures",
            labels={"figure": "3 ethogram"},
        ),
        pdf=f"{FIGURE_DIR}/ethogram.pdf",
    log:
        "logs/{dataset}/figures/ethogram.log",
    conda:
        "../../envs/figures.yaml"
    params:
        showcase=lambda wc: showcase(wc.dataset),  # for the caption
    shell:
        "log_to {log} python -m wormgnn.figures ethogram --predictions {input.predictions}"
        " --out {output.png}"


rule figure_confusion:
    input:
        metrics=lambda wc: get_fold_outputs(wc.dataset, tasks=["behaviour"]),
    output:
        png=report(
            f"{FIGURE_DIR}/confusion.png",
            caption="../report/confusion.rst",
            category="{dataset}",
            subcategory="figures",
            labels={"figure": "4 confusion matrices"},
        ),
        pdf=f"{FIGURE_DIR}/confusion.pdf",
    log:
        "logs/{dataset}/figures/confusion.log",
    conda:
        "../../envs/figures.yaml"
    shell:
        "log_to {log} python -m wormgnn.figures confusion --metrics {input.metrics}"
        " --out {output.png}"


rule figure_comparison:
    input:
        summaries=get_summaries(["forecast", "behaviour"]),
        stats=get_summaries(["forecast", "behaviour"], "stats.json"),  # read beside each
    output:
        png=report(
            f"{FIGURE_DIR}/comparison.png",
            caption="../report/comparison.rst",
            category="{dataset}",
            subcategory="figures",
            labels={"figure": "5 model comparison"},
        ),
        pdf=f"{FIGURE_DIR}/comparison.pdf",
    log:
        "logs/{dataset}/figures/comparison.log",
    conda:
        "../../envs/figures.yaml"
    shell:
        "log_to {log} python -m wormgnn.figures comparison --summary {input.summaries}"
        " --out {output.png}"


rule figure_graph:
    input:
        predictions=get_graph_runs("predictions.h5"),
        metrics=get_graph_runs("metrics.json"),
        truth=get_truth,
    output:
        png=report(
            f"{FIGURE_DIR}/graph.png",
            caption="../report/graph.rst",
            category="{dataset}",
            subcategory="figures",
            labels={"figure": "6 inferred graph"},
        ),
        pdf=f"{FIGURE_DIR}/graph.pdf",
    log:
        "logs/{dataset}/figures/graph.log",
    conda:
        "../../envs/figures.yaml"
    params:
        truth=get_truth_arg,
        connectome=config["experiment"]["connectome"],
        task=lambda wc: graph_task(wc.dataset),  # for the caption
        protocol=lambda wc: showcase(wc.dataset)["protocol"],
    shell:
        "log_to {log} python -m wormgnn.figures graph --predictions {input.predictions}"
        " --metrics {input.metrics} {params.truth} --connectome {params.connectome}"
        " --out {output.png}"
