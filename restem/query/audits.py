"""`restem audit NAME`: questions about the loop's data, each a SQL query over `restem sql`'s views.

Audits (`--show-sql` prints the query so it can be read and adapted with `restem sql`):
- wrong-reasoning: right answers whose checkable steps are false (`scores.steps_valid`; where a
  verifier left it NULL, e.g. GSM8K answer grading, `text_steps_valid(completion)` rechecks the text
  with `restem.verifiers.steps`), per iteration and among kept samples, rationalized samples (purpose
  'rationale') in rows of their own; `--list` shows the samples.
- coverage: pass@1 (mean share correct) against pass@K (any of the K correct) per iteration, and
  problems never solved or solved exactly once; `--list` shows those problems.
- diversity: distinct completions and distinct reasoning paths (`reasoning_path`) per problem.
- filter: kept and dropped samples by reason per iteration.
- truncation: samples cut off at max_new_tokens (finish_reason `length`) per iteration and purpose: their
  share, how many right answers were cut off, how many were kept; `--list` shows examples and how they end.
- contamination: word n-gram overlap (restem/decontam.py, n = 8 by default) of the training side (Grow pool,
  demonstrations, kept samples) with every test set (data/problems/test.parquet by subset, plus the files of
  params problems.decontaminate.against), or of two named files (`--train A.jsonl --test B.jsonl --field
  question`); `--list` shows each (training item, test item) pair with a shared n-gram. Not SQL: computed in Python.
- reward-model: a reward model's scores against the verifier's verdicts on the same samples: score
  rows made with `score.reward: model` (column `reward_model` set, the verdict beside it), or extra
  rows whose `verifier` starts with `rm:` (reward = its score, correct = NULL) written by other tools;
  until such rows exist the audit says so and shows nothing.

The CSV files behind the DVC plots (`metrics/plots/`) are written from these queries by `restem.query.plots`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pyarrow as pa
import typer

from restem.cli.errors import user_errors
from restem.schemas.errors import RestemError
from restem.query.output import check_format, render
from restem.query.sql import open_workspace, run_query

# Rows written by a reward model are not verdicts; every audit of verdicts leaves them out.
_VERDICTS = "NOT is_reward_model(verifier) AND verdict IS NOT NULL"
# The ReST steps' filters (ref '1b' and so on: not an iteration's own ref), by iteration.
_STEP_FILTERS = """step_filters AS (
    SELECT DISTINCT iteration, ref FROM (SELECT iteration, ref FROM kept UNION ALL SELECT iteration, ref FROM rejected)
    WHERE ref <> iteration::VARCHAR
)"""

WRONG_REASONING = f"""
-- Right answer, wrong reasoning: correct answers whose checkable steps are false.
-- steps_valid comes from the verifier; only where it left it NULL is the text rechecked
-- (verifiers/steps.py), so only those rows read the completion text.
-- Grow rows appear once per filter of their iteration (its own, ref '1', and each ReST step, '1b'): the
-- answers are the same samples, the kept columns are that filter's. Rationalization's hinted samples (purpose
-- 'rationale') have rows of their own beside the grow rows: a hint makes it easy to write the answer after
-- wrong steps, and their rate against the ordinary samples' shows how often that happens.
WITH judged AS (
    SELECT iteration, ref, purpose, sample_id, steps_valid
    FROM scores
    WHERE correct AND {_VERDICTS}
), rechecked AS (
    SELECT j.sample_id, j.purpose, text_steps_valid(s.completion) AS ok
    FROM judged j JOIN samples s ON s.sample_id = j.sample_id AND s.purpose = j.purpose
    WHERE j.steps_valid IS NULL
), {_STEP_FILTERS}, per_filter AS (
    SELECT * FROM judged
    UNION ALL
    SELECT j.iteration, f.ref, j.purpose, j.sample_id, j.steps_valid
    FROM judged j JOIN step_filters f ON j.purpose IN ('grow', 'rationale') AND f.iteration = j.iteration
), marked AS (
    SELECT j.iteration, j.ref, j.purpose, coalesce(j.steps_valid, r.ok) AS steps_ok,
           CASE WHEN j.purpose IN ('grow', 'rationale') THEN k.sample_id IS NOT NULL END AS kept
    FROM per_filter j
    LEFT JOIN rechecked r ON r.sample_id = j.sample_id AND r.purpose = j.purpose
    LEFT JOIN (SELECT DISTINCT sample_id, ref FROM kept) k
           ON k.sample_id = j.sample_id AND k.ref = j.ref AND j.purpose IN ('grow', 'rationale')
)
SELECT iteration, ref, purpose,
       count(*)                                              AS right_answers,
       count(steps_ok)                                       AS checkable,
       count(*) FILTER (WHERE NOT steps_ok)                  AS wrong_reasoning,
       round(count(*) FILTER (WHERE NOT steps_ok) / nullif(count(steps_ok), 0), 4) AS rate,
       count(*) FILTER (WHERE kept)                          AS kept,
       count(*) FILTER (WHERE kept AND NOT steps_ok)         AS kept_wrong_reasoning,
       round(count(*) FILTER (WHERE kept AND NOT steps_ok)
             / nullif(count(steps_ok) FILTER (WHERE kept), 0), 4) AS kept_rate
FROM marked
GROUP BY iteration, ref, purpose
ORDER BY iteration, ref, purpose
"""

WRONG_REASONING_LIST = f"""
-- The samples with a right answer and a wrong step, with the steps found wrong.
SELECT iteration, ref, purpose, sample_id, problem_id, kept, kept_by, extracted,
       CASE WHEN steps_valid IS NOT NULL THEN json_extract_string(details, '$.steps')
            ELSE text_step_errors(completion) END AS wrong_steps, completion
FROM graded
WHERE correct AND {_VERDICTS}
  AND NOT coalesce(steps_valid, text_steps_valid(completion))
ORDER BY iteration, ref, purpose, problem_id, sample_id
"""

PER_PROBLEM = f"""
WITH per_problem AS (
    -- scores has one verdict row per sample (and verifier), so rows count samples: no DISTINCT needed.
    -- pass@K uses sampled rows: greedy evaluation rows (temperature 0) are one fixed answer; only eval
    -- rows need the samples table, to tell those apart by their temperature
    SELECT iteration, ref, purpose, problem_id,
           count(*)                          AS n,
           count(*) FILTER (WHERE correct)   AS c
    FROM scores
    WHERE {_VERDICTS}
      AND (purpose = 'grow'
           OR sample_id IN (SELECT sample_id FROM samples WHERE purpose = 'eval' AND temperature > 0))
    GROUP BY iteration, ref, purpose, problem_id
)"""

COVERAGE = PER_PROBLEM + """,
across AS (  -- every grow iteration together: solved in none, or in exactly one sample overall
    SELECT NULL::BIGINT AS iteration, NULL::VARCHAR AS ref, 'grow (all iterations)' AS purpose, problem_id,
           sum(n)::BIGINT AS n, sum(c)::BIGINT AS c
    FROM per_problem WHERE purpose = 'grow' GROUP BY problem_id
)
SELECT iteration, ref, purpose,
       count(*)                              AS problems,
       max(n)                                AS k,
       round(avg(c / n), 4)                  AS pass_at_1,
       round(avg((c > 0)::INT), 4)           AS pass_at_k,
       count(*) FILTER (WHERE c = 0)         AS never_solved,
       count(*) FILTER (WHERE c = 1)         AS solved_once
FROM (SELECT * FROM per_problem UNION ALL SELECT * FROM across)
GROUP BY iteration, ref, purpose
ORDER BY iteration NULLS LAST, ref, purpose
"""

COVERAGE_LIST = PER_PROBLEM + """
-- Problems never solved, or solved by exactly one sample, over all grow iterations.
SELECT p.problem_id, sum(n) AS samples, sum(c) AS correct,
       CASE WHEN sum(c) = 0 THEN 'never solved' ELSE 'solved once' END AS status,
       any_value(pr.prompt) AS prompt, any_value(pr.reference) AS reference
FROM per_problem p LEFT JOIN problems pr USING (problem_id)
WHERE p.purpose = 'grow'
GROUP BY p.problem_id
HAVING sum(c) <= 1
ORDER BY correct, p.problem_id
"""

DIVERSITY = f"""
-- Distinct completions and distinct reasoning paths (the sequence of equations) per problem.
-- Completions are compared by hash(); the path is computed once per distinct text, not per sample.
WITH answers AS (  -- one row per verdict (per sample and verifier), with its completion's hash
    SELECT c.iteration, c.ref, c.purpose, c.problem_id, c.correct, s.completion_hash
    FROM scores c
    JOIN (SELECT sample_id, purpose, hash(completion) AS completion_hash FROM samples) s USING (sample_id, purpose)
    WHERE {_VERDICTS}
), texts AS (  -- every distinct completion once, with its reasoning path
    SELECT hash(completion) AS completion_hash, reasoning_path(any_value(completion)) AS path
    FROM samples
    GROUP BY completion_hash
), per_text AS (  -- each distinct completion of a problem: how many samples wrote it, any of them right
    SELECT iteration, ref, purpose, problem_id, completion_hash, count(*) AS samples, bool_or(correct) AS any_correct
    FROM answers
    GROUP BY iteration, ref, purpose, problem_id, completion_hash
), per_problem AS (
    SELECT iteration, ref, purpose, problem_id,
           sum(samples)                                          AS n,
           count(*)                                              AS completions,
           count(DISTINCT path)                                  AS paths,
           count(DISTINCT path) FILTER (WHERE any_correct)       AS correct_paths
    FROM per_text JOIN texts USING (completion_hash)
    GROUP BY iteration, ref, purpose, problem_id
)
SELECT iteration, ref, purpose,
       count(*)                                 AS problems,
       round(avg(n), 3)                         AS samples_per_problem,
       round(avg(completions), 3)               AS distinct_completions,
       round(avg(paths), 3)                     AS distinct_paths,
       round(avg(correct_paths), 3)             AS distinct_correct_paths,
       round(avg((paths = 1)::INT), 4)          AS share_one_path
FROM per_problem
GROUP BY iteration, ref, purpose
ORDER BY iteration, ref, purpose
"""

FILTER = """
-- Kept and dropped samples by reason, per iteration and ReST step (ref '1b' filters iteration 1 again);
-- kept rationales of problems no sample solved (rule 'rationalized;...') apart.
SELECT iteration, ref, outcome, count(*) AS samples,
       round(count(*) / sum(count(*)) OVER (PARTITION BY iteration, ref), 4) AS share
FROM (SELECT iteration, ref, CASE WHEN starts_with(rule, 'rationalized;') THEN 'kept rationalized' ELSE 'kept' END
             AS outcome FROM kept
      UNION ALL
      SELECT iteration, ref, 'dropped: ' || filter_reason FROM rejected)
GROUP BY iteration, ref, outcome
ORDER BY iteration, ref, outcome
"""

PRECISION = """
-- Kept samples the verifier calls correct, per iteration: the filter's precision. A label-free vote or a
-- reward model may keep wrong samples; here the verifier only measures, it decided nothing.
-- Per iteration and ReST step: a step ('1b') keeps some of its iteration's samples again.
SELECT k.iteration, k.ref, c.purpose, count(*) AS kept, count(c.correct) AS labelled,
       round(avg(c.correct::INTEGER), 6) AS kept_precision
FROM (SELECT DISTINCT sample_id, iteration, ref FROM kept) k
JOIN scores c ON c.sample_id = k.sample_id AND c.purpose IN ('grow', 'rationale') AND NOT is_reward_model(c.verifier)
GROUP BY k.iteration, k.ref, c.purpose
ORDER BY k.iteration, k.ref, c.purpose
"""

TRUNCATION = f"""
-- Samples cut off at max_new_tokens (finish_reason 'length') per iteration and purpose: how many, their share,
-- how many of the right answers were cut off (an answer written before the cut), and how many any filter kept
-- (0 unless filter.keep_truncated).
WITH judged AS (
    SELECT s.iteration, s.ref, s.purpose, s.sample_id, s.finish_reason = 'length' AS cut,
           bool_or(c.correct) AS correct
    FROM samples s
    LEFT JOIN scores c ON c.sample_id = s.sample_id AND c.purpose = s.purpose AND {_VERDICTS}
    GROUP BY ALL
)
SELECT j.iteration, j.ref, j.purpose,
       count(*)                                           AS samples,
       count(*) FILTER (WHERE cut)                        AS truncated,
       round(count(*) FILTER (WHERE cut) / count(*), 4)   AS share,
       count(*) FILTER (WHERE correct)                    AS correct,
       count(*) FILTER (WHERE cut AND correct)            AS truncated_correct,
       round(count(*) FILTER (WHERE cut AND correct) / nullif(count(*) FILTER (WHERE correct), 0), 4)
                                                          AS truncated_share_of_correct,
       count(*) FILTER (WHERE cut AND k.sample_id IS NOT NULL) AS kept_truncated
FROM judged j
LEFT JOIN (SELECT DISTINCT sample_id FROM kept) k ON k.sample_id = j.sample_id AND j.purpose = 'grow'
GROUP BY j.iteration, j.ref, j.purpose
ORDER BY j.iteration, j.ref, j.purpose
"""

TRUNCATION_LIST = f"""
-- Examples of truncated samples: up to 20 per iteration and purpose, with how each ends.
SELECT iteration, ref, purpose, sample_id, problem_id, completion_tokens, correct, kept,
       right(completion, 80) AS ending
FROM graded
WHERE finish_reason = 'length' AND (verdict IS NULL OR {_VERDICTS})
QUALIFY row_number() OVER (PARTITION BY iteration, ref, purpose ORDER BY problem_id, sample_id) <= 20
ORDER BY iteration, ref, purpose, problem_id, sample_id
"""

_RM_PAIRS = """
WITH rm AS (
    SELECT sample_id, purpose, iteration, ref, verifier AS reward_model, reward AS rm_score
    FROM scores WHERE is_reward_model(verifier)
    UNION ALL  -- score rows whose reward came from `score.reward: model` (the verdict is in the same row)
    SELECT sample_id, purpose, iteration, ref, 'rm:' || reward_model, reward
    FROM scores WHERE reward_model IS NOT NULL
), verdicts AS (
    SELECT sample_id, purpose, problem_id, verifier, correct
    FROM scores WHERE NOT is_reward_model(verifier) AND correct IS NOT NULL
), pairs AS (
    SELECT rm.*, v.problem_id, v.verifier, v.correct
    FROM rm JOIN verdicts v USING (sample_id, purpose)
)"""

REWARD_MODEL = _RM_PAIRS + """,
best AS (  -- best-of-n: is the sample the reward model ranks first for its problem correct?
    SELECT iteration, ref, purpose, reward_model, verifier, problem_id, arg_max(correct, rm_score) AS best_correct
    FROM pairs GROUP BY ALL
), summary AS (
    SELECT iteration, ref, purpose, reward_model, verifier,
           count(*) AS pairs,
           count(*) FILTER (WHERE correct) AS pos,
           avg(rm_score) FILTER (WHERE correct) AS mean_score_correct,
           avg(rm_score) FILTER (WHERE NOT correct) AS mean_score_incorrect,
           -- auc(): Python (restem/stats.py), the function behind metrics/reward.json's holdout_auc; both lists
           -- sorted alike so that each score stays beside its verdict
           auc(list(rm_score ORDER BY rm_score, correct), list(correct ORDER BY rm_score, correct)) AS auc,
           avg(correct::INT) AS pass_at_1
    FROM pairs GROUP BY ALL
)
SELECT s.iteration, s.ref, s.purpose, s.reward_model, s.verifier, s.pairs, s.pos AS verifier_correct,
       round(s.mean_score_correct, 4) AS mean_score_correct,
       round(s.mean_score_incorrect, 4) AS mean_score_incorrect,
       round(s.auc, 4) AS auc,
       round(s.pass_at_1, 4) AS pass_at_1,
       round(avg(b.best_correct::INT), 4) AS best_of_n
FROM summary s JOIN best b USING (iteration, ref, purpose, reward_model, verifier)
GROUP BY ALL
ORDER BY s.iteration, s.ref, s.purpose, s.reward_model, s.verifier
"""

REWARD_MODEL_LIST = _RM_PAIRS + """
-- Disagreements: the verifier's wrong answers the reward model scores highest.
SELECT iteration, ref, purpose, reward_model, verifier, sample_id, problem_id, rm_score, correct
FROM pairs WHERE NOT correct
ORDER BY rm_score DESC, sample_id
LIMIT 100
"""

_NO_REWARD_MODEL = ("no reward-model scores in this workspace: no `scores` row has a reward_model or a verifier "
                    "starting with 'rm:' (run with `score.reward: model`, see presets/rest.yaml). "
                    "A reward model's scores go in as extra score rows (verifier 'rm:<name>', reward = its score, "
                    "correct = NULL) beside the verifier's rows for the same samples; this audit then compares them.")


@dataclass(frozen=True)
class Audit:
    """One audit: a summary query, an optional listing query, and a precondition query."""

    name: str
    help: str
    summary: str
    listing: Optional[str] = None
    # A query returning one count; when it is 0, `missing` is shown instead of running the audit.
    requires: Optional[str] = None
    missing: str = ""


AUDITS: dict[str, Audit] = {a.name: a for a in [
    Audit("wrong-reasoning", "right answers reached through wrong steps", WRONG_REASONING, WRONG_REASONING_LIST),
    Audit("coverage", "pass@1 vs pass@K, problems never solved or solved once", COVERAGE, COVERAGE_LIST),
    Audit("diversity", "distinct completions and reasoning paths per problem", DIVERSITY),
    Audit("filter", "kept and dropped samples by reason", FILTER),
    Audit("precision", "kept samples the verifier calls correct (a filter's precision)", PRECISION),
    Audit("truncation", "samples cut off at max_new_tokens, among all, right and kept ones", TRUNCATION,
          TRUNCATION_LIST),
    Audit("reward-model", "reward model against verifier", REWARD_MODEL, REWARD_MODEL_LIST,
          requires="SELECT count(*) FROM scores WHERE is_reward_model(verifier) OR reward_model IS NOT NULL",
          missing=_NO_REWARD_MODEL),
]}


@dataclass(frozen=True)
class AuditResult:
    table: pa.Table
    note: str = ""  # said instead of (or besides) the table, e.g. no reward-model rows yet


CONTAMINATION = "contamination"  # not a SQL audit: restem/decontam.py computes it


def get_audit(name: Optional[str]) -> Audit:
    """The audit called `name`; an unknown or missing name is an error that lists the known ones."""
    if name not in AUDITS:
        known = ", ".join([f"{a.name} ({a.help})" for a in AUDITS.values()]
                          + [f"{CONTAMINATION} (n-gram overlap of training data with the test sets)"])
        raise RestemError(f"unknown audit {name!r}; choose one of: {known}")
    return AUDITS[name]


def audit_sql(name: str, listing: bool = False) -> str:
    """The SQL of an audit (its listing query with `listing`), to read or adapt with `restem sql`."""
    audit = get_audit(name)
    if listing and audit.listing is None:
        raise RestemError(f"audit {name!r} has no --list query; its summary is already per group")
    return (audit.listing if listing else audit.summary).strip() + "\n"


def run_audit(con, name: str, listing: bool = False) -> AuditResult:
    """Run an audit on a connection made by `restem.query.sql.connect`."""
    audit = get_audit(name)
    if audit.requires and run_query(con, audit.requires).column(0)[0].as_py() == 0:
        return AuditResult(pa.table({}), audit.missing)
    return AuditResult(run_query(con, audit_sql(name, listing)))


# ----------------------------------------------------------------------------------------- command


def audit_command(
    name: Optional[str] = typer.Argument(None, help="wrong-reasoning, coverage, diversity, filter, precision, "
                                         "truncation, reward-model or contamination"),
    listing: bool = typer.Option(False, "--list", help="list the samples or problems behind the numbers"),
    show_sql: bool = typer.Option(False, "--show-sql", help="print the audit's SQL (for `restem sql`) and stop"),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json"),
    rev: Optional[str] = typer.Option(None, "--rev", help="git revision or DVC experiment to audit"),
    root: Path = typer.Option(Path("."), "--root", help="workspace folder"),
    max_rows: int = typer.Option(200, "--max-rows", help="rows shown by --format table"),
    train: Optional[Path] = typer.Option(None, "--train", help="contamination: a training JSONL/Parquet file"),
    test: Optional[Path] = typer.Option(None, "--test", help="contamination: a test JSONL/Parquet file"),
    field: Optional[list[str]] = typer.Option(None, "--field", help="contamination with --train/--test: a text "
                                              "field to compare (repeatable, e.g. --field question --field answer)"),
    n: int = typer.Option(8, "--n", help="contamination: n-gram length in normalised words"),
    solutions: bool = typer.Option(False, "--solutions", help="contamination of a workspace: also compare the "
                                   "problems' gold solutions"),
) -> None:
    """Audit the loop's data: wrong reasoning, coverage, diversity, filter, truncation, reward model vs verifier,
    contamination."""
    with user_errors():
        check_format(fmt)
        if name == CONTAMINATION:
            if show_sql:
                raise RestemError("contamination is computed in Python (restem/decontam.py), not SQL: no --show-sql")
            from restem.query.contamination import contamination_rows

            rows = contamination_rows(root, rev, train, test, field, n, listing, solutions)
            render(pa.Table.from_pylist(rows), fmt, max_rows)
            return
        if show_sql:
            typer.echo(audit_sql(name, listing))
            return
        get_audit(name)
        with open_workspace(root, rev) as con:
            result = run_audit(con, name, listing)
        if result.note:
            typer.echo(result.note, err=True)
        if result.table.num_columns:
            render(result.table, fmt, max_rows)


if __name__ == "__main__":  # pragma: no cover
    typer.run(audit_command)
    sys.exit(0)
