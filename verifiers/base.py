"""The verifier interface, the table of verifiers by name, and batch scoring."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol

from schemas.errors import RestemError


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


class Verifier(Protocol):
    """A verifier has a name and version (recorded in every score row) and is called per sample."""

    name: str
    version: str

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> Verdict: ...


# name -> (module, class). Modules are imported only when their verifier is used, so scoring the
# arithmetic task does not load math-verify or the sandbox.
_VERIFIERS: dict[str, tuple[str, str]] = {
    "arithmetic": ("verifiers.arithmetic", "AdditionVerifier"),
    "reversed_addition": ("verifiers.reversed_addition", "ReversedAdditionVerifier"),
    "exact": ("verifiers.exact", "ExactAnswerVerifier"),
    "math": ("verifiers.math_answer", "MathVerifier"),
    "gsm8k": ("verifiers.math_answer", "GSM8KVerifier"),
    "humaneval": ("verifiers.code_exec", "HumanEvalVerifier"),
    "apps": ("verifiers.code_exec", "AppsVerifier"),
}
# Pure, fast verifiers that are cheaper to run in-process than to ship to a pool.
IN_PROCESS = frozenset({"arithmetic", "reversed_addition", "exact"})
CODE = frozenset({"humaneval", "apps"})


def _registry() -> dict[str, Callable[..., Verifier]]:
    import importlib

    def factory(module: str, cls: str) -> Callable[..., Verifier]:
        return lambda **options: getattr(importlib.import_module(module), cls)(**options)

    return {name: factory(*where) for name, where in _VERIFIERS.items()}


def verifier_names() -> list[str]:
    return sorted(_registry())


def get_verifier(name: str, **options: Any) -> Verifier:
    """The verifier called `name`, built with `options` (e.g. `extraction="strict"` for math and gsm8k);
    an unknown name is an error that lists the known ones."""
    table = _registry()
    if name not in table:
        raise RestemError(f"unknown verifier {name!r}; choose one of {sorted(table)} (params.yaml: score.verifier)")
    return table[name](**options)


def error_verdict(exc: BaseException) -> Verdict:
    return Verdict("error", 0.0, None, None, None, {"error": f"{type(exc).__name__}: {exc}"})


def score_all(verifier: Verifier, items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Verdict]:
    """Score (completion, problem) pairs in order; an exception becomes an `error` verdict."""
    out = []
    for completion, problem in items:
        try:
            out.append(verifier(completion, problem))
        except Exception as exc:  # noqa: BLE001 - every failure must be visible as `error`
            out.append(error_verdict(exc))
    return out
