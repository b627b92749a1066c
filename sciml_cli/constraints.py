"""Value constraints for constructor annotations, checked when a config is validated.

Write ``width: PositiveInt`` in a constructor and ``model.width=0`` is refused, naming the key,
before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Bound:
    low: float
    inclusive: bool

    def check(self, value: float) -> str | None:
        ok = value >= self.low if self.inclusive else value > self.low
        if ok:
            return None
        return f"must be {'>=' if self.inclusive else '>'} {self.low:g}, got {value!r}"


@dataclass(frozen=True)
class Upper:
    high: float

    def check(self, value: float) -> str | None:
        return None if value <= self.high else f"must be <= {self.high:g}, got {value!r}"


PositiveInt = Annotated[int, Bound(0, inclusive=False)]
NonNegativeInt = Annotated[int, Bound(0, inclusive=True)]
PositiveFloat = Annotated[float, Bound(0, inclusive=False)]
NonNegativeFloat = Annotated[float, Bound(0, inclusive=True)]
#: a share or a step towards a target: (0, 1]
Fraction = Annotated[float, Bound(0, inclusive=False), Upper(1)]
