"""crs.data.download against a local HTTP server: verify, resume, atomic replace, mismatch, zip."""
import hashlib
import io
import os
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crs.data.download import MANIFESTS, RemoteFile, download_files, run_download
from crs.errors import ConfigError, DataError

PAYLOAD = os.urandom(3 * (1 << 20) + 123)  # spans several read chunks


class _Server:
    """Serves `files` by path; honours Range; can cut the first response short."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_first: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                server.requests.append((path, self.headers.get("Range")))
                if path not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[path], 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if path in server.cut_first:  # promise the whole body, send a third, hang up
                    server.cut_first.discard(path)
                    self.wfile.write(body[start:start + len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with _Server() as srv:
        yield srv


def _entry(target, body, sha=None, **kw):
    return RemoteFile(url="unused", sha256=sha or hashlib.sha256(body).hexdigest(), size=len(body), target=target, **kw)


def test_download_verifies_and_reports_progress(server, tmp_path):
    server.files["raw/data.bin"] = PAYLOAD
    progress = io.StringIO()
    written = download_files([_entry("raw/data.bin", PAYLOAD)], tmp_path, base_url=server.url, stream=progress)
    assert written == [tmp_path / "raw" / "data.bin"] and written[0].read_bytes() == PAYLOAD
    assert not (tmp_path / "raw" / "data.bin.part").exists()
    assert progress.getvalue().endswith("\rraw/data.bin: 3.1 MB / 3.1 MB (100%)\n")
    # a second run finds the verified file and fetches nothing
    download_files([_entry("raw/data.bin", PAYLOAD)], tmp_path, base_url=server.url, stream=None)
    assert len(server.requests) == 1


def test_resume_from_existing_part_file(server, tmp_path):
    server.files["data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    download_files([_entry("data.bin", PAYLOAD)], tmp_path, base_url=server.url, stream=None)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests == [("data.bin", "bytes=1000-")]


def test_truncated_response_is_resumed(server, tmp_path):
    server.files["data.bin"] = PAYLOAD
    server.cut_first.add("data.bin")
    download_files([_entry("data.bin", PAYLOAD)], tmp_path, base_url=server.url, stream=None)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    (first, first_range), (second, second_range) = server.requests
    assert first_range is None and second_range == f"bytes={len(PAYLOAD) // 3}-"


def test_complete_part_file_is_verified_without_refetching(server, tmp_path):
    server.files["data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download_files([_entry("data.bin", PAYLOAD)], tmp_path, base_url=server.url, stream=None)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD and server.requests == []


def test_checksum_mismatch_leaves_no_file_and_explains(server, tmp_path):
    server.files["data.bin"] = PAYLOAD
    wrong = _entry("data.bin", PAYLOAD, sha="0" * 64)
    with pytest.raises(DataError) as err:
        download_files([wrong], tmp_path, base_url=server.url, stream=None)
    message = str(err.value)
    assert "checksum mismatch" in message and hashlib.sha256(PAYLOAD).hexdigest() in message
    assert "run the command again" in message
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()


def test_http_error_and_unverified_entries(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        download_files([_entry("absent.bin", b"x")], tmp_path, base_url=server.url, stream=None, retries=0)
    server.files["free.bin"] = b"abc"
    unverified = RemoteFile(url="unused", sha256=None, size=None, target="free.bin")
    assert download_files([unverified], tmp_path, base_url=server.url, stream=None) == []
    out = io.StringIO()
    assert download_files([unverified], tmp_path, base_url=server.url, stream=out, allow_unverified=True)
    assert hashlib.sha256(b"abc").hexdigest() in out.getvalue()


def test_zip_members_are_extracted(server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("redial/train_data.jsonl", '{"conversationId": "1"}\n')
        archive.writestr("redial/other.txt", "ignored")
    server.files["raw/release.zip"] = buffer.getvalue()
    entry = _entry("raw/release.zip", buffer.getvalue(), extract={"train_data.jsonl": "raw/train_data.jsonl"})
    download_files([entry], tmp_path, base_url=server.url, stream=None)
    assert (tmp_path / "raw" / "train_data.jsonl").read_text() == '{"conversationId": "1"}\n'
    assert not (tmp_path / "raw" / "other.txt").exists()


# The only files a manifest may list without a checksum (fetched only with allow_unverified): nobody has
# published one and the shared data's snapshot lacks the file to take it from (inspired/PROVENANCE.md).
UNVERIFIED = {("inspired", "raw/train.tsv")}


def test_manifests_are_well_formed(tmp_path):
    without_checksum = set()
    for name, entries in MANIFESTS.items():
        targets = [e.target for e in entries]
        assert len(set(targets)) == len(targets), name
        for entry in entries:
            assert entry.url.startswith("https://"), (name, entry.target)
            if entry.sha256 is None:
                without_checksum.add((name, entry.target))
            else:
                assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), (name, entry.target)
            assert entry.size is None or entry.size > 0, (name, entry.target)
    # a checksum dropped by mistake fails here; a newly published one means: remove it from UNVERIFIED
    assert without_checksum == UNVERIFIED, "every manifest entry needs a sha256, except those in UNVERIFIED"
    assert {"redial", "inspired"} <= set(MANIFESTS)
    with pytest.raises(ConfigError, match="use one of: inspired, redial"):
        run_download("movielens", tmp_path)
