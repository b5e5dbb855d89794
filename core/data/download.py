"""`crs data download redial|inspired`: fetch public corpus files, verified, resumable and atomic.

Each corpus is a manifest of :class:`RemoteFile` (url, sha256, size, target path
under the destination folder).  URLs are pinned to commits, so the bytes -- and
their sha256, which are the "source sha256" values of the shared data's
PROVENANCE.md -- never change.  A download

* streams into ``<target>.part`` and resumes it with an HTTP ``Range`` request
  when a previous attempt (or a dropped connection) left one behind;
* is checked against the sha256 (and size) before ``os.replace`` moves it to the
  target, so a target file is always complete and verified; a mismatch deletes
  the ``.part`` file and raises a DataError that says what to do;
* prints one progress line per file on stderr.

Targets keep the source file names (``raw/test_data.jsonl``); the dataset loaders
also accept these where their defaults name the gzip copies of the shared folder.
Files whose checksum nobody has published (``sha256=None``) are skipped unless
``allow_unverified=True``; then their computed sha256 is printed.

Only :mod:`urllib` is used.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, TextIO

from ..errors import ConfigError, DataError

CHUNK = 1 << 20
MIRROR_SCHEMES = ("http", "https", "file")
USER_AGENT = "crs-registry-download/1"


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str | None  # None: no published checksum (downloaded only with allow_unverified)
    size: int | None
    target: str  # path under the destination folder
    extract: dict[str, str] = field(default_factory=dict)  # zip member basename -> target path


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_REDIAL_SITE = ("ReDialData/website", "849e9eb1bb60e312f8bf4daa82fc10a285e9318b")
_KGSF = ("RUCAIBox/KGSF", "d4f783a0b386ebb6beb74506f0e3de4d509c996e")
_IEVALM = ("RUCAIBox/iEvaLM-CRS", "162e2f442fb0799550af587dce0285a2d5ca897f")
_REVCORE = ("JD-AI-Research-NLP/RevCore", "18bfb78f0857ab32c0e29967903337cea72aa15b")
_SHUPEILI = ("ShupeiLi/KGSF", "bc706b4c908b3561018d1ed7775ccda778c5f35e")
_LLMKB = ("BitbanChou/LLMKB", "d9250756a46e3cd46883cf49b192d1a63e539a17")
_INSPIRED = ("sweetpeach/Inspired", "782d7c1845d11f75d2542809c7f2a51b63ef0304")

MANIFESTS: dict[str, list[RemoteFile]] = {
    "redial": [
        RemoteFile(_gh(*_REDIAL_SITE, "test_data"),
                   "d7781750787d104ac005e829cc7e6277d25b14644a223b0c2445aaaded6b19ac", 3790112, "raw/test_data.jsonl"),
        RemoteFile(_gh(*_REDIAL_SITE, "movies_with_mentions.csv"),
                   "0d408daa474ac95b959a739a261dddd997dd800f5ea585da15a434a26187dbb0", 226703,
                   "raw/movies_with_mentions.csv"),
        # The official release zip (train + test + movies).  Its checksum is the one ParlAI's
        # ReDial task records; the blob is not in the snapshots PROVENANCE.md was made from.
        RemoteFile("https://github.com/ReDialData/website/raw/data/redial_dataset.zip",
                   "b48756681ec6f84e0af36979c5e9baa21ea8d9e7036b8764ea9b787bb0baf69b", None,
                   "raw/redial_dataset.zip", extract={"train_data.jsonl": "raw/train_data.jsonl"}),
        RemoteFile(_gh(*_KGSF, "data/subkg.pkl"),
                   "843aebff87af71a595789bc4d25929a8f584299644d93f3bb6fe40cacaaca72b", 2074144, "kgsf/subkg.pkl"),
        RemoteFile(_gh(*_KGSF, "data/entity2entityId.pkl"),
                   "ec3ac62ad968a130bc902747ca505f63c142e417b5205887be80955a16163483", 3768676,
                   "kgsf/entity2entityId.pkl"),
        RemoteFile(_gh(*_KGSF, "data/id2entity.pkl"),
                   "415231d92dfdd4692f16812d7c4fcb58fea880291a3c952ec1f55f8e50cf07b9", 399729, "kgsf/id2entity.pkl"),
        RemoteFile(_gh(*_KGSF, "data/movie_ids.pkl"),
                   "42f3fefa710f1ca5523aef2dacefd74f699898773243810d2988a10919e443da", 20764, "kgsf/movie_ids.pkl"),
        RemoteFile(_gh(*_KGSF, "word2index_redial.json"),
                   "3234ddc6d1025328544be2d414a9fe9f02af0d6b2b517475f52fdd2af08812eb", 409216,
                   "kgsf/word2index_redial.json"),
        RemoteFile(_gh(*_KGSF, "key2index_3rd.json"),
                   "e1dfc1e92ccc7097ed2925fc6918982b58d77ac60e3d0eeac59242030b64466d", 533091,
                   "kgsf/key2index_3rd.json"),
        RemoteFile(_gh(*_KGSF, "stopwords.txt"),
                   "883fc88a14aa980677c80d485e6c16863fa40ff87743b1f46c6970845ed8f0a5", 7677, "kgsf/stopwords.txt"),
        RemoteFile(_gh(*_SHUPEILI, "conceptnet_one_hop_edges.txt"),
                   "dfd5c8f9eb8cf05d6633edffc985f8215f8be1796cad3722cda53c5ac7058180", 1205408,
                   "conceptnet_one_hop_shupeili/conceptnet_one_hop_edges.txt"),
        RemoteFile(_gh(*_SHUPEILI, "conceptnet_one_hop_key2index.json"),
                   "524d6d91222ae468dbb1fb3a387bf766a2f4c37fc67de032060647c3745ea693", 566680,
                   "conceptnet_one_hop_shupeili/conceptnet_one_hop_key2index.json"),
        RemoteFile(_gh(*_IEVALM, "data/redial/id2info.json"),
                   "7bdfe9a9c7f1b4d59aa9a5aeba0029071fd5a7232b61c8257212a335ffe424f7", 2745351,
                   "ievalm_metadata_kg/id2info.json"),
        RemoteFile(_gh(*_REVCORE, "movie2tokenreview_helpful.pkl"),
                   "b40b353534c26a4d7031970e9b3a2a209029c44b6adb77680c2410906539fb83", 751087,
                   "reviews_revcore/movie2tokenreview_helpful.pkl"),
    ],
    "inspired": [
        RemoteFile(_gh(*_LLMKB, "data/inspired/train_data_dbpedia.jsonl"),
                   "f185878d61f4cf95036711612befbec2e587b42fcb7bf855fba3af08016e7743", 3965124,
                   "unicrs_dbpedia/train_data_dbpedia.jsonl"),
        RemoteFile(_gh(*_LLMKB, "data/inspired/valid_data_dbpedia.jsonl"),
                   "8cde8cf7f55d4f2a71f1c7c8e4b921ca9caaee615999fd3728c7bea214b01839", 484801,
                   "unicrs_dbpedia/valid_data_dbpedia.jsonl"),
        RemoteFile(_gh(*_LLMKB, "data/inspired/test_data_dbpedia.jsonl"),
                   "d1ab79e33858224983de938f6401a18fab7bd99bb4580512fbe804459539f593", 476786,
                   "unicrs_dbpedia/test_data_dbpedia.jsonl"),
        RemoteFile(_gh(*_LLMKB, "data/inspired/dbpedia_subkg.json"),
                   "33245f36bdded33368a7988fe340dd3cb4bc0d8156a6afee56226741cb647a19", 541881,
                   "unicrs_dbpedia/dbpedia_subkg.json"),
        RemoteFile(_gh(*_LLMKB, "data/inspired/entity2id.json"),
                   "6ea0f59be9da55a78e2b48eff35928bf62a7232d143eb905d350ed38268583d2", 1060452,
                   "unicrs_dbpedia/entity2id.json"),
        RemoteFile(_gh(*_LLMKB, "data/inspired/relation2id.json"),
                   "6a36fdf987d0597e8346c6d9a0e6333b6d3aea67cfe03bebce0114a0deaabda1", 578,
                   "unicrs_dbpedia/relation2id.json"),
        RemoteFile(_gh(*_LLMKB, "data/inspired/item_ids.json"),
                   "6e300dc6b89ab483f1474ee550e94709cdbcd09354928546fa32dc3b48fe12c1", 7100,
                   "unicrs_dbpedia/item_ids.json"),
        RemoteFile(_gh(*_INSPIRED, "data/dialog_data/dev.tsv"),
                   "15a955be002222ba9e95f886802e06a91fb5e457f8a25deae3e7908d58faa947", 1318247, "raw/dev.tsv"),
        RemoteFile(_gh(*_INSPIRED, "data/dialog_data/test.tsv"),
                   "a10f63ff26045158460730d4829ffba74bee86fb744d9f48c1c1c511ef609993", 1239679, "raw/test.tsv"),
        # The official train split; no published checksum, so only fetched with allow_unverified.
        RemoteFile(_gh(*_INSPIRED, "data/dialog_data/train.tsv"), None, None, "raw/train.tsv"),
    ],
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class _Progress:
    """One self-overwriting line per file on `stream` (None: silent)."""

    def __init__(self, stream: TextIO | None, label: str, total: int | None):
        self.stream, self.label, self.total = stream, label, total

    def show(self, done: int, final: bool = False) -> None:
        if self.stream is None:
            return
        amount = f"{done / 1e6:.1f} MB"
        if self.total:
            amount += f" / {self.total / 1e6:.1f} MB ({100 * done // self.total}%)"
        self.stream.write(f"\r{self.label}: {amount}" + ("\n" if final else ""))
        self.stream.flush()


def _fetch_into(url: str, part: Path, entry: RemoteFile, progress: _Progress, timeout: float) -> None:
    """Append the missing bytes of `url` to `part` (one HTTP request); raises OSError-like on a drop."""
    start = part.stat().st_size if part.exists() else 0
    if entry.size is not None and start >= entry.size:
        return  # complete already; the checksum decides whether it is right
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # nothing left to send: the part file holds everything
            return
        raise DataError(url, f"HTTP {err.code} {err.reason}", "check the address, or try again later") from None
    with response:
        resumed = start and response.status == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {start}-")
        mode = "ab" if resumed else "wb"  # a server ignoring Range sends the whole file again
        done = start if resumed else 0
        expected = response.headers.get("Content-Length")
        received = 0
        with open(part, mode) as out:
            while block := response.read(CHUNK):
                out.write(block)
                received += len(block)
                done += len(block)
                progress.show(done)
        # http.client does not complain when a body ends early; a short body is a dropped connection
        if expected is not None and expected.isdigit() and received < int(expected):
            raise ConnectionError(f"connection closed after {received} of {expected} bytes")


def download_file(entry: RemoteFile, dest: Path, *, base_url: str | None = None, retries: int = 3,
                  timeout: float = 60.0, stream: TextIO | None = sys.stderr,
                  allow_unverified: bool = False) -> Path | None:
    """Fetch one manifest entry into ``dest/entry.target``; return the path, or None when skipped.

    `base_url` replaces the entry's address by ``<base_url>/<target>`` (mirrors, tests).
    """
    target = dest / entry.target
    url = f"{base_url.rstrip('/')}/{entry.target}" if base_url else entry.url
    if entry.sha256 is None and not allow_unverified:
        if stream is not None:
            stream.write(f"{entry.target}: skipped (no published sha256; pass allow_unverified to fetch it)\n")
        return None
    if target.exists() and (entry.sha256 is None or sha256_of(target) == entry.sha256):
        if stream is not None:
            stream.write(f"{entry.target}: present and verified\n")
        _extract(entry, target, dest)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    progress = _Progress(stream, entry.target, entry.size)
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, entry, progress, timeout)
            break
        except (http.client.IncompleteRead, urllib.error.URLError, ConnectionError, socket.timeout,
                TimeoutError) as err:
            if attempt == retries:
                raise DataError(url, f"download failed after {retries + 1} attempts ({err})",
                                f"run the command again: it resumes from {part}") from None
    size = part.stat().st_size if part.exists() else 0
    progress.show(size, final=True)
    actual = sha256_of(part) if part.exists() else ""
    if entry.sha256 is not None and (actual != entry.sha256 or (entry.size is not None and size != entry.size)):
        part.unlink(missing_ok=True)
        raise DataError(str(target), f"checksum mismatch for {url}: got sha256 {actual} ({size} bytes), "
                                     f"expected {entry.sha256}" + (f" ({entry.size} bytes)" if entry.size else ""),
                        "the partial file was deleted; run the command again. If it fails the same way the "
                        "source changed: compare with the sources listed in PROVENANCE.md")
    if entry.sha256 is None and stream is not None:
        stream.write(f"{entry.target}: UNVERIFIED, sha256 {actual}\n")
    os.replace(part, target)
    _extract(entry, target, dest)
    return target


def _extract(entry: RemoteFile, archive: Path, dest: Path) -> None:
    """Copy the named zip members to their targets (atomically); other members are ignored."""
    if not entry.extract:
        return
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = {Path(info.filename).name: info for info in zipped.infolist() if not info.is_dir()}
            for member, target_name in entry.extract.items():
                if member not in members:
                    raise DataError(str(archive), f"the archive has no member '{member}'",
                                    "the release changed; fetch the file by hand (see PROVENANCE.md)")
                target = dest / target_name
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + ".part")
                with zipped.open(members[member]) as source, open(part, "wb") as out:
                    while block := source.read(CHUNK):
                        out.write(block)
                os.replace(part, target)
    except zipfile.BadZipFile as err:
        raise DataError(str(archive), f"not a valid zip archive ({err})", "delete it and download again") from None


def download_files(entries: Iterable[RemoteFile], dest: Path | str, **options) -> list[Path]:
    """Fetch every entry (see :func:`download_file` for `options`); return the files written.

    A destination that cannot be created or written to (a path under a file, a read-only
    or full disk) is a DataError naming the file, not a traceback.
    """
    dest = writable_folder(dest, "--dest")
    written = []
    for entry in entries:
        try:  # network errors never get here: download_file retries them and raises a DataError
            path = download_file(entry, dest, **options)
        except OSError as err:
            where = err.filename or dest / entry.target
            raise DataError(str(where), f"cannot write the download ({err.strerror or err})",
                            "free disk space, or choose a writable folder with --dest; the command resumes "
                            "from the files already fetched") from None
        if path is not None:
            written.append(path)
    return written


def writable_folder(path: Path | str, option: str) -> Path:
    """`path` as a folder that exists (created with its parents) and takes new files; a ConfigError otherwise.

    Shared by ``crs data download --dest`` and ``crs data demo --out``.  Writing is tried
    (a temporary file, removed at once) rather than judged from permission bits, which do
    not bind root and say nothing about read-only mounts.

    :param option: the command-line option that named the folder, for the message.
    """
    folder = Path(path)
    blocker = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError("", f"cannot create the folder '{folder}': '{blocker}' is a file, not a folder",
                          "choose another folder", source=option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".crs-write-check.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError("", f"cannot write into the folder '{folder}' ({err.strerror or err})",
                          "choose a folder you can write to", source=option) from None
    return folder


def download(corpus_name: str, dest_dir: Path | str, **options) -> list[Path]:
    """Fetch the files of `corpus_name` ("redial" or "inspired") into `dest_dir`."""
    if corpus_name not in MANIFESTS:
        raise ConfigError("", f"no downloadable corpus named '{corpus_name}'",
                          f"use one of: {', '.join(sorted(MANIFESTS))}")
    return download_files(MANIFESTS[corpus_name], dest_dir, **options)


def run_download(name: str, dest: Path | str, *, base_url: str | None = None, **options) -> list[Path]:
    """Entry point for ``crs data download NAME DEST``; `base_url` points at a mirror of the targets.

    Extra keyword options (``retries``, ``timeout``, ``stream``, ``allow_unverified``)
    pass through to :func:`download_file`.
    """
    if base_url is not None and urllib.parse.urlsplit(base_url).scheme not in MIRROR_SCHEMES:
        raise ConfigError("", f"'{base_url}' is not a mirror address", "give the mirror's base URL, e.g. "
                          "--mirror https://example.org/crs-data (http, https or file)", source="--mirror")
    return download(name, dest, base_url=base_url, **options)
