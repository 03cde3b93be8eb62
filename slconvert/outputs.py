"""Where commands write their results, and how: one rule for every command's output folder and result files.

An output folder never overlaps a checkpoint the command reads (inputs are never written to), is a directory, and
is reachable without passing through a file. Result files (JSON, tables, plots) are written whole or not at all:
each goes to a temporary name beside its target and is renamed into place, so that a full disk or an interrupt
leaves the previous file, or none, never a truncated one, and the user gets one line saying what went wrong.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .checkpoint import follow_umask
from .errors import SlconvertError

__all__ = ["inside", "check_output_dir", "written_atomically", "write_text_atomically"]


def inside(child: Path, parent: Path) -> bool:
    """Whether `child` is `parent` or lies below it (links resolved)."""
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def check_output_dir(out: Path, inputs: dict[str, Path | None], flag: str = "--out", *,
                     parent_must_exist: bool = False) -> None:
    """Refuse, in one line, an output folder that overlaps an input checkpoint (`inputs`: what the command calls
    it -> its path; None entries are skipped), that exists as a file, that lies below a file, or (with
    `parent_must_exist`) whose parent folder is missing. Nothing is created here."""
    out = Path(out)
    for name, path in inputs.items():
        if path is not None and inside(out, path):
            raise SlconvertError(f"{flag} {out} lies inside {name} {path}; an input is never written to: choose a "
                                 "folder outside it")
        if path is not None and inside(path, out):
            raise SlconvertError(f"{flag} {out} contains {name} {path}; an input is never written to: choose "
                                 "another folder")
    if out.exists() and not out.is_dir():
        raise SlconvertError(f"{flag} {out} exists and is not a directory; choose another path")
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SlconvertError(f"{flag} {out}: {ancestor} is a file, not a directory; choose another path")
    if parent_must_exist and not out.absolute().parent.is_dir():
        raise SlconvertError(f"{flag} {out}: its parent directory does not exist; create it first")


@contextlib.contextmanager
def written_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write the whole file to; it replaces `path` only if the block
    completes. An OSError (a full disk, a read-only folder) becomes one SlconvertError line."""
    path = Path(path)
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
        os.close(handle)
        tmp = Path(tmp_name)
    except OSError as err:
        raise SlconvertError(f"cannot write {path} ({err.strerror}); choose a writable location") from None
    try:
        yield tmp
        follow_umask(tmp)  # mkstemp makes 0600
        os.replace(tmp, path)
    except OSError as err:
        raise SlconvertError(f"cannot write {path} ({err.strerror or err}); free some space or choose another "
                             "location") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> Path:
    """`path.write_text(text)`, whole or not at all (`written_atomically`)."""
    with written_atomically(path) as tmp:
        tmp.write_text(text)
    return Path(path)
