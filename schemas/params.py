"""The params file (`params.yaml`), one Pydantic model per section, `extra="forbid"`.

A typo such as `tempreture` or a wrong type fails loudly with the dotted key and the fix.
What changes outputs lives in the stage sections (tracked by DVC); operational knobs that do not
(batch size, threads) live in `runtime`, which no stage lists as a DVC param.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.errors import RestemError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DigitRange(Section):
    low: int = Field(ge=1, le=30, description="fewest digits per operand")
    high: int = Field(ge=1, le=30, description="most digits per operand")

    @model_validator(mode="after")
    def _ordered(self) -> "DigitRange":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


class ArithmeticTask(Section):
    """The embedded synthetic task: multi-digit addition with a carry scratchpad."""

    demo_digits: DigitRange = Field(description="digit range of the human demonstrations")
    demo_count: int = Field(ge=1, description="demonstrations drawn from demo_digits")
    extra_demo_digits: int = Field(default=0, ge=0, le=30, description="a few harder demos (0: none)")
    extra_demo_count: int = Field(default=0, ge=0, description="how many of those")
    train_digits: DigitRange = Field(description="digit range of the Grow pool")
    train_count: int = Field(ge=1, description="problems in the Grow pool")
    test_sets: dict[str, int] = Field(description="test set name -> digit count")
    test_count: int = Field(ge=1, description="problems per test set")


class ProblemFiles(Section):
    """A user's own problems: JSONL or Parquet files with at least prompt and reference columns."""

    train: str = Field(description="file of the Grow pool")
    test: str = Field(description="file of held-out problems")
    demos: Optional[str] = Field(default=None, description="file of demonstrations (prompt, reference, solution)")
    prompt_field: str = Field(default="prompt", description="column holding the prompt")
    reference_field: str = Field(default="reference", description="column holding the gold final answer")
    solution_field: str = Field(default="solution", description="column holding a gold completion (demos)")
    difficulty_field: Optional[str] = Field(default=None, description="optional integer difficulty column")
    subset_field: Optional[str] = Field(default=None, description="optional column naming test subsets")


class ProblemsParams(Section):
    source: Literal["arithmetic", "files"] = Field(description="generate the embedded task or read files")
    seed: int = Field(description="seed of the generator")
    arithmetic: Optional[ArithmeticTask] = None
    files: Optional[ProblemFiles] = None

    @model_validator(mode="after")
    def _source_present(self) -> "ProblemsParams":
        if getattr(self, self.source) is None:
            raise ValueError(f"source is {self.source!r} but the `{self.source}` section is missing")
        return self


class Architecture(Section):
    hidden_size: int = Field(ge=8)
    intermediate_size: int = Field(ge=8)
    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    max_positions: int = Field(ge=16, description="longest prompt + completion in tokens")

    @model_validator(mode="after")
    def _heads_divide(self) -> "Architecture":
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads})")
        return self


class TrainParams(Section):
    """Supervised fine-tuning with loss on the completion tokens only."""

    epochs: float = Field(gt=0, description="passes over the training rows")
    lr: float = Field(gt=0, description="peak learning rate (AdamW)")
    batch_size: int = Field(ge=1, description="rows per optimizer step (changes results, so tracked)")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = 0


class BaseParams(Section):
    checkpoint: Optional[str] = Field(
        default=None, description="a local Hugging Face checkpoint to start from; null: train the tiny model"
    )
    model: Architecture
    train: TrainParams


class GrowParams(Section):
    engine: Literal["transformers"] = Field(description="sampling engine")
    samples_per_problem: int = Field(ge=1, description="K completions per training problem")
    temperature: float = Field(gt=0, description="sampling temperature")
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, description="0: no top-k cut")
    max_new_tokens: int = Field(ge=1)
    seed: int = 0


class ScoreParams(Section):
    verifier: Literal["arithmetic", "exact", "math", "gsm8k", "humaneval", "apps"] = Field(
        description="verifier name")
    timeout_s: float = Field(default=10.0, gt=0, description="hard time limit per sample (per program for code)")


class FilterParams(Section):
    mode: Literal["correct"] = Field(description="keep reward = 1 (ReST-EM)")
    max_per_problem: int = Field(ge=1, description="cap on kept samples per problem")
    dedup: bool = Field(description="drop exact duplicate completions of a problem")
    require_valid_steps: bool = Field(default=False, description="also drop right answers with wrong steps")


class EvaluateParams(Section):
    samples: int = Field(ge=1, description="k: samples per test problem for pass@k and maj@k")
    temperature: float = Field(gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(ge=1)
    seed: int = 0


class IterationEntry(Section):
    prev: int = Field(ge=0, description="iteration whose model samples (Grow)")
    init: int = Field(ge=0, description="iteration whose model Improve starts from (0: base, ReST-EM)")


class LoopParams(Section):
    iterations: dict[str, IterationEntry] = Field(description="quoted iteration number -> entry")

    @model_validator(mode="after")
    def _chain(self) -> "LoopParams":
        keys = set()
        for key, entry in self.iterations.items():
            if not key.isdigit() or int(key) < 1:
                raise ValueError(f"iteration key {key!r} must be a quoted positive integer like '1'")
            keys.add(int(key))
        for key, entry in self.iterations.items():
            i = int(key)
            for name in ("prev", "init"):
                j = getattr(entry, name)
                if j >= i:
                    raise ValueError(f"iterations.'{key}'.{name} = {j} must be an earlier iteration than {i}")
                if j != 0 and j not in keys:
                    raise ValueError(f"iterations.'{key}'.{name} = {j} names no iteration in the loop")
        return self


class RuntimeParams(Section):
    """Operational knobs: they change speed, not results, and no stage lists them as DVC params."""

    batch_size: int = Field(default=256, ge=1, description="sequences per generate call")
    threads: int = Field(default=0, ge=0, description="torch threads; 0: all cores")
    workers: int = Field(default=0, ge=0, description="grading processes or sandboxes; 0: one per core")
    grow_shard_problems: int = Field(default=256, ge=1, description="problems per resumable Grow shard")


class Params(Section):
    problems: ProblemsParams
    base: BaseParams
    grow: GrowParams
    score: ScoreParams
    filter: FilterParams
    improve: TrainParams
    evaluate: EvaluateParams
    loop: LoopParams
    runtime: RuntimeParams = RuntimeParams()


def _describe(error: dict) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown key; check its spelling (see the comments in params.yaml)"
    if error["type"] == "missing":
        return f"{loc}: required key is missing"
    return f"{loc}: {error['msg']} (got {error.get('input')!r})"


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the params file; every problem is listed with its dotted key."""
    path = Path(path)
    if not path.exists():
        raise RestemError(f"{path}: params file not found (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RestemError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RestemError(f"{path}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise RestemError(f"{path}: invalid params:\n  {lines}") from None
