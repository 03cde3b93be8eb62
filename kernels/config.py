"""The six numbers that define one Superlinear attention layer, validated once.

Every backend, the model surgery and the CLI take a `SuperlinearConfig`, so a bad value is caught
here with a message that names the field and the allowed range, not deep inside a kernel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from .errors import SuperlinearConfigError

__all__ = ["SuperlinearConfig", "SEARCH_KEYS"]

# What the router compares q_search with at each candidate anchor (docs/semantics.md, "Search key"):
# "anchor": the anchor token's key (the paper's rule); "span_mean": the mean key of the span the anchor opens.
SEARCH_KEYS = ("anchor", "span_mean")
# Largest window (keys) and number of spans per query a config may ask for: past them a setting is a typo, not a
# sparsity (a window past 2^31 - 1 keys is longer than any context; a million spans per query fills memory).
MAX_KEYS = 2**31 - 1
MAX_SPANS = 4096


@dataclass(frozen=True)
class SuperlinearConfig:
    """Parameters of one Superlinear layer (defaults: the paper's released setting).

    sw_index: sets the local window; the window holds ``floor((sw_index + 1) ** (1 / search_power)) - 1``
        tokens.
    num_spans: spans selected per query (top-k over the router scores).
    search_power: anchors per query grow like ``t ** search_power``.
    span_power: span length grows like ``t ** span_power``.
    backward_factor: a span reaches ``ceil(backward_factor * t ** span_power)`` tokens before its anchor.
    forward_factor: a span reaches ``ceil(forward_factor * t ** span_power)`` tokens after its anchor.
    search_key: "anchor" scores a candidate by ``q_search . k[anchor]`` (the paper's rule); "span_mean" by
        ``q_search . mean(k[span])`` over the key range that candidate's span would cover, which lets a
        converted model's router see what a span holds without retraining its sequence mixers.
    """

    sw_index: int = 65
    num_spans: int = 3
    search_power: float = 0.55
    span_power: float = 0.55
    backward_factor: float = 3.0
    forward_factor: float = 1.0
    search_key: str = "anchor"

    def __post_init__(self) -> None:
        def bad(name: str, value: object, rule: str) -> SuperlinearConfigError:
            return SuperlinearConfigError(f"{name}={value!r} is out of range: {rule}")

        for name in ("sw_index", "num_spans"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    object.__setattr__(self, name, int(value))
                else:
                    raise bad(name, value, "it must be an integer")
        for name in ("search_power", "span_power", "backward_factor", "forward_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, value, "it must be a finite number")
            object.__setattr__(self, name, float(value))
        if self.sw_index < 0:
            raise bad("sw_index", self.sw_index, "use an integer >= 0")
        if not 1 <= self.num_spans <= MAX_SPANS:
            raise bad("num_spans", self.num_spans, f"use an integer from 1 to {MAX_SPANS} (spans per query)")
        for name in ("search_power", "span_power"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise bad(name, value, "use a number strictly between 0 and 1")
        for name in ("backward_factor", "forward_factor"):
            if getattr(self, name) < 0.0:
                raise bad(name, getattr(self, name), "use a number >= 0")
        # W >= sw_index, so no power is taken past MAX_KEYS. A window e times past it is refused from logarithms,
        # before it is computed (a tiny search_power would overflow float64, or, where 1/search_power is an integer,
        # build an exact integer power of any size); the window is computed only below that.
        if (self.sw_index >= MAX_KEYS or math.log(self.sw_index + 1) / self.search_power > math.log(MAX_KEYS) + 1
                or self.window > MAX_KEYS):
            raise bad("sw_index", self.sw_index, f"with search_power={self.search_power:g} its window is longer than "
                      f"{MAX_KEYS} keys (2^31 - 1), more than any context; use a smaller sw_index or a larger "
                      "search_power")
        if self.search_key not in SEARCH_KEYS:
            raise bad("search_key", self.search_key, f"use one of {', '.join(SEARCH_KEYS)}")

    @classmethod
    def released(cls) -> SuperlinearConfig:
        """The paper's released setting (sw 65, k 3, p = rho = 0.55, spans 3/1)."""
        return cls()

    @classmethod
    def balanced(cls) -> SuperlinearConfig:
        """The benchmark's balanced setting (sw 31, k 3, p = rho = 0.5, spans 2/0)."""
        return cls(sw_index=31, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=0.0)

    @classmethod
    def from_dict(cls, data: dict) -> SuperlinearConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SuperlinearConfigError(
                f"unknown Superlinear parameter(s) {unknown}; valid ones are {sorted(known)}"
            )
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def window(self) -> int:
        """W: the number of most recent tokens every query attends to."""
        from .geometry import window_length

        return window_length(self)
