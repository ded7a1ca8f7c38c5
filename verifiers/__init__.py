"""Verifiers: pure functions of (completion, problem) that return a `Verdict`.

`get_verifier(name)` returns the verifier a params file names; `score_all` runs one over many
samples and turns any exception into the verdict `error` (never a silent `incorrect`).
"""

from restem.verifiers.base import Verdict, Verifier, get_verifier, score_all, verifier_names

__all__ = ["Verdict", "Verifier", "get_verifier", "score_all", "verifier_names"]
