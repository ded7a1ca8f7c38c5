"""The tables of the loop, one Pydantic model each (see DESIGN.md, "The loop as data").

Field types are kept to what maps one-to-one onto Arrow: str, int, float, bool, each optionally None.
Structured extras travel as canonical JSON text in a `details`/`meta` column. Every field has a
`description`: `restem sql --schema` prints them as the columns' documentation.

Each table declares its row order, `SORT`: `restem.schemas.io.write_rows` sorts by it on every write, so every
writer of a table (a stage, an importer, a test) puts its rows in the same order and equal rows give
equal bytes. Changing a table's `SORT` changes the bytes of every file of that table.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from restem.schemas.hashing import content_hash

Verdict = Literal["correct", "incorrect", "unverifiable", "error"]


class Row(BaseModel):
    """Base of every table row: unknown columns are an error, rows are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # The columns rows are sorted by when written (ascending; ties keep their input order).
    SORT: ClassVar[tuple[str, ...]] = ()


class Problem(Row):
    """One task instance. `split` is demo (SFT data for the base), train (Grow pool) or test."""

    SORT: ClassVar[tuple[str, ...]] = ("subset", "problem_id")

    problem_id: str = Field(description="content hash of (prompt, reference)")
    split: Literal["demo", "train", "test"] = Field(description="which part of the problem set")
    subset: str = Field(description="name of the set within the split, e.g. 'in_dist' or 'harder'")
    prompt: str = Field(description="the text the model is given")
    reference: str = Field(description="the gold final answer")
    solution: Optional[str] = Field(default=None, description="a gold completion (demonstrations)")
    difficulty: Optional[int] = Field(default=None, description="difficulty level, e.g. digit count")
    source: str = Field(description="generator or file the problem came from")
    meta: str = Field(default="{}", description="task-specific JSON, e.g. unit tests and entry point for code")

    @staticmethod
    def make_id(prompt: str, reference: str) -> str:
        return content_hash("problem", prompt, reference)


class Sample(Row):
    """One completion sampled from a policy."""

    # One order for every Sample file (Grow, Evaluate, the voters', the reward model's, imported ones):
    # within a Grow or Evaluate file purpose and policy are constant, so it is the order of (problem,
    # temperature, index); a voters' file is by problem, then voter.
    SORT: ClassVar[tuple[str, ...]] = ("problem_id", "purpose", "policy", "temperature", "sample_index", "sample_id")

    sample_id: str = Field(description="hash of (problem_id, policy, sampling params, index, seed)")
    problem_id: str = Field(description="the problem it answers (problems.problem_id)")
    iteration: int = Field(description="loop iteration that grew it (evaluation rows: the model's)")
    purpose: Literal["grow", "eval", "reward", "vote", "rationale"] = Field(
        description="training pool sample, evaluation sample, training data of the reward model, a voter's "
        "answer (agreement filter), or a hinted sample of a problem Grow did not solve (rationalize; its prompt "
        "holds the hint)")
    policy: str = Field(description="content hash of the model that generated it")
    engine: str = Field(description="sampling engine and version, e.g. 'transformers 5.19.0'")
    sample_index: int = Field(description="index among the samples of this problem")
    seed: int = Field(description="the per-request seed")
    temperature: float = Field(description="sampling temperature (0: greedy)")
    prompt: str = Field(description="the text the policy was given")
    completion: str = Field(description="the text it wrote (special tokens it wrote kept, the final end-of-turn "
                            "token left out; cut before a stop string)")
    finish_reason: Literal["eos", "stop", "length"] = Field(
        description="eos: an end-of-turn token; stop: a stop string (grow.stop, evaluate.stop); length: "
        "max_new_tokens reached")
    prompt_tokens: int = Field(description="tokens in the prompt")
    completion_tokens: int = Field(description="tokens in the completion (len(completion_ids) when sampled here)")
    completion_ids: Optional[list[int]] = Field(
        default=None, description="the token ids it sampled, the end-of-turn token included when it ended on one "
        "(a stop string: up to the token that completed it); Improve trains on exactly these. Null: imported")


class Score(Row):
    """One verdict on one sample by one verifier. An exception is `error`, never `incorrect`."""

    SORT: ClassVar[tuple[str, ...]] = ("sample_id", "verifier")

    sample_id: str = Field(description="the sample judged (samples.sample_id)")
    problem_id: str = Field(description="its problem")
    iteration: int = Field(description="its sample's iteration")
    verifier: str = Field(description="verifier name and version")
    reward: float = Field(description="the reward the filter uses: the verifier's, or the reward model's score")
    reward_model: Optional[str] = Field(
        default=None, description="hash of the reward model that gave `reward`; null: the verifier gave it")
    correct: Optional[bool] = Field(description="the verifier's judgement; null when unverifiable or error")
    verdict: Verdict = Field(description="unverifiable: no answer to judge; error: the verifier failed (never "
                             "counted as incorrect)")
    extracted: Optional[str] = Field(description="the final answer extracted from the completion")
    steps_valid: Optional[bool] = Field(description="every checkable reasoning step is right; null if none")
    details: str = Field(default="{}", description="verifier-specific JSON")


class Kept(Row):
    """A sample admitted to the training set of an iteration, with the rule that admitted it."""

    SORT: ClassVar[tuple[str, ...]] = ("problem_id", "sample_id")

    sample_id: str = Field(description="the sample kept (samples.sample_id; demonstrations: a hash of the problem)")
    problem_id: str = Field(description="its problem")
    iteration: int = Field(description="the iteration that grew it (0: a demonstration)")
    prompt: str = Field(description="the prompt trained on")
    completion: str = Field(description="the completion trained on")
    completion_ids: Optional[list[int]] = Field(
        default=None, description="the sampled completion ids trained on (samples.completion_ids); null for "
        "demonstrations and imported samples, which are tokenised from the text plus the end-of-turn token")
    reward: float = Field(description="its reward (scores.reward)")
    rule: str = Field(description="the filter rule and its settings, e.g. 'correct;cap=4;dedup=exact'")
    threshold: Optional[float] = Field(default=None, description="the reward threshold that admitted it, if any")
    finish_reason: Literal["eos", "stop", "length"] = Field(
        default="eos", description="why its sample ended (samples.finish_reason; demonstrations: eos). A `length` "
        "row (kept only with filter.keep_truncated) was cut off: training must not append an end-of-turn token")


class Rejected(Row):
    """A sample the filter dropped, and why."""

    SORT: ClassVar[tuple[str, ...]] = ("problem_id", "sample_id")

    sample_id: str = Field(description="the sample dropped (samples.sample_id)")
    problem_id: str = Field(description="its problem")
    iteration: int = Field(description="the iteration that grew it")
    reward: float = Field(description="its reward (scores.reward)")
    filter_reason: Literal[
        "incorrect", "unverifiable", "error", "invalid_steps", "duplicate", "over_cap",
        "below_threshold", "not_top", "no_majority", "minority", "inconsistent",
        "no_agreement", "disagrees", "truncated", "pass_rate_band",
    ] = Field(description="why it was dropped (see restem/filtering.py; pass_rate_band: its problem's pass rate lies "
              "outside filter.pass_rate)")


class AdapterBase(BaseModel):
    """The model a LoRA adapter folder applies to (`ModelMeta.adapter`)."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="its folder, relative to the workspace root (e.g. models/iter0; that folder's own "
                      "restem.json may point on to the user's checkpoint)")
    base_hash: str = Field(description="the base's model_hash when the adapter was trained (checked on load)")


class PassRate(Row):
    """How often an iteration's samples solve one problem (written by `score` beside scores.parquet)."""

    SORT: ClassVar[tuple[str, ...]] = ("problem_id",)

    problem_id: str = Field(description="the problem (problems.problem_id)")
    iteration: int = Field(description="the iteration whose Grow samples are counted")
    samples: int = Field(description="its samples in this iteration")
    graded: int = Field(description="samples with a verdict correct or incorrect (not unverifiable, not error)")
    correct: int = Field(description="samples the verifier calls correct")
    pass_rate: float = Field(description="correct / samples (errors and unverifiable samples count as failures)")
    majority_answer: Optional[str] = Field(
        description="the most frequent extracted answer (ties: the earliest sample's); null when none was extracted")
    majority_count: int = Field(description="samples giving the majority answer")
    majority_share: float = Field(description="majority_count / samples")


class Budget(Row):
    """Grow's sampling budget for one problem (grow.budget): how many samples it drew and why it stopped."""

    SORT: ClassVar[tuple[str, ...]] = ("problem_id",)

    problem_id: str = Field(description="the problem (problems.problem_id)")
    iteration: int = Field(description="the Grow iteration")
    mode: Literal["fixed", "uniform", "prop2diff"] = Field(description="grow.budget.mode")
    samples: int = Field(description="samples generated for it (all rounds)")
    rounds: int = Field(description="sampling rounds (trials) it took part in, grow.samples_per_problem samples each")
    correct: Optional[int] = Field(description="samples graded correct in Grow; null in fixed mode (not graded)")
    wanted: Optional[int] = Field(description="correct samples sought (uniform: k_correct; prop2diff: its share of "
                                  "total_correct); null in fixed mode")
    stop: Literal["fixed", "reached", "capped", "spent"] = Field(
        description="fixed: K samples, no grading; reached: `wanted` correct samples; capped: max_trials samples; "
        "spent: the pool's grow.budget.total_samples ran out first")


class ModelMeta(BaseModel):
    """`restem.json` beside each Hugging Face checkpoint folder."""

    model_config = ConfigDict(extra="forbid")

    model_hash: str = Field(description="content hash of the checkpoint's files")
    iteration: Union[int, str] = Field(description="iteration number, or step key such as '1b'")
    parent: Optional[str] = Field(default=None, description="model_hash of the model it started from")
    checkpoint: Optional[str] = Field(
        default=None, description="path of an external checkpoint this folder stands for (user's own base)"
    )
    training_data: Optional[str] = Field(default=None, description="hash of the training rows")
    params: dict = Field(default_factory=dict, description="the params that made it")
    train_log: list[dict] = Field(default_factory=list, description="loss by step")
    adapter: Optional[AdapterBase] = Field(
        default=None, exclude_if=lambda v: v is None,  # full checkpoints keep their restem.json as it was
        description="set when the folder holds a LoRA adapter (peft) rather than whole weights: the model it applies to")
    environment: dict = Field(
        default_factory=dict, description="where it was trained: torch and transformers versions, threads, CPU "
        "model and the vector instructions torch uses (cpu_capability), device (a record only: not part of model_hash)")


def truncated(sample: dict) -> bool:
    """Whether a sample (a Sample row as a dict) was cut off at max_new_tokens rather than ending on its own."""
    return sample["finish_reason"] == "length"
