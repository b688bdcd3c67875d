"""Download a file of an OSF project by name, verified, to ``resources/raw/{dataset}.mat``.

OSF publishes no stable per-file URL, so the file is found through OSF's public JSON API:
``{api}/nodes/{node}/files/osfstorage/`` lists a folder (paginated through
``links.next``); sub-folders are followed through ``relationships.files``. Each file
entry carries its download link, size and hashes. The body is streamed to a temporary
file beside the target while its sha256 is computed; only a complete body whose sha256
matches the API's (and the one pinned in config, if any) is moved into place.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import sys
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from wormgnn import files

log = logging.getLogger("wormgnn.download")

DEFAULT_API = "https://api.osf.io/v2"
_CHUNK = 1 << 20
_TIMEOUT_S = 60


class DownloadError(RuntimeError):
    """A download that could not be completed and verified; the message says what to do."""


@dataclass
class RemoteFile:
    name: str
    path: str  # materialized path inside the project, e.g. /folder/WT_NoStim.mat
    url: str
    size: int | None
    sha256: str | None


def _get_json(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.api+json"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        return json.load(response)


def list_files(api: str, node: str) -> list[RemoteFile]:
    """Every file in the OSF storage of ``node``, following pages and folders."""
    pending = deque([f"{api.rstrip('/')}/nodes/{node}/files/osfstorage/"])
    found: list[RemoteFile] = []
    while pending:
        url: str | None = pending.popleft()
        while url:
            page = _get_json(url)
            for entry in page.get("data", []):
                attrs = entry.get("attributes", {})
                if attrs.get("kind") == "folder":
                    related = entry["relationships"]["files"]["links"]["related"]
                    pending.append(related["href"] if isinstance(related, dict) else related)
                    continue
                hashes = (attrs.get("extra") or {}).get("hashes") or {}
                found.append(
                    RemoteFile(
                        name=attrs["name"],
                        path=attrs.get("materialized_path") or "/" + attrs["name"],
                        url=entry["links"]["download"],
                        size=attrs.get("size"),
                        sha256=hashes.get("sha256"),
                    )
                )
            url = (page.get("links") or {}).get("next")
    return found


def find_file(remote: list[RemoteFile], wanted: str, node: str) -> RemoteFile:
    """The one file named ``wanted`` (a bare name, or a path such as ``dir/x.mat``)."""
    wanted_path = "/" + wanted.strip("/")
    hits = [f for f in remote if f.name == wanted or f.path == wanted_path]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        available = ", ".join(sorted(f.path for f in remote)) or "none"
        raise DownloadError(
            f"OSF project {node} has no file named {wanted!r}. Files there: {available}. "
            "Fix `file:` for this dataset in config.yaml."
        )
    raise DownloadError(
        f"OSF project {node} has several files named {wanted!r}: "
        f"{', '.join(f.path for f in hits)}. Give the full path in `file:`."
    )


def stream(
    response: Any, sink: BinaryIO, name: str, expected: int | None, on_chunk: Callable
) -> int:
    """Copy a response body to ``sink`` with a progress bar (on a terminal), calling
    ``on_chunk`` on every chunk; return the number of bytes received."""
    received = 0
    bar = tqdm(
        total=expected,
        unit="B",
        unit_scale=True,
        desc=name,
        file=sys.stderr,
        disable=None,
        mininterval=2.0,
    )
    with bar:
        while chunk := response.read(_CHUNK):
            sink.write(chunk)
            on_chunk(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def fetch(remote: RemoteFile, out: Path, pinned_sha256: str | None = None) -> str:
    """Stream ``remote`` to ``out`` atomically and return its verified sha256."""
    digest = hashlib.sha256()
    with files.atomic_path(out) as tmp:
        with (
            urllib.request.urlopen(remote.url, timeout=_TIMEOUT_S) as response,
            open(tmp, "wb") as sink,
        ):
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None else remote.size
            received = stream(response, sink, remote.name, expected, digest.update)
        for what, size in (("the server announced", expected), ("OSF lists", remote.size)):
            if size is not None and received != size:
                raise DownloadError(
                    f"{remote.name}: received {received} bytes but {what} {size}; the "
                    "download was cut short. Nothing was kept: run the rule again."
                )
        sha = digest.hexdigest()
        checks = [("OSF's API", remote.sha256), ("config.yaml (sha256:)", pinned_sha256)]
        for source, want in checks:
            if want and sha != want.lower():
                raise DownloadError(
                    f"{remote.name}: sha256 {sha} does not match {want} from {source}. "
                    "Nothing was kept. Run again; if it persists, the remote file changed: "
                    "check it and update or remove the pinned sha256."
                )
    if not remote.sha256 and not pinned_sha256:
        log.warning("%s: no sha256 from OSF or config; the file is unverified", remote.name)
    return sha


def download(
    node: str, wanted: str, out: Path, api: str = DEFAULT_API, sha256: str | None = None
) -> str:
    """Resolve ``wanted`` in OSF project ``node`` and download it to ``out``."""
    try:
        remote = find_file(list_files(api, node), wanted, node)
        log.info("%s: %s (%s bytes) from %s", wanted, remote.path, remote.size, remote.url)
        sha = fetch(remote, out, sha256)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise DownloadError(
            f"could not download {wanted!r} from OSF project {node} ({err}). If this machine "
            f"is offline, download the file by hand from https://osf.io/{node}/ and point "
            "the dataset at it in config.yaml with `source: local` and `path: /where/it/is.mat`."
        ) from err
    except http.client.HTTPException as err:  # e.g. IncompleteRead: the body was cut short
        raise DownloadError(
            f"downloading {wanted!r} failed part-way ({err!r}). "
            "Nothing was kept: run the rule again."
        ) from err
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise DownloadError(
            f"OSF's API answered in an unexpected shape ({err!r}); is `osf_api` right?"
        ) from err
    log.info("%s: verified sha256 %s → %s", wanted, sha, out)
    return sha


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.download", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--node", required=True, help="OSF project id, e.g. 2395t")
    parser.add_argument("--file", required=True, help="file name or path in the project")
    parser.add_argument("--api", default=DEFAULT_API, help="OSF API base URL")
    parser.add_argument("--sha256", default=None, help="pinned sha256 to verify as well")
    parser.add_argument("--out", type=Path, required=True, help="where to write the file")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        download(args.node, args.file, args.out, api=args.api, sha256=args.sha256 or None)
    except DownloadError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
