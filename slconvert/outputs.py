"""Where commands write their results, and how: one rule for every command's output folder and result files.

An output folder never overlaps a checkpoint the command reads (inputs are never written to), is a directory, and
is reachable without passing through a file. Result files (JSON, tables, plots) are written whole or not at all:
each goes to a temporary name beside its target and is renamed into place, so that a full disk or an interrupt
leaves the previous file, or none, never a truncated one, and the user gets one line saying what went wrong.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import SlconvertError

__all__ = ["follow_umask", "inside", "check_output_dir", "written_atomically", "write_text_atomically",
           "removed_on_failure"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give a written folder (or file) and everything under it the modes the user's umask allows: temporary
    folders and some writers create 0700 / 0600, which would keep the model from other users and services."""
    path = Path(path)
    mask = _umask()
    items = [path] + (list(path.rglob("*")) if path.is_dir() else [])
    for item in items:
        if item.is_symlink():
            continue
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def inside(child: Path, parent: Path) -> bool:
    """Whether `child` is `parent` or lies below it (links resolved)."""
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def check_output_dir(out: Path, inputs: dict[str, Path | None], flag: str = "--out", *,
                     parent_must_exist: bool = False, results: tuple[str, ...] = (), force: bool = False) -> None:
    """Refuse, in one line, an output folder that overlaps an input checkpoint (`inputs`: what the command calls
    it -> its path; None entries are skipped), that exists as a file, that lies below a file, (with
    `parent_must_exist`) whose parent folder is missing, or (unless `force`) that already holds one of the files
    `results` names: an earlier run's results, which this run would replace. Nothing is created here."""
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
    held = [name for name in results if (out / name).exists()] if not force and out.is_dir() else []
    if held:
        raise SlconvertError(f"{flag} {out} already holds an earlier run's results ({', '.join(held)}); choose a new "
                             "folder, or pass --force to replace them")
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


@contextlib.contextmanager
def removed_on_failure(out: Path, *, finished: Callable[[], Iterable[Path]] | None = None,
                       then: str = "") -> Iterator[Path]:
    """Create the output folder `out` for one run's result files; if the run fails or is interrupted, remove what
    it added (its files, and the folders it created: `out` and its missing parents), so that a failure leaves no
    half-done file. What was in `out` before is never removed (a file the run rewrote keeps its new, whole content).

    finished: the results the run has finished so far, files or folders of `out` (an evaluation's finished modes, a
    benchmark's JSON rewritten after every length and marked incomplete until the end, a training run's checkpoints
    with its metrics). Those stay, with one line naming them (and `then`, what to do next): minutes of
    measurements are not thrown away because a later step failed."""
    out = Path(out)
    created = [folder for folder in (out, *out.absolute().parents) if not folder.exists()]
    before = set() if created else {entry.name for entry in out.iterdir()}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SlconvertError(f"cannot create {out} ({err.strerror or err}); choose a writable location") from None
    try:
        yield out
    except BaseException:
        kept = sorted({Path(p).name for p in (finished() if finished else ())
                       if Path(p).parent.absolute() == out.absolute() and Path(p).exists()} - before)
        for entry in list(out.iterdir()) if out.is_dir() else []:
            if entry.name not in before and entry.name not in kept:
                with contextlib.suppress(OSError):  # the run's own error is the one to show
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
        if kept:
            print(f"note: the results finished before the failure are kept in {out}: {', '.join(kept)}"
                  + (f"; {then}" if then else ""), file=sys.stderr)
            raise
        for folder in created:  # deepest first, up to the first that someone else's files keep
            try:
                folder.rmdir()
            except OSError:
                break
        raise
