"""Keep Snakemake's local scheduler from running itself ever more often.

Snakemake (checked on 9.27) limits job submissions with ``--max-jobs-per-timespan``,
100 jobs per second by default, local runs included. While that limiter exists, every
pass of the scheduler's loop that leaves a ready job waiting (all cores busy) ends by
arming a one-shot timer for another pass one timespan later, and every finished job
starts a pass of its own. So each finished job adds one more chain of timers that lasts
as long as jobs wait: after n finished jobs the scheduler tries n passes a second, each
a stat of every ready job's inputs and a job selection. On the fixture study at
``--cores 2`` the Snakemake process itself used 1,242 CPU-seconds in its first 74.8
minutes (100 of 367 steps done; 28 % of a core on average, 44 % over a 10-second sample
at 97 finished jobs): CPU taken from the two training jobs it was scheduling.

A local run has no queue to protect, so :func:`drop_local_rate_limit` (called from the
Snakefile's ``onstart``, after the scheduler is built and before it runs) removes the
limiter there. Cluster executors keep theirs, and so does a local run given any other
``--max-jobs-per-timespan`` than the default.
"""

from __future__ import annotations

# Snakemake's default --max-jobs-per-timespan, 100/1s, as its limiter holds it.
DEFAULT_LIMIT = (100, 1.0)


def drop_local_rate_limit(workflow) -> bool:
    """Remove the job-rate limiter of a local, non-dry run that uses the default limit.

    ``workflow`` is the Snakefile's ``workflow`` object. Returns whether the limiter was
    removed. Anything unexpected (another Snakemake version without these attributes, a
    cluster executor, a limit the user chose) leaves the scheduler as it is.
    """
    scheduler = getattr(workflow, "scheduler", None)
    limiter = getattr(scheduler, "job_rate_limiter", None)
    if limiter is None:
        return False
    if not getattr(workflow, "local_exec", False) or getattr(workflow, "dryrun", True):
        return False
    try:
        limit = (int(limiter.max_jobs), float(limiter.timespan))
    except (AttributeError, TypeError, ValueError):
        return False
    if limit != DEFAULT_LIMIT:
        return False
    scheduler.job_rate_limiter = None
    return True
