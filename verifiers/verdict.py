"""What a verifier says about one completion (`Verdict`), and the verdict an exception becomes (`error`, never a
silent `incorrect`). Every verifier module imports this, not the registry (verifiers/base.py), which imports the
verifier modules by name: so the registry and its verifiers never import each other."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Verdict:
    """What a verifier says about one completion."""

    verdict: str  # correct | incorrect | unverifiable | error
    reward: float
    correct: Optional[bool]
    extracted: Optional[str] = None
    steps_valid: Optional[bool] = None
    details: dict[str, Any] = field(default_factory=dict)

    def details_json(self) -> str:
        return json.dumps(self.details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def error_verdict(exc: BaseException) -> Verdict:
    return Verdict("error", 0.0, None, None, None, {"error": f"{type(exc).__name__}: {exc}"})
