"""The OSF download against a real HTTP server on 127.0.0.1 serving OSF-shaped JSON."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from wormgnn import download

BODY = b"MATLAB 7.3 pretend body " * 4096  # about 100 kB, several chunks


class FakeOSF:
    """An OSF API look-alike: a paginated root listing with a folder holding the file."""

    def __init__(self) -> None:
        self.body = BODY
        self.listed_sha256 = hashlib.sha256(BODY).hexdigest()
        self.truncate_to: int | None = None
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                fake.requests.append(self.path)
                route = fake.routes().get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                kind, payload = route
                if kind == "json":
                    data = json.dumps(payload).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.api+json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                sent = payload if fake.truncate_to is None else payload[: fake.truncate_to]
                self.wfile.write(sent)
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def file_entry(self, name: str, path: str, body: bytes, sha256: str | None) -> dict:
        return {
            "type": "files",
            "attributes": {
                "kind": "file",
                "name": name,
                "materialized_path": path,
                "size": len(body),
                "extra": {"hashes": {"md5": "x", "sha256": sha256}},
            },
            "links": {"download": f"{self.base}/download{path}"},
        }

    def routes(self) -> dict[str, tuple[str, object]]:
        api = f"{self.base}/v2"
        folder = {
            "type": "files",
            "attributes": {"kind": "folder", "name": "data", "materialized_path": "/data/"},
            "relationships": {"files": {"links": {"related": {"href": f"{api}/folder-data/"}}}},
            "links": {},
        }
        readme = b"read me"
        return {
            "/v2/nodes/2395t/files/osfstorage/": (
                "json",
                {
                    "data": [
                        self.file_entry(
                            "README.txt", "/README.txt", readme, hashlib.sha256(readme).hexdigest()
                        )
                    ],
                    "links": {"next": f"{api}/nodes/2395t/files/osfstorage/?page=2"},
                },
            ),
            "/v2/nodes/2395t/files/osfstorage/?page=2": (
                "json",
                {"data": [folder], "links": {"next": None}},
            ),
            "/v2/folder-data/": (
                "json",
                {
                    "data": [
                        self.file_entry(
                            "WT_NoStim.mat", "/data/WT_NoStim.mat", self.body, self.listed_sha256
                        )
                    ],
                    "links": {"next": None},
                },
            ),
            "/download/data/WT_NoStim.mat": ("file", self.body),
            "/download/README.txt": ("file", readme),
        }

    def __enter__(self) -> FakeOSF:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def osf():
    with FakeOSF() as server:
        yield server


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_resolves_through_pages_and_folders_and_verifies(osf, tmp_path):
    out = tmp_path / "raw" / "kato.mat"
    sha = download.download(
        "2395t", "WT_NoStim.mat", out, api=f"{osf.base}/v2", sha256=osf.listed_sha256.upper()
    )
    assert out.read_bytes() == BODY
    assert sha == hashlib.sha256(BODY).hexdigest()
    assert "/v2/nodes/2395t/files/osfstorage/?page=2" in osf.requests  # pagination followed
    assert "/v2/folder-data/" in osf.requests  # folder followed
    assert leftovers(out.parent) == ["kato.mat"]


def test_file_can_be_named_by_path(osf, tmp_path):
    out = tmp_path / "kato.mat"
    download.download("2395t", "data/WT_NoStim.mat", out, api=f"{osf.base}/v2")
    assert out.read_bytes() == BODY


def test_hash_mismatch_against_api_leaves_nothing(osf, tmp_path):
    osf.listed_sha256 = "0" * 64
    out = tmp_path / "kato.mat"
    with pytest.raises(
        download.DownloadError, match="does not match .* from OSF's API.*Nothing was kept"
    ):
        download.download("2395t", "WT_NoStim.mat", out, api=f"{osf.base}/v2")
    assert leftovers(tmp_path) == []


def test_hash_mismatch_against_pinned_sha256(osf, tmp_path):
    out = tmp_path / "kato.mat"
    with pytest.raises(download.DownloadError, match=r"from config\.yaml \(sha256:\)"):
        download.download("2395t", "WT_NoStim.mat", out, api=f"{osf.base}/v2", sha256="f" * 64)
    assert leftovers(tmp_path) == []


def test_truncated_body_leaves_nothing(osf, tmp_path):
    osf.truncate_to = len(BODY) // 3
    out = tmp_path / "kato.mat"
    with pytest.raises(download.DownloadError, match="cut short.*run the rule again"):
        download.download("2395t", "WT_NoStim.mat", out, api=f"{osf.base}/v2")
    assert leftovers(tmp_path) == []


def test_missing_file_name_lists_what_exists(osf, tmp_path):
    with pytest.raises(
        download.DownloadError, match=r"no file named 'WT_Stim\.mat'.*/data/WT_NoStim\.mat"
    ):
        download.download("2395t", "WT_Stim.mat", tmp_path / "x.mat", api=f"{osf.base}/v2")
    assert leftovers(tmp_path) == []


def test_offline_error_says_how_to_use_a_local_file(tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(download.DownloadError, match="source: local.*path:"):
        download.download(
            "2395t", "WT_NoStim.mat", tmp_path / "x.mat", api=f"http://127.0.0.1:{port}/v2"
        )


def test_cli_exits_with_the_message(osf, tmp_path, capsys):
    osf.listed_sha256 = "0" * 64
    with pytest.raises(SystemExit, match="error: .*sha256"):
        download.main(
            [
                "--node",
                "2395t",
                "--file",
                "WT_NoStim.mat",
                "--api",
                f"{osf.base}/v2",
                "--out",
                str(tmp_path / "x.mat"),
            ]
        )
    assert leftovers(tmp_path) == []
