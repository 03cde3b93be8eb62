"""Reading a file the user names (a recipe, a document to score): one rule for the ways it can fail to be text.

Every such file is read whole as UTF-8. A file that cannot be read, holds bytes that are not UTF-8 (a weights file,
an archive, another encoding) or holds NUL bytes is refused in one line that names the file and the fix; read
anyway, its bytes would be parsed or scored as garbage.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SlconvertError

__all__ = ["read_user_text"]


def read_user_text(path: Path, what: str, fix: str) -> str:
    """The text of `path`. `what`: how a message names the file ("recipe", "" for the path alone); `fix`: what the
    user should pass instead, ending each refusal."""
    name = f"{what} {path}".strip()
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise SlconvertError(f"{name} cannot be read ({err.strerror or err}); check its permissions") from None
    except UnicodeDecodeError as err:
        raise SlconvertError(f"{name} is not UTF-8 text (byte {err.start}); {fix}") from None
    if "\x00" in text:
        raise SlconvertError(f"{name} is not text (it holds NUL bytes); {fix}")
    return text
