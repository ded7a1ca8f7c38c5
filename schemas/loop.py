"""The `loop` section of the params file: which model samples and which one trains at each iteration, the
curriculum slice of the Grow pool an iteration draws, and the extra ReST steps (`1b`) with their thresholds.
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import Field, model_validator

from restem.schemas.refs import STEP_KEY, ref_order
from restem.schemas.section import Section

# A model of the loop: an iteration number (0 = the base) or a step key such as '1b' (see LoopParams).
ModelRef = Union[int, str]


class PoolSlice(Section):
    """Which part of the Grow pool an iteration samples (a curriculum): `size` problems drawn by difficulty."""

    size: int = Field(ge=1, description="problems drawn for this iteration")
    mix: dict[int, float] = Field(description="difficulty (e.g. digit count) -> share of the problems")

    @model_validator(mode="after")
    def _shares(self) -> "PoolSlice":
        if not self.mix or any(w <= 0 for w in self.mix.values()):
            raise ValueError("mix needs at least one difficulty with a positive share")
        if abs(sum(self.mix.values()) - 1.0) > 1e-6:
            raise ValueError(f"mix shares must add up to 1 (they add up to {sum(self.mix.values()):g})")
        return self


class IterationEntry(Section):
    prev: ModelRef = Field(description="model that samples (Grow): an earlier iteration, 0 (base) or a step key")
    init: ModelRef = Field(description="model Improve starts from (0: base, ReST-EM; prev: warm start)")
    pool: Optional[PoolSlice] = Field(default=None, description="curriculum slice of the pool; null: all of it")
    accumulate: bool = Field(default=False, description="train on this iteration's kept samples plus those "
                             "the prev model trained on (all kept so far); false: this iteration's only")
    threshold: Optional[float] = Field(default=None, description="threshold mode: this iteration's tau")


class StepEntry(Section):
    """An extra Improve step over an iteration's grown data (original ReST): a higher threshold, a warm start."""

    iteration: int = Field(ge=1, description="the iteration whose samples are filtered again")
    threshold: float = Field(description="tau of this step; must rise along an iteration's steps")
    init: ModelRef = Field(description="the model this step starts from (usually the previous step)")


class LoopParams(Section):
    iterations: dict[str, IterationEntry] = Field(description="quoted iteration number -> entry")
    steps: dict[str, StepEntry] = Field(default_factory=dict, description="step key like '1b' -> entry")

    def models(self) -> list[str]:
        """Every model of the loop in run order: '0', iterations and their steps."""
        return sorted(["0", *self.iterations, *self.steps], key=ref_order)

    def check_ref(self, ref: ModelRef, before: tuple[int, str], where: str) -> None:
        known = {"0", *self.iterations, *self.steps}
        if str(ref) not in known:
            raise ValueError(f"{where} = {ref!r} names no iteration or step of the loop (0 is the base)")
        if ref_order(ref) >= before:
            raise ValueError(f"{where} = {ref!r} must be an earlier iteration or step")

    @model_validator(mode="after")
    def _chain(self) -> "LoopParams":
        for key in self.iterations:
            if not key.isdigit() or int(key) < 1:
                raise ValueError(f"iteration key {key!r} must be a quoted positive integer like '1'")
        for key, step in self.steps.items():
            m = STEP_KEY.match(key)
            if not m:
                raise ValueError(f"step key {key!r} must be an iteration number and letters, like '1b'")
            if int(m.group(1)) != step.iteration:
                raise ValueError(f"steps.{key}.iteration is {step.iteration} but the key names iteration {m.group(1)}")
            if str(step.iteration) not in self.iterations:
                raise ValueError(f"steps.{key}.iteration = {step.iteration} names no iteration in the loop")
        for key, entry in self.iterations.items():
            for name in ("prev", "init"):
                self.check_ref(getattr(entry, name), ref_order(key), f"iterations.'{key}'.{name}")
        for key, step in self.steps.items():
            self.check_ref(step.init, ref_order(key), f"steps.{key}.init")
        return self

    def threshold_of(self, key: str, default: float) -> float:
        """The tau of an iteration or a step."""
        if key in self.steps:
            return self.steps[key].threshold
        entry = self.iterations.get(key)
        return entry.threshold if entry is not None and entry.threshold is not None else default

    def check_rising(self, default: float) -> None:
        """Along each iteration, its own tau and then its steps' taus (in key order) must strictly rise."""
        for key in sorted(self.iterations, key=int):
            chain = [(key, self.threshold_of(key, default))]
            chain += [(s, self.steps[s].threshold) for s in sorted(self.steps, key=ref_order)
                      if self.steps[s].iteration == int(key)]
            for (a, ta), (b, tb) in zip(chain, chain[1:]):
                if tb <= ta:
                    raise ValueError(f"thresholds must rise along iteration {key}'s steps: "
                                     f"{a!r} has {ta:g}, then {b!r} has {tb:g}; give each step a higher threshold")

