"""The report's texts: every caption renders (Jinja, then reStructuredText) as Snakemake
renders it, without a single docutils system message (those show up in the report as
red "System Message" boxes)."""

import io
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import yaml
from conftest import REPO
from docutils import nodes
from docutils.core import publish_doctree

CAPTIONS = sorted((REPO / "workflow" / "report").glob("*.rst"))


def render(path: Path, showcase_protocol: str = "lowo") -> str:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    showcase = {"protocol": showcase_protocol, "fold": 0, "seed": 3}
    snakemake = SimpleNamespace(
        wildcards=SimpleNamespace(dataset="kato2015_wt_nostim", task="forecast", protocol="lowo"),
        params=SimpleNamespace(task="forecast", protocol="lowo", showcase=showcase),
        config=config,
    )
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(path.read_text()).render(snakemake=snakemake)


def test_every_caption_is_found():
    assert len(CAPTIONS) >= 10
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for path in CAPTIONS:
        if path.name != "workflow.rst":
            assert f'caption="../report/{path.name}"' in rules, path.name


@pytest.mark.parametrize("path", CAPTIONS, ids=lambda p: p.name)
def test_caption_builds_without_system_messages(path):
    warnings = io.StringIO()
    doctree = publish_doctree(
        render(path),
        settings_overrides={"report_level": 1, "halt_level": 5, "warning_stream": warnings},
    )
    messages = [m.astext() for m in doctree.findall(nodes.system_message)]
    assert not messages and not warnings.getvalue(), f"{path.name}: {messages or warnings}"


@pytest.mark.parametrize("name", ["ethogram.rst", "forecast_traces.rst"])
def test_the_showcase_captions_name_the_fold_and_a_within_test_block(name):
    within = " ".join(render(REPO / "workflow" / "report" / name, "within").split())
    assert "the first worm's test block (``within`` fold 0, seed 3)." in within
    assert "held-out" not in within
    lowo = " ".join(render(REPO / "workflow" / "report" / name, "lowo").split())
    assert "a held-out worm (``lowo`` fold 0, seed 3)." in lowo


def test_a_stray_indent_is_caught():
    """The check above can fail: an indented line after a paragraph is an error."""
    warnings = io.StringIO()
    doctree = publish_doctree(
        "A caption of\ntwo lines.\n Then a line indented by one space.\n",
        settings_overrides={"report_level": 1, "halt_level": 5, "warning_stream": warnings},
    )
    assert list(doctree.findall(nodes.system_message)) or warnings.getvalue()
