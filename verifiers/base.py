"""The verifier interface, the one registry of verifiers by name (with how a batch runs and each one's optional
abilities), and in-process batch scoring. Verdicts live in verifiers/verdict.py."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol

from restem.schemas.errors import RestemError
from restem.verifiers.verdict import Verdict, error_verdict


class Verifier(Protocol):
    """A verifier has a name and version (recorded in every score row) and is called per sample.

    Optional abilities are declared in the registry below (`VerifierEntry.abilities`), never found by
    looking for an attribute: asking a verifier for an ability it has not declared is an error that
    names the params key, so a setting such as `filter.require_consistent` can never be silently ignored."""

    name: str
    version: str

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> Verdict: ...


Consistency = Callable[[str, Mapping[str, Any]], bool]


class ConsistencyChecker(Verifier, Protocol):
    """A verifier with the ability CONSISTENCY: a check that needs no label."""

    def consistent(self, completion: str, problem: Mapping[str, Any]) -> bool: ...


# The optional abilities a verifier can declare, and what each means.
CONSISTENCY = "consistency"
STEPS = "steps"
ABILITIES = {
    CONSISTENCY: "a label-free consistency check (its method `consistent(completion, problem)`, used by the "
                 "majority and agreement filters)",
    STEPS: "a step check (`steps_valid` in its verdicts)",
}


# How a batch of samples is graded (verifiers/batch.py): in this process (pure, fast checks), in a pool
# of worker processes with a hard timeout per sample (math), or in sandboxes (code that must be run).
IN_PROCESS = "in_process"
POOL = "pool"
SANDBOX = "sandbox"
RUNS = (IN_PROCESS, POOL, SANDBOX)


@dataclass(frozen=True)
class VerifierEntry:
    """One registered verifier: where its class lives, how a batch is run, and its optional abilities.
    A SANDBOX class is built with a `code_exec.Limits` and grades through `score_batch`."""

    module: str
    cls: str
    runs: str
    abilities: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = set(self.abilities) - set(ABILITIES)
        if unknown:
            raise ValueError(f"{self.module}.{self.cls}: unknown abilities {sorted(unknown)}; known: {sorted(ABILITIES)}")
        if self.runs not in RUNS:
            raise ValueError(f"{self.module}.{self.cls}: runs {self.runs!r} is not one of {RUNS}")

    def load(self) -> type:
        """The verifier class (its module is imported now, not when the registry is read)."""
        import importlib

        return getattr(importlib.import_module(self.module), self.cls)


# The one registry of verifiers: params (`score.verifier`), scoring, the filter's abilities and
# `restem verify` all read it. Modules are imported only when their verifier is used, so scoring the
# arithmetic task does not load math-verify or the sandbox.
_VERIFIERS: dict[str, VerifierEntry] = {
    "arithmetic": VerifierEntry("restem.verifiers.arithmetic", "AdditionVerifier", IN_PROCESS, frozenset({CONSISTENCY, STEPS})),
    "reversed_addition": VerifierEntry("restem.verifiers.reversed_addition", "ReversedAdditionVerifier", IN_PROCESS,
                                       frozenset({CONSISTENCY, STEPS})),
    "exact": VerifierEntry("restem.verifiers.exact", "ExactAnswerVerifier", IN_PROCESS),
    "math": VerifierEntry("restem.verifiers.math_answer", "MathVerifier", POOL, frozenset({STEPS})),
    "gsm8k": VerifierEntry("restem.verifiers.math_answer", "GSM8KVerifier", POOL, frozenset({STEPS})),
    "humaneval": VerifierEntry("restem.verifiers.code_exec", "HumanEvalVerifier", SANDBOX),
    "apps": VerifierEntry("restem.verifiers.code_exec", "AppsVerifier", SANDBOX),
}


def _registry() -> dict[str, Callable[..., Verifier]]:
    """name -> a factory that imports the verifier's module and builds the verifier (with its options)."""
    return {name: functools.partial(_build, entry) for name, entry in _VERIFIERS.items()}


def _build(entry: VerifierEntry, **options: Any) -> Verifier:
    return entry.load()(**options)


def verifier_names() -> list[str]:
    return sorted(_VERIFIERS)


def unknown_verifier(name: str) -> str:
    """The message for a verifier name the registry does not have."""
    return f"unknown verifier {name!r}; choose one of {verifier_names()}"


def get_verifier(name: str, **options: Any) -> Verifier:
    """The verifier called `name`, built with `options` (e.g. `extraction="strict"` for math and gsm8k);
    an unknown name is an error that lists the known ones."""
    table = _registry()
    if name not in table:
        raise RestemError(f"unknown verifier {name!r}; choose one of {sorted(table)} (params.yaml: score.verifier)")
    return table[name](**options)


def has_ability(name: str, ability: str) -> bool:
    """Whether verifier `name` declares `ability` (CONSISTENCY or STEPS)."""
    if ability not in ABILITIES:
        raise ValueError(f"unknown ability {ability!r}; known: {sorted(ABILITIES)}")
    get_verifier_entry(name)
    return ability in _VERIFIERS[name].abilities


def require_ability(name: str, ability: str, key: str) -> None:
    """Raise a RestemError naming params key `key` unless verifier `name` declares `ability`."""
    if not has_ability(name, ability):
        able = sorted(n for n, e in _VERIFIERS.items() if ability in e.abilities)
        raise RestemError(f"{key}: true needs {ABILITIES[ability]}, and verifier {name!r} (score.verifier) has "
                          f"none; set {key}: false in the params file, or use a verifier that has one: {able}")


def consistency_check(name: str, key: str = "filter.require_consistent") -> Consistency:
    """The label-free consistency check of verifier `name`; an error naming `key` when it has none."""
    require_ability(name, CONSISTENCY, key)
    verifier = get_verifier(name)
    return verifier.consistent  # type: ignore[attr-defined]  # declared: a missing method is a loud AttributeError


def get_verifier_entry(name: str) -> VerifierEntry:
    """The registry entry of verifier `name`; an unknown name is an error that lists the known ones."""
    if name not in _VERIFIERS:
        raise RestemError(f"{unknown_verifier(name)} (params.yaml: score.verifier)")
    return _VERIFIERS[name]


def score_all(verifier: Verifier, items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Verdict]:
    """Score (completion, problem) pairs in order; an exception becomes an `error` verdict."""
    out = []
    for completion, problem in items:
        try:
            out.append(verifier(completion, problem))
        except Exception as exc:  # noqa: BLE001 - every failure must be visible as `error`
            out.append(error_verdict(exc))
    return out
