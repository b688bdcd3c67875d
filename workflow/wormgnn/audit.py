"""Audit trail of a run: the resolved configuration and the rule graph.

- ``config``: the configuration Snakemake resolved (``config.yaml``, profiles,
  ``--configfile`` and ``--config`` layered), written as YAML; the report shows it.
- ``rulegraph``: ``snakemake --rulegraph`` of the workflow under that configuration, as
  DOT. It runs Snakemake again read-only (``--nolock``) in the same working directory.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import yaml

from wormgnn import files

log = logging.getLogger("wormgnn.audit")


def write_config(config: dict, out: Path) -> None:
    with files.atomic_path(out) as tmp:
        tmp.write_text(
            "# The configuration this run resolved (config.yaml, profiles and --config).\n"
            + yaml.safe_dump(config, sort_keys=False)
        )


def rulegraph_dot(snakefile: Path, configfile: Path, directory: Path) -> str:
    """``snakemake --rulegraph`` of the default target under ``configfile``."""
    import snakemake  # noqa: F401  (the environment must provide it)

    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
        "--directory", str(directory), "--configfile", str(configfile),
        "--rulegraph", "--nolock", "--quiet", "all",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    start = done.stdout.find("digraph")
    if done.returncode != 0 or start < 0:
        raise ValueError(
            f"snakemake --rulegraph failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )
    return done.stdout[start:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.audit", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("config", help="write the resolved configuration as YAML")
    p.add_argument("--config", required=True, help="the resolved config, as JSON")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("rulegraph", help="write the workflow's rule graph as DOT")
    p.add_argument("--snakefile", type=Path, required=True)
    p.add_argument("--configfile", type=Path, required=True)
    p.add_argument("--directory", type=Path, default=Path())
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        if args.what == "config":
            write_config(files.parse_json_arg(args.config, "config"), args.out)
        else:
            text = rulegraph_dot(args.snakefile, args.configfile, args.directory)
            with files.atomic_path(args.out) as tmp:
                tmp.write_text(text)
        log.info("wrote %s", args.out)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
