"""The workaround for Snakemake's local scheduler passes (wormgnn.scheduling)."""

from types import SimpleNamespace

import pytest
from snakemake.scheduling.job_scheduler import JobRateLimiter
from snakemake.settings.types import MaxJobsPerTimespan
from wormgnn.scheduling import drop_local_rate_limit


def workflow_with(limit, local_exec=True, dryrun=False):
    limiter = None if limit is None else JobRateLimiter(MaxJobsPerTimespan.parse_choice(limit))
    scheduler = SimpleNamespace(job_rate_limiter=limiter)
    return SimpleNamespace(scheduler=scheduler, local_exec=local_exec, dryrun=dryrun)


def test_the_default_limit_of_a_local_run_is_dropped():
    workflow = workflow_with("100/1s")  # Snakemake's default, as its CLI parses it
    assert drop_local_rate_limit(workflow)
    assert workflow.scheduler.job_rate_limiter is None


@pytest.mark.parametrize(
    "limit, local_exec, dryrun",
    [
        ("100/1s", False, False),  # a cluster executor keeps its submission limit
        ("100/1s", True, True),  # a dry run (it builds no limiter anyway)
        ("10/1m", True, False),  # a limit the user chose
        ("100/2s", True, False),
        (None, True, False),  # no limiter at all
    ],
)
def test_any_other_limiter_is_kept(limit, local_exec, dryrun):
    workflow = workflow_with(limit, local_exec, dryrun)
    before = workflow.scheduler.job_rate_limiter
    assert not drop_local_rate_limit(workflow)
    assert workflow.scheduler.job_rate_limiter is before


def test_a_workflow_without_these_attributes_is_left_alone():
    assert not drop_local_rate_limit(SimpleNamespace())
    scheduler = SimpleNamespace(job_rate_limiter=object())
    odd = SimpleNamespace(scheduler=scheduler, local_exec=True, dryrun=False)
    assert not drop_local_rate_limit(odd)
    assert odd.scheduler.job_rate_limiter is not None
