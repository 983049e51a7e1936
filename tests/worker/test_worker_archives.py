"""Safe extraction: every attack is refused and nothing lands outside the destination."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from worker.archives import dataset_root, extract_archive, safe_member_path
from worker.errors import ArchiveError


def _zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            if isinstance(m, tuple):
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
            else:
                tf.addfile(m)
    return path


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def _outside_untouched(tmp_path: Path) -> None:
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "evil.txt").exists()


@pytest.fixture
def dest(tmp_path):
    return tmp_path / "box" / "dest"


def test_plain_zip_and_tar_extract(tmp_path, dest):
    z = _zip(tmp_path / "a.zip", {"data/cat/1.png": b"x" * 10, "data/dog/2.png": b"y" * 5})
    stats = extract_archive(z, dest)
    assert (dest / "data/cat/1.png").read_bytes() == b"x" * 10
    assert stats.files == 2 and stats.bytes == 15
    assert dataset_root(dest) == dest / "data"
    t = _tar(tmp_path / "a.tar.gz", [("cat/1.png", b"abc"), ("dog/2.png", b"de")])
    extract_archive(t, tmp_path / "t")
    assert (tmp_path / "t/dog/2.png").read_bytes() == b"de"


@pytest.mark.parametrize("name", ["/evil.txt", "../evil.txt", "a/../../evil.txt", "..\\evil.txt",
                                  "C:\\evil.txt", "a/b/../../../evil.txt"])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_absolute_and_dotdot_paths_refused(tmp_path, dest, name, kind):
    if kind == "zip":
        archive = _zip(tmp_path / "bad.zip", {"ok/1.png": b"1", name: b"pwned"})
    else:
        archive = _tar(tmp_path / "bad.tar.gz", [("ok/1.png", b"1"), (name, b"pwned")])
    with pytest.raises(ArchiveError, match="absolute|'\\.\\.'"):
        extract_archive(archive, dest)
    _outside_untouched(tmp_path)
    _outside_untouched(tmp_path / "box")
    assert not dest.exists()  # a refused archive leaves nothing behind


@pytest.mark.parametrize("target", ["/etc/passwd", "../../evil.txt", "../../../../../../etc/passwd"])
def test_tar_symlink_out_refused(tmp_path, dest, target):
    archive = _tar(tmp_path / "ln.tar.gz", [("cls/1.png", b"1"), _link("cls/2.png", target)])
    with pytest.raises(ArchiveError, match="link"):
        extract_archive(archive, dest)
    assert not dest.exists()


def test_tar_hardlink_out_refused(tmp_path, dest):
    archive = _tar(tmp_path / "hl.tar.gz", [("cls/1.png", b"1"), _link("cls/2.png", "../evil.txt", hard=True)])
    with pytest.raises(ArchiveError, match="link"):
        extract_archive(archive, dest)


def test_symlink_then_write_through_it_is_impossible(tmp_path, dest):
    """The classic: a link to a directory outside, then a file 'through' it."""
    archive = _tar(tmp_path / "thru.tar.gz", [_link("cls", ".."), ("cls/evil.txt", b"pwned")])
    with pytest.raises(ArchiveError):
        extract_archive(archive, dest)
    _outside_untouched(tmp_path / "box")


def test_zip_symlink_out_refused(tmp_path, dest):
    archive = _zip(tmp_path / "ln.zip", {"cls/1.png": b"1"}, symlinks={"cls/2.png": "../../../evil.txt"})
    with pytest.raises(ArchiveError, match="link"):
        extract_archive(archive, dest)


def test_links_inside_become_copies(tmp_path, dest):
    archive = _tar(tmp_path / "in.tar.gz", [("cls/1.png", b"img"), _link("cls/2.png", "1.png"),
                                            _link("other/3.png", "cls/1.png", hard=True)])
    extract_archive(archive, dest)
    for rel in ("cls/2.png", "other/3.png"):
        path = dest / rel
        assert not path.is_symlink() and path.read_bytes() == b"img"
    z = _zip(tmp_path / "in.zip", {"cls/1.png": b"img"}, symlinks={"cls/2.png": "1.png"})
    extract_archive(z, tmp_path / "z")
    assert not (tmp_path / "z/cls/2.png").is_symlink() and (tmp_path / "z/cls/2.png").read_bytes() == b"img"


def test_special_files_refused(tmp_path, dest):
    fifo = tarfile.TarInfo("cls/fifo")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(ArchiveError, match="special"):
        extract_archive(_tar(tmp_path / "f.tar.gz", [fifo]), dest)
    dev = tarfile.TarInfo("cls/dev")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(ArchiveError, match="special"):
        extract_archive(_tar(tmp_path / "d.tar.gz", [dev]), tmp_path / "d")


def test_total_size_cap(tmp_path, dest):
    # Highly compressible: a small archive that expands past the cap (a bomb in miniature).
    archive = _zip(tmp_path / "bomb.zip", {f"cls/{i}.png": b"\0" * 4000 for i in range(5)})
    assert archive.stat().st_size < 2000
    with pytest.raises(ArchiveError, match="bytes"):
        extract_archive(archive, dest, max_bytes=10_000)
    assert not dest.exists()
    extract_archive(archive, tmp_path / "ok", max_bytes=20_000)


def test_size_cap_counts_written_bytes_not_headers(tmp_path, dest):
    """A tar header that under-states a member's size cannot sneak past: we count what we write."""
    archive = _tar(tmp_path / "t.tar.gz", [("cls/a.png", b"a" * 6000), ("cls/b.png", b"b" * 6000)])
    with pytest.raises(ArchiveError, match="bytes"):
        extract_archive(archive, dest, max_bytes=10_000)


def test_file_count_cap(tmp_path, dest):
    archive = _tar(tmp_path / "many.tar.gz", [(f"cls/{i}.png", b"x") for i in range(30)])
    with pytest.raises(ArchiveError, match="files"):
        extract_archive(archive, dest, max_files=20)
    extract_archive(archive, tmp_path / "ok", max_files=30)


def test_not_an_archive_and_missing(tmp_path, dest):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not an archive")
    with pytest.raises(ArchiveError, match="neither"):
        extract_archive(junk, dest)
    with pytest.raises(FileNotFoundError):
        extract_archive(tmp_path / "missing.zip", dest)


def test_safe_member_path_normalises():
    assert str(safe_member_path("./a//b/./c.png")) == "a/b/c.png"
    for bad in ("/x", "\\\\server\\share\\x", "D:/x", "a/../../x"):
        with pytest.raises(ArchiveError):
            safe_member_path(bad)
