"""The params file (`params.yaml`), one Pydantic model per section, `extra="forbid"`.

A typo such as `tempreture` or a wrong type fails loudly with the dotted key and the fix.
What changes outputs lives in the stage sections (tracked by DVC); operational knobs that do not
(batch size, threads) live in `runtime`, which no stage lists as a DVC param.

This module holds the stage sections, the whole file's model (`Params`) and its loading (`load_params`,
`describe_errors`); the `loop` section's models are in `restem.schemas.loop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from restem.schemas.errors import RestemError
from restem.schemas.loop import LoopParams
from restem.schemas.refs import ref_order  # noqa: F401  (imported from here by stages)
from restem.schemas.section import Section


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
    format: Literal["scratchpad", "reversed"] = Field(
        default="scratchpad", exclude_if=lambda v: v == "scratchpad",  # the default leaves dumps unchanged
        description="scratchpad: `a+b=` with a carry scratchpad (verifier arithmetic); "
        "reversed: digits least significant first with index-hint tags (verifier reversed_addition)")


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
    position: Literal["rope", "none"] = Field(
        default="rope", exclude_if=lambda v: v == "rope",  # the default leaves recorded params unchanged
        description="rope: Llama with rotary embeddings; none: no positional encoding (NoPE), "
        "a SmolLM3 config with rotary off in every layer")

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
    steps: Optional[int] = Field(default=None, ge=1, description="exact optimizer steps; null: from epochs")
    loss: Literal["bc", "reward_weighted"] = Field(
        default="bc", description="bc: behavioural cloning; reward_weighted: each row's loss times its reward")
    replay: float = Field(default=0.0, ge=0, lt=1, description="fraction of each batch drawn from the demos")


class BaseParams(Section):
    checkpoint: Optional[str] = Field(
        default=None, description="a local Hugging Face checkpoint to start from; null: train the tiny model"
    )
    model: Architecture
    train: TrainParams


class BudgetParams(Section):
    """Grow's sampling budget per problem (DART-Math, Tong et al. 2024); restem/sampling/budget.py."""

    mode: Literal["fixed", "uniform", "prop2diff"] = Field(
        default="fixed", description="fixed: K samples per problem; uniform: rounds of K until k_correct correct "
        "samples or max_trials samples; prop2diff: rounds until a wanted count proportional to the problem's fail "
        "rate in the first round (total_correct over all problems), or max_trials")
    k_correct: int = Field(default=4, ge=1, description="uniform: correct samples wanted per problem")
    total_correct: Optional[int] = Field(
        default=None, ge=1, description="prop2diff: correct samples wanted over all problems; a problem's share is "
        "ceil(total_correct * fail_rate / sum of fail rates), fail rates from the first round of K samples")
    max_trials: int = Field(default=64, ge=1, description="uniform, prop2diff: most samples per problem (a multiple "
                            "of grow.samples_per_problem)")


class GrowParams(Section):
    engine: Literal["transformers", "vllm"] = Field(description="sampling engine of Grow and Evaluate")
    samples_per_problem: int = Field(ge=1, description="K completions per training problem (budget modes: per round)")
    temperature: float = Field(gt=0, description="sampling temperature")
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, description="0: no top-k cut")
    max_new_tokens: int = Field(ge=1)
    seed: int = 0
    budget: BudgetParams = Field(default_factory=BudgetParams, description="samples per problem: fixed K, or by "
                                 "difficulty (uniform, prop2diff)")

    @model_validator(mode="after")
    def _budget(self) -> "GrowParams":
        b, k = self.budget, self.samples_per_problem
        if b.mode == "fixed":
            return self
        if b.max_trials % k:
            raise ValueError(f"budget.max_trials ({b.max_trials}) must be a multiple of samples_per_problem ({k}): "
                             f"each round draws {k} samples per open problem; e.g. max_trials: {(b.max_trials // k + 1) * k}")
        if b.mode == "prop2diff" and b.total_correct is None:
            raise ValueError("budget.mode prop2diff needs budget.total_correct: the correct samples wanted over all "
                             "problems (e.g. the Grow pool size times filter.max_per_problem)")
        return self


class ScoreParams(Section):
    verifier: str = Field(description="verifier name, one of the registry's (verifiers/base.py)")
    timeout_s: float = Field(default=10.0, gt=0, description="hard time limit per sample (per program for code)")
    extraction: Literal["strict", "lenient"] = Field(
        default="strict", description="math and gsm8k answer extraction: strict requires a committed final "
        "answer (`####`, a final-answer sentence, `\\boxed{}`, or a completion that is only its answer); "
        "lenient also falls back to the last expression, as math-verify does (README: verifiers/math)")
    reward: Literal["verifier", "model"] = Field(
        default="verifier", description="reward of a sample: the verifier's, or the reward model's score "
        "(the verifier's verdict is kept beside it)")

    @field_validator("verifier")
    @classmethod
    def _registered(cls, value: str) -> str:
        from restem.verifiers.base import unknown_verifier, verifier_names

        if value not in verifier_names():
            raise ValueError(unknown_verifier(value))
        return value


class VotersParams(Section):
    """The other models of the `agreement` filter: each answers every Grow-pool problem greedily once
    (stage `voters`), and a policy sample is kept when its answer is the voters' consensus."""

    seeds: list[int] = Field(default_factory=list, description="tiny models trained like `base` with these "
                             "seeds (only when base.checkpoint is null)")
    checkpoints: list[str] = Field(default_factory=list, description="local Hugging Face causal-LM checkpoints")
    min_agree: Optional[int] = Field(default=None, ge=1, description="voters that must give the answer "
                                     "(null: all of them)")

    @property
    def count(self) -> int:
        return len(self.seeds) + len(self.checkpoints)

    @property
    def needed(self) -> int:
        return self.min_agree if self.min_agree is not None else self.count

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds {value} repeat a seed: each voter needs its own")
        return value


class PassRateBand(Section):
    """Problems whose pass rate (data/iter<i>/pass_rates.parquet) lies in [low, high] keep their samples."""

    low: float = Field(default=0.0, ge=0, le=1, description="lowest pass rate kept (0: also problems none solves)")
    high: float = Field(default=1.0, ge=0, le=1, description="highest pass rate kept (below 1: drop problems every "
                        "sample solves)")

    @model_validator(mode="after")
    def _ordered(self) -> "PassRateBand":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    @property
    def everything(self) -> bool:
        return self.low == 0.0 and self.high == 1.0


class FilterParams(Section):
    mode: Literal["correct", "threshold", "top_fraction", "best_of_n", "majority", "agreement"] = Field(
        description="correct: reward = 1 (ReST-EM); threshold: reward >= tau (ReST); top_fraction: the best "
        "fraction by reward (RAFT); best_of_n: the best samples of each problem; majority: label-free "
        "self-consistency vote; agreement: label-free agreement with other models (filter.voters)")
    max_per_problem: int = Field(ge=1, description="cap on kept samples per problem")
    dedup: Literal["none", "exact", "equations"] = Field(
        description="drop duplicates of a problem: exact completions, or equal sequences of equations (RFT)")
    require_valid_steps: bool = Field(default=False, description="also drop right answers with wrong steps")
    threshold: float = Field(default=0.5, description="threshold mode: tau of iterations without their own")
    threshold_kind: Literal["absolute", "quantile"] = Field(
        default="absolute", description="tau is a reward, or a quantile of the iteration's rewards")
    fraction: float = Field(default=0.25, gt=0, le=1, description="top_fraction: share of samples kept")
    scope: Literal["prompt", "global"] = Field(default="prompt", description="top_fraction: rank per prompt or all")
    min_votes: int = Field(default=2, ge=1, description="majority: fewest samples that must share the answer")
    strict_majority: bool = Field(default=True, description="majority: the answer needs more than half the votes")
    require_consistent: bool = Field(
        default=True, description="majority, agreement: only samples that pass the task's consistency check vote")
    voters: VotersParams = Field(default_factory=VotersParams, description="agreement: the models that vote")
    pass_rate: PassRateBand = Field(
        default_factory=PassRateBand, description="keep only problems whose share of verifier-correct samples lies "
        "in [low, high]; the others' samples are rejected as pass_rate_band ({low: 0, high: 1}: all problems)")

    @field_validator("dedup", mode="before")
    @classmethod
    def _dedup_bool(cls, value):
        # Older params files said `dedup: true|false`.
        if isinstance(value, bool):
            return "exact" if value else "none"
        return value

    @model_validator(mode="after")
    def _threshold_range(self) -> "FilterParams":
        if self.threshold_kind == "quantile" and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold {self.threshold} must lie in [0, 1] when threshold_kind is quantile")
        return self

    @model_validator(mode="after")
    def _band_needs_labels(self) -> "FilterParams":
        if self.mode in ("majority", "agreement") and not self.pass_rate.everything:
            raise ValueError(f"pass_rate {{low: {self.pass_rate.low}, high: {self.pass_rate.high}}} uses the "
                             f"verifier's labels, which the label-free mode `{self.mode}` must not see; set "
                             "pass_rate to {low: 0, high: 1} or use a labelled mode")
        return self

    @model_validator(mode="after")
    def _voters(self) -> "FilterParams":
        if self.mode != "agreement":
            return self
        if not self.voters.count:
            raise ValueError("mode `agreement` needs voters: set filter.voters.seeds (tiny models trained like "
                             "`base`) or filter.voters.checkpoints (local Hugging Face folders)")
        if self.voters.needed > self.voters.count:
            raise ValueError(f"voters.min_agree ({self.voters.min_agree}) exceeds the number of voters "
                             f"({self.voters.count})")
        return self


class EvaluateParams(Section):
    samples: int = Field(ge=1, description="k: samples per test problem for pass@k and maj@k")
    temperature: float = Field(gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(ge=1)
    seed: int = 0


class RewardModelParams(Section):
    """A learned outcome reward model (used when score.reward is `model`)."""

    checkpoint: Optional[str] = Field(
        default=None, description="a local Hugging Face sequence-classification checkpoint; null: train one")
    problems: int = Field(default=600, ge=2, description="Grow-pool problems the base samples for its data")
    samples_per_problem: int = Field(default=4, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    max_new_tokens: int = Field(default=64, ge=1)
    holdout: float = Field(default=0.2, gt=0, lt=1, description="share of problems held out to measure it")
    seed: int = 0
    train: TrainParams = Field(description="its training (binary cross-entropy on the verifier's labels)")


class RuntimeParams(Section):
    """How the stages run. `precision` and `vllm_dtype` change results (samples, models): dvc.yaml tracks them for
    every stage they act on, and Grow's resume key and Evaluate's memo key hold them (restem/sampling/sampler.py: numerics). The
    others change speed, not results, and no stage tracks them."""

    batch_size: int = Field(default=256, ge=1, description="sequences per generate call")
    threads: int = Field(default=0, ge=0, description="torch threads; 0: all cores")
    workers: int = Field(default=0, ge=0, description="grading processes or sandboxes; 0: one per core")
    grow_shard_problems: int = Field(default=256, ge=1, description="problems per resumable Grow shard")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="changes results: dtype of the transformers engine and of training: auto = "
        "bfloat16 on a CUDA GPU, float32 on CPU (a GPU run's samples differ from a CPU run's anyway)")
    vllm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="float32", description="changes results: vllm engine's model precision (auto: the checkpoint's); "
        "float32 keeps its greedy output equal to the transformers engine's, bfloat16 is faster on GPUs")
    tensor_parallel_size: int = Field(default=1, ge=1, description="vllm engine: devices that split each layer")
    vllm_kv_cache_gb: Optional[float] = Field(
        default=None, gt=0, description="vllm engine: KV cache size in GiB; null: 1 GiB on CPU, on a GPU "
        "gpu_memory_utilization decides")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1,
                                          description="vllm engine: fraction of GPU memory it may take")


class Params(Section):
    problems: ProblemsParams
    base: BaseParams
    grow: GrowParams
    score: ScoreParams
    filter: FilterParams
    improve: TrainParams
    evaluate: EvaluateParams
    loop: LoopParams
    reward_model: Optional[RewardModelParams] = None
    runtime: RuntimeParams = RuntimeParams()

    @model_validator(mode="after")
    def _across_sections(self) -> "Params":
        if self.filter.mode == "threshold":
            self.loop.check_rising(self.filter.threshold)
        elif self.loop.steps:
            raise ValueError(f"loop.steps needs filter.mode `threshold` (it is {self.filter.mode!r}): "
                             "each step filters the same samples with a higher threshold")
        if self.score.reward == "model" and self.reward_model is None:
            raise ValueError("score.reward is `model` but the `reward_model` section is missing")
        if self.filter.mode == "agreement" and self.filter.voters.seeds and self.base.checkpoint:
            raise ValueError("filter.voters.seeds trains tiny models like `base`, which needs base.checkpoint: null; "
                             "with your own base checkpoint list the voters in filter.voters.checkpoints")
        return self


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
        raise RestemError(f"{path}: invalid params:\n  {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """Every problem of a validation error, one per line, each with its dotted key."""
    return "\n  ".join(_describe(e) for e in exc.errors())
