"""The conda environments: they parse, pin every package, and cover what each rule's
module imports (computed from the code, transitively through the wormgnn package)."""

import ast
import re
import sys
from importlib.metadata import packages_distributions

import pytest
import yaml
from conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))
PACKAGE = REPO / "workflow" / "wormgnn"
TORCH_ENVS = ["../../envs/torch.yaml", "../../envs/torch-cuda.yaml"]


def env_packages(path):
    spec = yaml.safe_load(path.read_text())
    names = {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for item in dep["pip"]:
                if not item.startswith("--"):
                    name, _, version = item.partition("==")
                    names[name.lower().replace("_", "-")] = version
        else:
            name, _, version = dep.partition("=")
            names[name.lower().replace("_", "-")] = version
    return names


def rule_modules():
    """(rule, env file, module) for every rule that runs `python -m wormgnn.<module>`."""
    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=(?:rule|checkpoint) )", smk.read_text()):
            rule = re.match(r"(?:rule|checkpoint) (\w+):", block)
            env = re.search(r'conda:\s*\n\s*("[^"]+"|TORCH_ENV)', block)
            module = re.search(r"python -m wormgnn\.(\w+)", block)
            if rule and module:
                # TORCH_ENV (common.smk) is one of two envs; both must cover the rule
                names = (
                    TORCH_ENVS if env and env.group(1) == "TORCH_ENV" else [env and env.group(1)]
                )
                for name in names:
                    path = name and (smk.parent / name.strip('"')).resolve()
                    found.append((rule.group(1), path, module.group(1)))
    return found


def third_party_imports(module: str, seen=None) -> set[str]:
    """Top-level third-party modules imported by wormgnn.<module>, transitively."""
    seen = seen if seen is not None else set()
    if module in seen:
        return set()
    seen.add(module)
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            top = name.split(".")[0]
            if top == "wormgnn":
                sub = name.removeprefix("wormgnn.").removeprefix("wormgnn")
                if sub and (
                    (PACKAGE / (sub.replace(".", "/") + ".py")).exists()
                    or (PACKAGE / sub.replace(".", "/")).is_dir()
                ):
                    found |= third_party_imports(sub, seen)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
    return found


@pytest.mark.parametrize("env", ENVS, ids=[e.name for e in ENVS])
def test_env_parses_and_pins_every_package(env):
    packages = env_packages(env)
    assert packages, f"{env.name} lists no packages"
    unpinned = [name for name, version in packages.items() if not version]
    assert not unpinned, f"{env.name}: unpinned {unpinned}"


def test_every_rule_declares_an_env_that_covers_its_imports():
    distributions = packages_distributions()
    rules = rule_modules()
    assert {r for r, _, _ in rules} >= {
        "download",
        "simulate",
        "preprocess",
        "align_labels",
        "make_folds",
        "train",
        "evaluate",
        "aggregate",
        "resolved_config",
        "rulegraph",
        "figure_rulegraph",
        "figure_forecast_traces",
        "figure_forecast_score",
        "figure_ethogram",
        "figure_confusion",
        "figure_comparison",
        "figure_graph",
    }
    for rule, env, module in rules:
        assert env is not None and env.exists(), f"rule {rule} declares no existing conda env"
        packages = env_packages(env)
        for name in third_party_imports(module):
            dists = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
            assert dists & set(packages), f"rule {rule}: {env.name} lacks {name} ({dists})"
