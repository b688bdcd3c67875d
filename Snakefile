# wormgnn: graph neural networks on C. elegans whole-brain imaging (Kato et al. 2015).
# The stages live in workflow/rules/; each rule runs one module of workflow/wormgnn/.
import os
import shlex
import sys

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config.yaml"


include: "workflow/rules/schema.smk"


validate_config(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


# Rules run `log_to {log} python -m wormgnn.<stage>`. The prefix makes the package
# importable in every job, inside conda environments and on cluster nodes too, without
# `pip install`, and defines log_to: stderr to the rule's log, and a failure's error
# line to the console as well (workflow/scripts/log_to.sh).
shell.prefix(
    "set -euo pipefail; "
    f"export PYTHONPATH={shlex.quote(os.path.join(workflow.basedir, 'workflow'))}"
    "${{PYTHONPATH:+:$PYTHONPATH}}; "  # braces doubled: shell strings are formatted
    f"source {shlex.quote(os.path.join(workflow.basedir, 'workflow', 'scripts', 'log_to.sh'))}; "
)


# The planner reads wormgnn.schemes (plain Python) to check the config before anything runs.
sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))


# Snakemake's default job-rate limit makes its local scheduler rerun itself more often
# with every finished job (workflow/wormgnn/scheduling.py); a local run drops it.
onstart:
    from snakemake.logging import logger
    from wormgnn.scheduling import drop_local_rate_limit

    if drop_local_rate_limit(workflow):
        logger.debug("wormgnn: local run, job-rate limiter removed")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/results.smk"


rule all:
    default_target: True
    input:
        data=get_data_outputs(),
        models=get_model_outputs,
        results=get_result_outputs,
