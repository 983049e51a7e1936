"""Job files: uploads handed to a job and the artifacts it produces.

Layout under the root (shared by the API and the workers):
    <root>/jobs/<job_id>/uploads/<part><ext>    weights.safetensors, dataset.tar.gz, ...
    <root>/jobs/<job_id>/artifacts/<name>       model.onnx, weights.safetensors, report.json, ...
    <root>/incoming/<random>/                   an upload being received, before its job exists
Every path is built from validated names and checked to resolve inside the root, so a job id or
artifact name can never reach another file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO

from .paths import resolve_inside

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
class StorageError(ValueError):
    """A name that would leave the storage root, or is not a plain file name."""


# The artifacts a job writes, by suffix; anything else is bytes.
_BY_SUFFIX = {".json": "application/json", ".html": "text/html; charset=utf-8", ".png": "image/png",
              ".csv": "text/csv; charset=utf-8"}
CONTENT_TYPES = (*_BY_SUFFIX.values(), "application/octet-stream")


def content_type(name: str) -> str:
    return _BY_SUFFIX.get(Path(name).suffix.lower(), "application/octet-stream")


def _check_name(name: str, what: str) -> str:
    if not _SAFE_ID.match(name) or name in (".", "..") or name.startswith("."):
        raise StorageError(f"invalid {what} {name!r}")
    return name


class Storage(ABC):
    @abstractmethod
    def new_incoming(self) -> Path: ...
    @abstractmethod
    def adopt(self, job_id: str, incoming: Path) -> None: ...
    @abstractmethod
    def discard(self, incoming: Path) -> None: ...
    @abstractmethod
    def uploads(self, job_id: str) -> dict[str, Path]: ...
    @abstractmethod
    def artifacts_dir(self, job_id: str) -> Path: ...
    @abstractmethod
    def list_artifacts(self, job_id: str) -> list[dict]: ...
    @abstractmethod
    def open_artifact(self, job_id: str, name: str) -> tuple[BinaryIO, int]: ...
    @abstractmethod
    def delete_job(self, job_id: str) -> None: ...
    @abstractmethod
    def check(self) -> None: ...


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256

    def _inside(self, path: Path) -> Path:
        resolved = resolve_inside(path, [self.root])
        if resolved is None:
            raise StorageError(f"path escapes the storage root: {path}")
        return resolved

    def job_dir(self, job_id: str) -> Path:
        return self._inside(self.root / "jobs" / _check_name(job_id, "job id"))

    # ---- uploads --------------------------------------------------------------------------------

    def new_incoming(self) -> Path:
        path = self.root / "incoming" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def adopt(self, job_id: str, incoming: Path) -> None:
        """Move a received upload directory to the job (a rename: same filesystem)."""
        incoming = self._inside(incoming)
        dest = self.job_dir(job_id) / "uploads"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(incoming, dest)

    def discard(self, incoming: Path) -> None:
        shutil.rmtree(self._inside(incoming), ignore_errors=True)

    def uploads(self, job_id: str) -> dict[str, Path]:
        """Part name -> file, e.g. {"weights": .../weights.safetensors, "dataset": .../dataset.zip}."""
        d = self.job_dir(job_id) / "uploads"
        if not d.is_dir():
            return {}
        return {p.name.split(".", 1)[0]: p for p in sorted(d.iterdir()) if p.is_file()}

    # ---- artifacts ------------------------------------------------------------------------------

    def artifacts_dir(self, job_id: str) -> Path:
        d = self.job_dir(job_id) / "artifacts"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def artifact_path(self, job_id: str, name: str) -> Path:
        path = self._inside(self.job_dir(job_id) / "artifacts" / _check_name(name, "artifact name"))
        if not path.is_file():
            raise FileNotFoundError(name)
        return path

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            h = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            self._digests[key] = h.hexdigest()
        return self._digests[key]

    def list_artifacts(self, job_id: str) -> list[dict]:
        d = self.job_dir(job_id) / "artifacts"
        if not d.is_dir():
            return []
        out = []
        for p in sorted(d.iterdir()):
            # Skip anything a worker should not have left there (odd names, links leaving the root).
            if p.is_file() and _SAFE_ID.match(p.name) and resolve_inside(p, [self.root]) is not None:
                out.append({"name": p.name, "size": p.stat().st_size, "sha256": self._sha256(p),
                            "content_type": content_type(p.name)})
        return out

    def open_artifact(self, job_id: str, name: str) -> tuple[BinaryIO, int]:
        path = self.artifact_path(job_id, name)
        f = path.open("rb")
        return f, os.fstat(f.fileno()).st_size

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def check(self) -> None:
        """Readiness: the root accepts a write."""
        probe = self.root / f".ready-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
