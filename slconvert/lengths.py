"""Token lengths as people write them: "32K" is 32768 and "1M" is 1 << 20, read from options and written in
tables and plots by the same rule."""

from __future__ import annotations

from .errors import SlconvertError

__all__ = ["parse_lengths", "short_length"]

_UNITS = {"K": 1 << 10, "M": 1 << 20}


def parse_lengths(text: str, option: str = "--lengths", example: str = "16K,32K,65536") -> list[int]:
    """Comma-separated lengths with K (1024) and M (1 << 20) suffixes, each once, in the order given; a bad one, or
    none at all, is refused in one line that names `option` and shows `example`."""
    out = []
    for part in text.split(","):
        typed = part.strip()
        number, mult = typed.upper(), 1
        if not number:
            continue
        if number[-1] in _UNITS:
            mult, number = _UNITS[number[-1]], number[:-1]
        try:
            value = int(number) * mult
        except ValueError:
            raise SlconvertError(f"{option}: {typed!r} is not a length; write e.g. {example}") from None
        if value < 1:
            raise SlconvertError(f"{option}: {value} must be positive; write e.g. {example}")
        out.append(value)
    if not out:
        raise SlconvertError(f"{option}: no length given; write e.g. {example}")
    return list(dict.fromkeys(out))  # a length given twice (16K,16384) is timed once


def short_length(length: int) -> str:
    """32768 -> "32K", 1048576 -> "1M", 100 -> "100"."""
    for unit in ("M", "K"):
        if length % _UNITS[unit] == 0:
            return f"{length // _UNITS[unit]}{unit}"
    return str(length)
