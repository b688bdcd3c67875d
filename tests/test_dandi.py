"""The DANDI download against a local HTTP server on loopback that plays the API."""

import hashlib
import http.server
import json
import threading

import pytest
from wormgnn import dandi

GOOD = b"NWB body " * 5000
OTHER = b"second file " * 3000


class FakeDandi:
    """Serves /api/dandisets/.../versions/..., the asset list and metadata, and
    /api/assets/<id>/download/ with each asset's body (optionally truncated)."""

    def __init__(self) -> None:
        self.assets: dict[str, dict] = {}
        self.downloads: list[str] = []
        self.version = "0.240101.0001"
        handler = self._handler()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.api = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, asset_id, path, body, *, sha256=True, etag=True, digest=None, cut=0):
        meta = {"contentSize": len(body), "digest": {}}
        if sha256:
            meta["digest"]["dandi:sha2-256"] = digest or hashlib.sha256(body).hexdigest()
        if etag:
            part = hashlib.md5(body).digest()
            meta["digest"]["dandi:dandi-etag"] = hashlib.md5(part).hexdigest() + "-1"
        self.assets[asset_id] = {"path": path, "body": body, "meta": meta, "cut": cut}

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, obj, status=200):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:2] == ["api", "dandisets"] and len(parts) >= 5:
                    if parts[4] != fake.version:
                        return self._json({"detail": "Not found."}, 404)
                    if len(parts) == 5:
                        return self._json({"version": fake.version})
                    if len(parts) == 6:
                        results = [
                            {"asset_id": k, "path": a["path"], "size": len(a["body"])}
                            for k, a in fake.assets.items()
                        ]
                        return self._json({"count": len(results), "next": None, "results": results})
                    return self._json(fake.assets[parts[6]]["meta"])
                if parts[:2] == ["api", "assets"] and parts[3] == "download":
                    asset = fake.assets.get(parts[2])
                    if asset is None:
                        return self._json({"detail": "Not found."}, 404)
                    fake.downloads.append(parts[2])
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(asset["body"])))
                    self.end_headers()
                    self.wfile.write(asset["body"][: len(asset["body"]) - asset["cut"]])
                    return None
                return self._json({"detail": "Not found."}, 404)

        return Handler


@pytest.fixture
def fake():
    server = FakeDandi()
    yield server
    server.server.shutdown()
    server.server.server_close()


def download(fake, tmp_path, patterns=("sub-*/*.nwb",), version=None):
    return dandi.download(
        fake.api,
        "000776",
        version or fake.version,
        list(patterns),
        tmp_path / "raw" / "manifest.json",
    )


def test_good_files_are_verified_placed_and_listed_in_order(fake, tmp_path):
    fake.add("b", "sub-2/sub-2_ophys.nwb", OTHER, sha256=False)  # verified by its etag
    fake.add("a", "sub-1/sub-1_ophys.nwb", GOOD)
    summary = download(fake, tmp_path)
    assert [f["file"] for f in summary["files"]] == [
        "sub-1/sub-1_ophys.nwb",
        "sub-2/sub-2_ophys.nwb",
    ]
    assert summary["files"][0]["verified"].startswith("sha256")
    assert summary["files"][1]["verified"].startswith("dandi-etag")
    assert (tmp_path / "raw/sub-1/sub-1_ophys.nwb").read_bytes() == GOOD
    assert json.loads((tmp_path / "raw/manifest.json").read_text()) == summary
    download(fake, tmp_path)  # again: nothing is downloaded twice
    assert fake.downloads == ["a", "b"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda f: f.add("a", "sub-1/x.nwb", GOOD, digest="0" * 64),
            r"sub-1/x\.nwb: sha256 .* does not match",
        ),
        (lambda f: f.add("a", "sub-1/x.nwb", GOOD, cut=1000), r"sub-1/x\.nwb: .*cut short"),
        (
            lambda f: f.add("a", "sub-1/x.nwb", GOOD, sha256=False, etag=False),
            r"sub-1/x\.nwb: .*no digest",
        ),
    ],
)
def test_bad_bodies_fail_naming_the_asset_and_leave_nothing(fake, tmp_path, setup, message):
    setup(fake)
    with pytest.raises(dandi.DandiError, match=message):
        download(fake, tmp_path)
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]


def test_missing_asset_and_unknown_version(fake, tmp_path):
    fake.add("a", "sub-1/x.nwb", GOOD)
    with pytest.raises(dandi.DandiError, match=r"no asset matching 'sub-9/\*'"):
        download(fake, tmp_path, patterns=["sub-9/*"])
    with pytest.raises(dandi.DandiError, match=r"000776 has no version '0\.999999\.9'"):
        download(fake, tmp_path, version="0.999999.9")
    with pytest.raises(dandi.DandiError, match="draft"):
        download(fake, tmp_path, version="draft")
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").rglob("*"))


def test_an_asset_gone_from_storage_is_named(fake, tmp_path):
    fake.add("a", "sub-1/x.nwb", GOOD)
    assets = fake.assets
    fake.assets = dict(assets)
    real = dandi.fetch

    def fetch_gone(api, asset, out):
        fake.assets.pop(asset.asset_id, None)
        return real(api, asset, out)

    dandi.fetch, saved = fetch_gone, dandi.fetch
    try:
        with pytest.raises(dandi.DandiError, match=r"sub-1/x\.nwb: the download answered HTTP 404"):
            download(fake, tmp_path)
    finally:
        dandi.fetch = saved
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]


def test_dandi_etag_of_several_parts(monkeypatch):
    assert dandi.etag_part_size(64 << 20) == 64 << 20
    big = 10_000 * (64 << 20) + 1
    assert dandi.etag_part_size(big) == -(-big // 10_000)
    monkeypatch.setattr(dandi, "_PART_SIZE", 1000)
    body = bytes(range(256)) * 10  # 2560 bytes: parts of 1000, 1000, 560
    digests = dandi.Digests(len(body))
    for i in range(0, len(body), 333):
        digests.update(body[i : i + 333])
    parts = [hashlib.md5(body[i : i + 1000]).digest() for i in range(0, len(body), 1000)]
    assert digests.etag() == hashlib.md5(b"".join(parts)).hexdigest() + "-3"
