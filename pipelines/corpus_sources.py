"""Corpus sources: obtaining a source's file (a local path, or a file inside a Debian package fetched
with ``apt-get download``) and checking its sha256 against the manifest."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from evo2lite.errors import Evo2LiteError, InputError

from .corpus_manifest import ChecksumError, Source

__all__ = ["sha256_file", "default_cache_dir", "obtain_source", "verify_checksum"]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVO2LITE_CACHE", Path.home() / ".cache" / "evo2lite")) / "debian"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise Evo2LiteError(
            f"`{cmd[0]}` not found: Debian sources need apt-get and dpkg-deb (Debian/Ubuntu); elsewhere "
            "obtain the file yourself and point the source's `path:` at it"
        ) from exc


def _find_deb(cache: Path, package: str, version: str) -> Path | None:
    for deb in sorted(glob.glob(str(cache / f"{package}_*.deb"))):
        out = _run(["dpkg-deb", "-f", deb, "Version"], cache)
        if out.returncode == 0 and out.stdout.strip() == version:
            return Path(deb)
    return None


def obtain_source(source: Source, manifest_root: Path, cache_dir: Path | None = None) -> Path:
    """The local path of a source's file: a ``path:`` (relative to the manifest), or a file inside a
    Debian package fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (no install)."""
    if source.path:
        p = Path(os.path.expanduser(source.path))
        p = p if p.is_absolute() else manifest_root / p
        if not p.is_file():
            raise InputError(f"source {source.name!r}: file {p} not found (paths are relative to the manifest)")
        return p
    deb = source.debian
    package, version, inner = deb["package"], str(deb["version"]), str(deb["file"]).lstrip("/")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "extract" / f"{package}_{version.replace(':', '%3a')}"
    if not (target / ".complete").is_file():
        debfile = _find_deb(cache, package, version)
        if debfile is None:
            out = _run(["apt-get", "download", f"{package}={version}"], cache)
            if out.returncode != 0:
                tail = " ".join(out.stderr.strip().splitlines()[-2:])
                raise Evo2LiteError(
                    f"source {source.name!r}: `apt-get download {package}={version}` failed ({tail}); run "
                    "`apt-get update` first; if that version left the archive, update version and sha256 "
                    "in the manifest"
                )
            debfile = _find_deb(cache, package, version)
            if debfile is None:
                raise Evo2LiteError(
                    f"source {source.name!r}: apt-get reported success but no {package} {version} .deb is in {cache}")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        out = _run(["dpkg-deb", "-x", str(debfile), str(target)], cache)
        if out.returncode != 0:
            raise Evo2LiteError(f"source {source.name!r}: `dpkg-deb -x {debfile}` failed: {out.stderr.strip()}")
        (target / ".complete").write_text(f"{debfile.name}\n")
    p = target / inner
    if not p.is_file():
        raise InputError(f"source {source.name!r}: {inner} is not in Debian package {package} {version}; check `file:`")
    return p


def verify_checksum(source: Source, path: Path, manifest_path: Path | str = "the manifest") -> str:
    """Check the file's sha256 against the manifest; returns the digest. Raises ChecksumError."""
    actual = sha256_file(path)
    if source.sha256 is None:
        raise ChecksumError(
            f"source {source.name!r} has no sha256 in {manifest_path}; "
            f"if {path} is the file you mean, add `sha256: {actual}`"
        )
    if actual != source.sha256:
        raise ChecksumError(
            f"source {source.name!r}: sha256 of {path} is {actual}, but {manifest_path} says {source.sha256}; "
            "the file changed or is corrupt: obtain it again, or update sha256 if the change is intended"
        )
    return actual
