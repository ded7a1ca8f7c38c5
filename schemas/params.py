"""The params file (`params.yaml`), one Pydantic model per section, `extra="forbid"`.

A typo such as `tempreture` or a wrong type fails loudly with the dotted key and the fix.
What changes outputs lives in the stage sections (tracked by DVC); operational knobs that do not
(batch size, threads) live in `runtime`, which no stage lists as a DVC param.

This module holds the stage sections, the whole file's model (`Params`) and its loading (`load_params`,
`describe_errors`); the `loop` section's models are in `restem.schemas.loop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

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
    """A user's own problems: JSONL or Parquet files, read in one `format` (restem/publish/importers.py)."""

    train: str = Field(description="file of the Grow pool")
    test: str = Field(description="file of held-out problems")
    demos: Optional[str] = Field(default=None, description="file of demonstrations (prompt, reference, solution)")
    format: Literal["columns", "restem", "gsm8k", "math", "humaneval", "apps"] = Field(
        default="columns", exclude_if=lambda v: v == "columns",  # the default leaves recorded params unchanged
        description="columns: prompt/reference/... columns named by the *_field keys (plus any test, entry_point, "
        "input_output, fn_name columns, kept in meta); restem: a Problem table as `restem import problems` writes "
        "it (every column kept); gsm8k, math, humaneval, apps: the public files, read as `restem import problems "
        "--format` reads them")
    prompt_field: str = Field(default="prompt", description="column holding the prompt")
    reference_field: str = Field(default="reference", description="column holding the gold final answer")
    solution_field: str = Field(default="solution", description="column holding a gold completion (demos)")
    difficulty_field: Optional[str] = Field(default=None, description="optional integer difficulty column")
    subset_field: Optional[str] = Field(default=None, description="optional column naming test subsets")

    @model_validator(mode="after")
    def _fields_need_columns(self) -> "ProblemFiles":
        if self.format != "columns":
            named = sorted(k for k in ("prompt_field", "reference_field", "solution_field", "difficulty_field",
                                       "subset_field") if k in self.model_fields_set)
            if named:
                raise ValueError(f"{', '.join(named)} name columns of format `columns`; format `{self.format}` "
                                 "reads its own fields: remove them (or map a public file's fields with "
                                 "`restem import problems --field`, then use format: restem)")
        return self


class DecontamFile(Section):
    """A benchmark file to check the training problems against (JSONL or Parquet in inputs/decontam/)."""

    path: str = Field(description="the file, in inputs/decontam/ (DVC tracks that folder by content)")
    fields: list[str] = Field(default_factory=lambda: ["prompt"], min_length=1,
                              description="the text fields compared, e.g. [problem] or [question, answer]")


class DecontamParams(Section):
    """Word n-gram overlap of the Grow pool and demonstrations with every test set (restem/decontam.py)."""

    mode: Literal["none", "report", "drop"] = Field(
        default="none", description="none: no check (outputs as without it); report: record the overlaps in "
        "data/problems/decontam.json; drop: also drop the contaminated train and demo problems")
    n: int = Field(default=8, ge=1, le=64, description="n-gram length in normalised words (open-r1, s1: 8)")
    solutions: bool = Field(default=False, description="also compare the gold solutions of problems (worked "
                            "solutions share runs of numbers by chance); prompts are always compared")
    against: list[DecontamFile] = Field(default_factory=list,
                                        description="benchmark files checked besides data/problems/test.parquet")


class ProblemsParams(Section):
    source: Literal["arithmetic", "files"] = Field(description="generate the embedded task or read files")
    seed: int = Field(description="seed of the generator")
    arithmetic: Optional[ArithmeticTask] = None
    files: Optional[ProblemFiles] = None
    decontaminate: DecontamParams = Field(default_factory=DecontamParams,
                                          description="n-gram decontamination against the test sets")

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
    architecture: Literal["llama", "qwen2"] = Field(
        default="llama", exclude_if=lambda v: v == "llama",  # the default leaves recorded params unchanged
        description="llama: LlamaForCausalLM; qwen2: Qwen2ForCausalLM (biases on q, k, v), as Qwen checkpoints")

    @model_validator(mode="after")
    def _heads_divide(self) -> "Architecture":
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads})")
        if self.architecture == "qwen2" and self.position == "none":
            raise ValueError("position `none` (NoPE) is a Llama-shaped SmolLM3; use architecture llama with it")
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
    loss_target: Optional[float] = Field(
        default=None, gt=0, exclude_if=lambda v: v is None,  # the default leaves recorded params unchanged
        description="stop at the end of the first epoch whose mean training loss is below this; epochs (or steps) "
        "stay the cap and still set the learning-rate schedule; null: train the whole schedule")
    # Both leave the update as it is up to float rounding; each is left out of dumps at its default, so the
    # params recorded in restem.json (and hashed) stay as they were.
    micro_batch_size: Optional[int] = Field(
        default=None, ge=1, exclude_if=lambda v: v is None,
        description="rows per forward pass: a batch is forwarded that many rows at a time and the gradients summed "
        "(gradient accumulation, for memory); null: the whole batch in one pass")
    packing: bool = Field(
        default=False, exclude_if=lambda v: not v,
        description="lay a forward's rows end to end in sequences up to the model's context, with no attention "
        "across rows, so short rows do not pay for padding (SFT only; the reward model does not pack)")


class LoraParams(Section):
    """A LoRA adapter's shape (peft): improve.adapter `lora` trains only these low-rank matrices."""

    rank: int = Field(default=16, ge=1, le=512, description="r: rank of each adapter matrix pair")
    alpha: float = Field(default=32.0, gt=0, description="lora_alpha: the update is scaled by alpha / rank")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="dropout on the adapter's input while training")
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        default="all-linear", description="all-linear: every linear layer of attention and MLP (not the output "
        "head); or a list of module names such as [q_proj, v_proj]")


class ImproveParams(TrainParams):
    """Improve's training: TrainParams plus the choice of full fine-tuning or a LoRA adapter."""

    adapter: Literal["none", "lora"] = Field(
        default="none", exclude_if=lambda v: v == "none",  # the default leaves recorded params unchanged
        description="none: full fine-tuning, each iteration a whole checkpoint; lora: a LoRA adapter (peft) on "
        "the base, each iteration an adapter folder of megabytes (fresh from the base, or the init model's "
        "adapter continued for a warm start)")
    lora: LoraParams = Field(default_factory=LoraParams, exclude_if=lambda v: v == LoraParams(),
                             description="the adapter's shape (adapter: lora)")


class BaseParams(Section):
    checkpoint: Optional[str] = Field(
        default=None, description="a local Hugging Face checkpoint to start from; null: train the tiny model"
    )
    model: Architecture
    train: TrainParams
    tokenizer: Literal["char", "bpe"] = Field(
        default="char", exclude_if=lambda v: v == "char",  # the default leaves recorded params unchanged
        description="the tiny model's tokenizer: char (one token per character, the embedded task's) | bpe "
        "(byte-level BPE with a ChatML chat template, trained on the demonstrations' text: restem/training/bpe.py)")
    vocab_size: int = Field(
        default=1024, ge=300, le=65536, exclude_if=lambda v: v == 1024,
        description="bpe: most tokenizer entries (256 byte symbols and 3 special tokens included)")

    @model_validator(mode="after")
    def _vocab_for_bpe(self) -> "BaseParams":
        if self.tokenizer == "char" and self.vocab_size != 1024:
            raise ValueError("vocab_size sizes the bpe tokenizer; with tokenizer `char` leave it out")
        return self


class PromptParams(Section):
    """How a problem's raw question becomes the text the policy sees (restem/prompting.py): the same for Grow,
    Evaluate, the voters, the reward model's data, base training and Improve."""

    style: Literal["plain", "chat"] = Field(
        default="plain", description="plain: the question through `template` (base models, the tiny model); "
        "chat: the tokenizer's own chat template (`apply_chat_template`) over [system] + few-shot turns + the question")
    template: Optional[str] = Field(
        default=None, description="a Python format string with a `{prompt}` field wrapping each question (plain: the "
        "whole text; chat: the user turn); null: the question as is")
    system: Optional[str] = Field(
        default=None, description="chat: the system message; null: none given, so the chat template's own default "
        "applies (e.g. Qwen's default system prompt)")
    fewshot: Optional[str] = Field(
        default=None, description="a JSONL file of {prompt, completion} examples in inputs/prompt/ (tracked by "
        "content): chat: user/assistant turns before the question; plain: each example through `template` "
        "followed by its completion, a blank line after each, before the question")

    @field_validator("template")
    @classmethod
    def _format_string(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            from restem.prompting import check_format_template

            try:
                check_format_template(value, "prompt.template")
            except RestemError as exc:
                raise ValueError(str(exc)) from None
        return value


def _stop_strings(value: list[str]) -> list[str]:
    if any(not s for s in value):
        raise ValueError("a stop string must not be empty")
    return value


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
    total_samples: Optional[int] = Field(
        default=None, ge=1, description="uniform, prop2diff: most samples the whole pool may take per iteration "
        "(equal cost: K x pool size, what fixed K spends); when a round does not fit, the open problems missing the "
        "most correct samples go first and the others stop as `spent`; null: no pool-wide limit")


class GrowParams(Section):
    engine: Literal["transformers", "vllm"] = Field(description="sampling engine of Grow and Evaluate")
    samples_per_problem: int = Field(ge=1, description="K completions per training problem (budget modes: per round)")
    temperature: float = Field(gt=0, description="sampling temperature")
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, description="0: no top-k cut")
    max_new_tokens: int = Field(ge=1)
    seed: int = 0
    stop: list[str] = Field(
        default_factory=list, exclude_if=lambda v: not v,  # none leaves recorded params unchanged
        description="stop strings: a completion ends before the first one it writes (finish_reason `stop`), "
        "e.g. ['Question:'] for a base model on a few-shot prompt")

    _stop = field_validator("stop")(_stop_strings)
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
    (stage `voters`), and a policy sample is kept when its answer is the voters' consensus. With `improve` the
    voters are chains that self-improve beside the policy (Lee et al. 2025's majority across models)."""

    seeds: list[int] = Field(default_factory=list, description="tiny models trained like `base` with these "
                             "seeds (only when base.checkpoint is null)")
    checkpoints: list[str] = Field(default_factory=list, description="local Hugging Face causal-LM checkpoints")
    min_agree: Optional[int] = Field(default=None, ge=1, description="voters that must give the answer "
                                     "(null: all of them)")
    improve: bool = Field(default=False, description="co-improving chains: after each iteration every voter is "
                          "fine-tuned like the policy (params improve, its own shuffle) on the rows the policy "
                          "trained on, from its own model at the iteration's init, and the voters of iteration k "
                          "answer k's Grow problems with their models at k's prev (stages voters_improve, votes); "
                          "false: the voters stay as stage voters built them")

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
    keep_truncated: bool = Field(
        default=False, description="false: a sample cut off at max_new_tokens (finish_reason length) is dropped "
        "as `truncated` before any rule; true: it is judged like the others (and trained on without an end token)")
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

    @property
    def co_improving(self) -> bool:
        """Whether the agreement filter's voters improve beside the policy (stages voters_improve, votes)."""
        return self.mode == "agreement" and self.voters.improve

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


class RationalizeParams(Section):
    """Rationalization (STaR): the Grow-pool problems no sample solved are sampled again with the reference
    answer as a hint; the rationales that reach it are kept with the original, unhinted prompt."""

    enabled: bool = Field(default=False, description="off: stage rationalize writes empty tables, nothing is sampled")
    samples_per_problem: int = Field(default=4, ge=1, description="hinted completions per unsolved problem")
    temperature: float = Field(default=0.8, gt=0, description="sampling temperature of the hinted samples")
    hint: str = Field(default="{reference};{prompt}", description="the hinted prompt, a template over {prompt} (the problem's "
                      "prompt) and {reference} (its gold answer); it must contain both")
    seed: int = Field(default=0, description="per-sample seeds derive from (seed, 'rationalize', iteration, "
                      "problem_id, index), apart from Grow's")
    hint_demos: float = Field(default=0.0, ge=0, le=1, description="the tiny base (base.checkpoint null) also "
                              "trains on this share of the demonstrations with hinted prompts, so that it can read "
                              "a hint; 0: none (an LLM base reads hints without)")

    @field_validator("hint")
    @classmethod
    def _fields(cls, value: str) -> str:
        import string

        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"hint {value!r} is not a valid template ({exc}); write braces as {{{{ and }}}}") from None
        unknown = names - {"prompt", "reference"}
        if unknown:
            raise ValueError(f"hint names {sorted(unknown)}; only {{prompt}} and {{reference}} are filled in")
        if names != {"prompt", "reference"}:
            raise ValueError(f"hint {value!r} must contain both {{prompt}} and {{reference}}")
        return value


class EvaluateParams(Section):
    samples: int = Field(ge=1, description="k: samples per test problem for pass@k and maj@k")
    temperature: float = Field(gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(ge=1)
    seed: int = 0
    stop: list[str] = Field(default_factory=list, exclude_if=lambda v: not v,
                            description="stop strings, as grow.stop")

    _stop = field_validator("stop")(_stop_strings)


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
    gradient_checkpointing: bool = Field(
        default=False, description="Improve: recompute each layer's activations in the backward pass instead of "
        "storing them (less memory, about a third more compute); the same operations on the same numbers, so "
        "losses and weights do not change")


class Params(Section):
    problems: ProblemsParams
    prompt: PromptParams = PromptParams()
    base: BaseParams
    grow: GrowParams
    score: ScoreParams
    filter: FilterParams
    improve: ImproveParams
    evaluate: EvaluateParams
    loop: LoopParams
    reward_model: Optional[RewardModelParams] = None
    rationalize: RationalizeParams = RationalizeParams()
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
        if self.improve.replay and self.problems.source == "files" and not self.problems.files.demos:
            # (ProblemsParams already requires the files section when source is files.) Caught here, before Grow spends its hours, not when Improve finds nothing to replay.
            raise ValueError(f"improve.replay is {self.improve.replay} but problems.files.demos is not set: there "
                             "are no demonstrations to replay; set improve.replay: 0 (the embedded task's default "
                             "0.25 replays its demonstrations) or name a demonstrations file in problems.files.demos")
        if self.rationalize.enabled and self.prompt != PromptParams():
            # The filter gives a kept rationale its problem's unhinted prompt, and it renders no prompt (it loads no
            # tokenizer): only the default prompt spec, where the rendered prompt is the question itself, is safe.
            raise ValueError("rationalize.enabled works with the default `prompt` section only (style plain, no "
                             "template, system or fewshot) for now; set rationalize.enabled: false")
        if self.rationalize.enabled and self.filter.mode in ("majority", "agreement"):
            raise ValueError(f"rationalize.enabled needs the reference answers (they are the hints), but filter.mode "
                             f"{self.filter.mode!r} is label-free; use mode correct, threshold, top_fraction or "
                             "best_of_n, or set rationalize.enabled: false")
        return self


def _describe(error: dict) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown key; check its spelling (see the comments in params.yaml)"
    if error["type"] == "missing":
        return f"{loc}: required key is missing"
    return f"{loc}: {error['msg']} (got {error.get('input')!r})"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: plain YAML loading keeps
    the last one silently, so a second `adapter:` line added above the first would be ignored."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the params file; every problem is listed with its dotted key."""
    path = Path(path)
    if not path.exists():
        raise RestemError(f"{path}: params file not found (run from the project root)")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
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
