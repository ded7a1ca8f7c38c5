"""A reference to a model of the loop and to the data that made it: an iteration (`1`; 0 is the base) or a
ReST step of an iteration (`1b`: iteration 1's samples filtered again with a higher threshold). Parsed and
formatted here only; `data/iter<ref>`, `models/iter<ref>` and `metrics/.../iter<ref>.json` are named by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

STEP_KEY = re.compile(r"^(\d+)([a-z]+)$")
PATTERN = r"(\d+)([a-z]*)"  # a ref in text: the iteration number, then the step letters (none for the iteration)
_REF = re.compile(rf"^{PATTERN}$")
_FOLDER = re.compile(rf"^iter{PATTERN}$")


@dataclass(frozen=True, order=True)
class Ref:
    """Iteration number and step letters ('' for the iteration itself); sorts in run order 0, 1, 1b, 1c, 2."""

    iteration: int
    step: str = ""

    @classmethod
    def parse(cls, value: Union["Ref", int, str]) -> "Ref":
        """`1`, '1' or '1b'; ValueError for anything else."""
        if isinstance(value, Ref):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{value!r} is neither an iteration number nor a step key like '1b'")
        m = _REF.match(str(value).strip())
        if not m:
            raise ValueError(f"{value!r} is neither an iteration number nor a step key like '1b'")
        return cls(int(m.group(1)), m.group(2))

    @classmethod
    def from_folder(cls, name: str) -> Optional["Ref"]:
        """The ref of a folder or file stem named `iter<ref>`; None for any other name."""
        m = _FOLDER.match(name)
        return cls(int(m.group(1)), m.group(2)) if m else None

    @property
    def is_step(self) -> bool:
        return bool(self.step)

    @property
    def folder(self) -> str:
        """`iter1`, `iter1b`: the name of its folder under data/ and models/."""
        return f"iter{self}"

    def legacy(self) -> Union[int, str]:
        """The int-or-str form the stages' functions take: 1, or '1b'."""
        return str(self) if self.step else self.iteration

    def __str__(self) -> str:
        return f"{self.iteration}{self.step}"


def ref_order(ref: Union[Ref, int, str]) -> tuple[int, str]:
    """Order of models in a run: 0, 1, 1b, 1c, 2, ... (anything that is not a ref sorts last)."""
    try:
        r = Ref.parse(ref)
    except ValueError:
        return 10**9, str(ref)
    return r.iteration, r.step
