"""Download NWB assets of a pinned dandiset version, verified, to ``resources/raw/{dataset}/``.

Through the DANDI REST API (``{api}`` = ``https://api.dandiarchive.org/api``):

1. ``{api}/dandisets/{id}/versions/{version}/`` must exist; a ``draft`` is refused,
   because drafts change under the same name.
2. ``{api}/dandisets/{id}/versions/{version}/assets/`` lists the assets (paginated through
   ``next``); each configured path or glob must match at least one.
3. ``.../assets/{asset_id}/`` gives each asset's metadata: its ``digest``
   (``dandi:sha2-256`` when DANDI computed it, ``dandi:dandi-etag`` always) and size.
4. ``{api}/assets/{asset_id}/download/`` streams the body (DANDI redirects to S3) to a
   temporary file beside the target while its digests are computed. Only a complete body
   whose sha256 (else dandi-etag) matches moves into place under its asset path.

A file already in place whose digest matches is never downloaded again. The rule's
output, ``manifest.json``, lists the files in the asset order (sorted paths), which is
the worm order; it is written last, so it exists only when every asset is verified.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import http.client
import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wormgnn import files
from wormgnn.download import stream

log = logging.getLogger("wormgnn.dandi")

DEFAULT_API = "https://api.dandiarchive.org/api"
_CHUNK = 1 << 20
_TIMEOUT_S = 60
#: S3 multipart layout behind the dandi-etag (dandischema.digests.dandietag).
_PART_SIZE = 64 << 20
_MAX_PARTS = 10_000


class DandiError(RuntimeError):
    """An asset that could not be resolved, downloaded or verified; the message says which."""


@dataclass
class Asset:
    asset_id: str
    path: str  #: path inside the dandiset, e.g. sub-X/sub-X_ses-Y_ophys.nwb
    size: int | None
    sha256: str | None
    etag: str | None


def _get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        return json.load(response)


def resolve(api: str, dandiset: str, version: str, patterns: list[str]) -> list[Asset]:
    """The assets matching ``patterns`` in ``dandiset``/``version``, sorted by path."""
    if version == "draft":
        raise DandiError(
            f"dandiset {dandiset}: version 'draft' changes under the same name; pin a "
            "published version (see the dandiset's page, e.g. 0.240101.1234)"
        )
    base = f"{api.rstrip('/')}/dandisets/{dandiset}/versions/{version}"
    try:
        _get_json(f"{base}/")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise DandiError(
                f"dandiset {dandiset} has no version {version!r} (HTTP 404); check `version:`"
            ) from err
        raise
    listed: list[dict[str, Any]] = []
    url: str | None = f"{base}/assets/?page_size=1000"
    while url:
        page = _get_json(url)
        listed += page["results"]
        url = page.get("next")
    chosen: dict[str, dict[str, Any]] = {}
    for pattern in patterns:
        hits = [a for a in listed if fnmatch.fnmatchcase(a["path"], pattern)]
        if not hits:
            raise DandiError(
                f"dandiset {dandiset} version {version} has no asset matching {pattern!r} "
                f"({len(listed)} assets there, e.g. {[a['path'] for a in listed[:3]]})"
            )
        chosen.update({a["path"]: a for a in hits})
    assets = []
    for path in sorted(chosen):
        meta = _get_json(f"{base}/assets/{chosen[path]['asset_id']}/")
        digest = meta.get("digest") or {}
        assets.append(
            Asset(
                asset_id=chosen[path]["asset_id"],
                path=path,
                size=meta.get("contentSize", chosen[path].get("size")),
                sha256=digest.get("dandi:sha2-256"),
                etag=digest.get("dandi:dandi-etag"),
            )
        )
    return assets


class Digests:
    """sha256 and the dandi-etag of a byte stream, updated chunk by chunk."""

    def __init__(self, size: int) -> None:
        self.sha256 = hashlib.sha256()
        self.part_size = etag_part_size(size)
        self.parts: list[bytes] = []
        self.part = hashlib.md5(usedforsecurity=False)
        self.in_part = 0

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        view = memoryview(chunk)
        while view:
            take = min(len(view), self.part_size - self.in_part)
            self.part.update(view[:take])
            self.in_part += take
            view = view[take:]
            if self.in_part == self.part_size:
                self._close_part()

    def _close_part(self) -> None:
        self.parts.append(self.part.digest())
        self.part = hashlib.md5(usedforsecurity=False)
        self.in_part = 0

    def etag(self) -> str:
        if self.in_part:
            self._close_part()
        whole = hashlib.md5(b"".join(self.parts), usedforsecurity=False).hexdigest()
        return f"{whole}-{len(self.parts)}"


def etag_part_size(size: int) -> int:
    """The S3 part size DANDI uses for a file of ``size`` bytes."""
    if math.ceil(size / _PART_SIZE) >= _MAX_PARTS:
        return math.ceil(size / _MAX_PARTS)
    return _PART_SIZE


def file_digests(path: Path, size: int) -> Digests:
    digests = Digests(size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digests.update(block)
    return digests


def verify(asset: Asset, digests: Digests, received: int) -> str:
    """The digest that matched (``sha256 …`` or ``dandi-etag …``), else an error."""
    if asset.size is not None and received != asset.size:
        raise DandiError(
            f"{asset.path}: received {received} bytes but DANDI lists {asset.size}; the "
            "download was cut short. Nothing was kept: run the rule again."
        )
    if asset.sha256:
        got = digests.sha256.hexdigest()
        if got != asset.sha256.lower():
            raise DandiError(
                f"{asset.path}: sha256 {got} does not match DANDI's {asset.sha256}. "
                "Nothing was kept: run the rule again."
            )
        return f"sha256 {got}"
    if asset.etag:
        got = digests.etag()
        if got != asset.etag:
            raise DandiError(
                f"{asset.path}: dandi-etag {got} does not match DANDI's {asset.etag} (no "
                "sha256 is published for it). Nothing was kept: run the rule again."
            )
        return f"dandi-etag {got}"
    raise DandiError(f"{asset.path}: DANDI publishes no digest for it; it cannot be verified")


def fetch(api: str, asset: Asset, out: Path) -> str:
    """Stream ``asset`` to ``out`` atomically; return the digest that verified it."""
    url = f"{api.rstrip('/')}/assets/{urllib.parse.quote(asset.asset_id)}/download/"
    try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise DandiError(
            f"{asset.path}: the download answered HTTP {err.code} ({err.reason}); nothing was kept"
        ) from err
    with files.atomic_path(out) as tmp:
        with response, open(tmp, "wb") as sink:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None else asset.size
            digests = Digests(asset.size if asset.size is not None else expected or 0)
            received = stream(response, sink, asset.path, expected, digests.update)
        if expected is not None and received != expected:
            raise DandiError(
                f"{asset.path}: received {received} bytes but the server announced "
                f"{expected}; the download was cut short. Nothing was kept: run the rule again."
            )
        return verify(asset, digests, received)


def download(
    api: str, dandiset: str, version: str, patterns: list[str], manifest: Path
) -> dict[str, Any]:
    """Every matching asset, verified, beside ``manifest``; then the manifest."""
    root = manifest.parent
    where = f"dandiset {dandiset} version {version}"
    try:
        assets = resolve(api, dandiset, version, patterns)
        log.info("%s: %d assets: %s", where, len(assets), [a.path for a in assets])
        entries = []
        for asset in assets:
            out = root / asset.path
            size = out.stat().st_size if out.is_file() else None
            if size is not None and asset.size in (None, size):
                try:
                    how = verify(asset, file_digests(out, size), size)
                    log.info("%s: already here and verified (%s); not downloaded", asset.path, how)
                    entries.append(_entry(asset, how))
                    continue
                except DandiError:
                    log.warning("%s: the file here does not verify; downloading it again", out)
            how = fetch(api, asset, out)
            log.info("%s: verified %s → %s", asset.path, how, out)
            entries.append(_entry(asset, how))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise DandiError(
            f"could not reach the DANDI API for {where} at {api} ({err}). If this machine "
            "is offline, download the files elsewhere (`dandi download`) and use "
            "`source: nwb` with `path:` pointing at them."
        ) from err
    except http.client.HTTPException as err:
        raise DandiError(
            f"{where}: a download failed part-way ({err!r}). Nothing was kept: run again."
        ) from err
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise DandiError(
            f"the DANDI API answered in an unexpected shape ({err!r}); is `api` right?"
        ) from err
    summary = {"dandiset": dandiset, "version": version, "api": api, "files": entries}
    files.write_json(manifest, summary)
    return summary


def _entry(asset: Asset, how: str) -> dict[str, Any]:
    return {"file": asset.path, "asset_id": asset.asset_id, "size": asset.size, "verified": how}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wormgnn.dandi", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dandiset", required=True, help="dandiset id, e.g. 000776")
    parser.add_argument("--version", required=True, help="published version (not draft)")
    parser.add_argument("--assets", nargs="+", required=True, help="asset paths or globs")
    parser.add_argument("--api", default=DEFAULT_API, help="DANDI API base URL")
    parser.add_argument("--manifest", type=Path, required=True, help="output manifest.json")
    args = parser.parse_args(argv)
    files.setup_logging()
    try:
        download(args.api, args.dandiset, args.version, args.assets, args.manifest)
    except DandiError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
