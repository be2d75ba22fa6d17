"""Files written complete or not at all: a temporary file beside the target, flushed to
disk, then renamed over it. Nothing here imports torch or onnx.

A killed or interrupted writer leaves the target as it was (and at worst a hidden
``.<name>.<random>.partial`` beside it, which the next write of the same target removes);
a full disk fails the write, not the target. Renaming also breaks a hard link instead of
writing through it into a file the link shares. New files get the mode any new file
gets: 0o666 less the umask.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError

PARTIAL_SUFFIX = ".partial"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_destination(output, force: bool = False) -> Path:
    """Refuse, before any work, an ``output`` file that cannot be written: an existing
    file without ``force``, a folder, or a folder that cannot be created."""
    output = Path(output)
    if output.is_dir():
        raise OutputError(f"{output} is a folder; expected the path of the file to write")
    if output.exists() and not force:
        raise OutputError(f"{output} exists; pass --force (force=True) to overwrite it")
    make_folder(output.parent)
    return output


def make_folder(folder) -> Path:
    """Create ``folder`` (and its parents) or raise OutputError saying why not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot create the folder {folder}: a file is in the way") \
            from None
    except OSError as exc:
        raise OutputError(f"cannot create the folder {folder}: {_describe(exc)}") from None
    return folder


def check_writable(folder) -> Path:
    """Create ``folder`` if needed and prove a file can be created in it, before any
    work that would write there later."""
    folder = make_folder(folder)
    probe = folder / f".ssdonnx-probe.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {_describe(exc)}") from None
    probe.unlink(missing_ok=True)
    return folder


def remove_stale_partials(output: Path) -> list[Path]:
    """The temporary files an earlier, killed write of ``output`` left beside it."""
    removed = []
    for stale in output.parent.glob(f".{output.name}.*{PARTIAL_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_output(output, durable: bool = True) -> Iterator[Path]:
    """Yield a new temporary path beside ``output``; on leaving the block without error
    it is flushed to disk (``durable``; without it, a crash of the machine rather than
    of the process may lose it) and replaces ``output``; on any error or interrupt it is
    removed. The temporary file is created at once (so an unwritable folder fails before
    any work)."""
    output = Path(output)
    remove_stale_partials(output)
    tmp = output.parent / f".{output.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise OutputError(f"cannot write in {output.parent}: {_describe(exc)}") from None
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, output)
    except OSError as exc:
        if exc.filename is None or Path(exc.filename) not in (tmp, output):
            raise
        raise OutputError(f"cannot write {output}: {_describe(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        exc.filename = str(path)
        raise
    finally:
        os.close(fd)


def write_bytes(output, data: bytes, durable: bool = True) -> Path:
    """``data`` as the whole content of ``output``, atomically."""
    with atomic_output(output, durable) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            exc.filename = str(tmp)
            raise
    return Path(output)


def write_text(output, text: str, durable: bool = True) -> Path:
    return write_bytes(output, text.encode(), durable)
