"""Safe extraction of uploaded dataset archives (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz).

Refused, with ArchiveError naming the member:
- absolute paths (`/x`, `C:\\x`, `\\\\server\\x`) and any `..` component (`\\` counts as a separator);
- links (symlinks and hardlinks) whose target leaves the destination; links that stay inside are
  materialised as copies of their (already extracted) target, so no link is ever created on disk,
  and a later member can never be written through one;
- devices, FIFOs and other special members;
- more than `max_files` members, or more than `max_bytes` uncompressed bytes in all. Bytes are
  counted while writing, so a member whose header under-states its size is stopped too.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from service.paths import is_inside

from .errors import ArchiveError

MAX_BYTES = 2 * 1024**3  # 2 GiB uncompressed
MAX_FILES = 200_000
_CHUNK = 1 << 20
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


@dataclass
class ExtractionStats:
    files: int = 0
    bytes: int = 0
    links_copied: int = 0


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path a member may be written to, or ArchiveError."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":") or raw.startswith("//"):
        raise ArchiveError(f"archive member {name!r} has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive member {name!r} has a '..' component")
    if any("\x00" in p for p in parts):
        raise ArchiveError(f"archive member {name!r} has a NUL byte in its name")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


class _Writer:
    def __init__(self, dest: Path, max_bytes: int, max_files: int):
        self.dest = dest
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.stats = ExtractionStats()

    def target(self, rel: PurePosixPath) -> Path:
        path = self.dest.joinpath(*rel.parts)
        # Belt and braces: nothing we create is a link, but the destination might hold one.
        if not is_inside(path.parent.resolve(), self.dest):
            raise ArchiveError(f"archive member {str(rel)!r} would be written outside the destination")
        return path

    def count_file(self, name: str) -> None:
        self.stats.files += 1
        if self.stats.files > self.max_files:
            raise ArchiveError(f"archive has more than {self.max_files} files (the cap); stopped at {name!r}")

    def add_bytes(self, n: int, name: str) -> None:
        self.stats.bytes += n
        if self.stats.bytes > self.max_bytes:
            raise ArchiveError(
                f"archive expands to more than {self.max_bytes} bytes (the cap); stopped at {name!r}"
            )

    def write(self, rel: PurePosixPath, source, name: str) -> None:
        self.count_file(name)
        path = self.target(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise ArchiveError(f"archive member {name!r} is a file where a directory was extracted")
        with open(path, "wb") as out:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                self.add_bytes(len(chunk), name)
                out.write(chunk)

    def mkdir(self, rel: PurePosixPath) -> None:
        if rel != PurePosixPath("."):
            self.target(rel).mkdir(parents=True, exist_ok=True)




def _link_target(link: PurePosixPath, target: str, name: str, hard: bool) -> PurePosixPath:
    """Where a link points, relative to the destination; ArchiveError when it leaves it."""
    raw = target.replace("\\", "/")
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":"):
        raise ArchiveError(f"archive member {name!r} links to an absolute path {target!r}")
    # Symlinks resolve against the link's directory; tar hardlinks name a member from the root.
    base = [] if hard else list(link.parent.parts)
    parts: list[str] = [p for p in base if p != "."]
    for part in raw.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ArchiveError(f"archive member {name!r} links outside the destination ({target!r})")
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        raise ArchiveError(f"archive member {name!r} links to the destination root")
    return PurePosixPath(*parts)


def _extract_zip(path: Path, writer: _Writer, links: list) -> None:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            rel = safe_member_path(info.filename)
            mode = info.external_attr >> 16  # unix mode when made on unix; 0 from other systems
            kind = stat.S_IFMT(mode)
            if info.is_dir():
                writer.mkdir(rel)
            elif kind == stat.S_IFLNK:
                target = zf.read(info).decode("utf-8", "replace")
                links.append((rel, _link_target(rel, target, info.filename, hard=False), info.filename))
            elif kind not in (0, stat.S_IFREG):
                raise ArchiveError(f"archive member {info.filename!r} is not a regular file or directory")
            else:
                with zf.open(info) as src:
                    writer.write(rel, src, info.filename)


def _extract_tar(path: Path, writer: _Writer, links: list) -> None:
    with tarfile.open(path, "r:*") as tf:
        for member in tf:  # streaming: members are read as they come
            rel = safe_member_path(member.name)
            if member.isdir():
                writer.mkdir(rel)
            elif member.issym() or member.islnk():
                links.append((rel, _link_target(rel, member.linkname, member.name, hard=member.islnk()),
                              member.name))
            elif member.isreg():
                src = tf.extractfile(member)
                writer.write(rel, src, member.name)
            else:
                raise ArchiveError(f"archive member {member.name!r} is a device, FIFO or other special file")


def _copy_links(writer: _Writer, links: list) -> None:
    """Materialise links that stay inside as copies (a link to a link is followed, up to a depth)."""
    pending = list(links)
    for _ in range(8):
        left = []
        for rel, target_rel, name in pending:
            source = writer.dest.joinpath(*target_rel.parts)
            if source.is_file():
                writer.count_file(name)
                writer.add_bytes(source.stat().st_size, name)
                dest = writer.target(rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
                writer.stats.links_copied += 1
            else:
                left.append((rel, target_rel, name))
        if len(left) == len(pending):
            break
        pending = left
    # Links to directories or to nothing are dropped: an image dataset needs neither.


def extract_archive(
    path: str | os.PathLike,
    dest: str | os.PathLike,
    max_bytes: int = MAX_BYTES,
    max_files: int = MAX_FILES,
) -> ExtractionStats:
    """Extract `path` into `dest` (created; must be empty or missing) under the rules above."""
    path, dest = Path(path), Path(dest)
    if not path.is_file():
        raise FileNotFoundError(f"archive not found: {path}")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ArchiveError(f"extraction directory {dest} is not empty")
    writer = _Writer(dest.resolve(), max_bytes, max_files)
    links: list = []
    try:
        if zipfile.is_zipfile(path):
            _extract_zip(path, writer, links)
        elif tarfile.is_tarfile(path):
            _extract_tar(path, writer, links)
        else:
            raise ArchiveError(f"{path.name} is neither a zip nor a tar archive")
        _copy_links(writer, links)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError) and not path.exists():
            raise
        shutil.rmtree(dest, ignore_errors=True)
        raise ArchiveError(f"cannot extract {path.name}: {err}") from None
    except ArchiveError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return writer.stats


def dataset_root(directory: str | os.PathLike) -> Path:
    """The folder holding the class folders (or train/ and val/): descends through a lone
    top-level folder that itself holds folders, ignoring macOS metadata and hidden entries."""
    root = Path(directory)
    for _ in range(8):
        entries = [e for e in root.iterdir() if not e.name.startswith(".") and e.name != "__MACOSX"]
        dirs = [e for e in entries if e.is_dir()]
        # A lone folder holding folders is a wrapper; a lone folder of files is a (single) class.
        if len(dirs) == 1 and len(entries) == 1 and any(e.is_dir() for e in dirs[0].iterdir()):
            root = dirs[0]
        else:
            break
    return root
