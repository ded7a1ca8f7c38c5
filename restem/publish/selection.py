"""What `restem export` exports: the selection (iterations and ReST steps, `--all`, or an SQL query) checked
against the workspace, and the selected rows with what the card needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from restem.schemas.errors import RestemError
from restem.schemas.refs import Ref
from restem.query.sql import run_query


@dataclass(frozen=True)
class Selection:
    """What to export: exactly one of `iterations` (refs: 1, '1b'; None with all_=True means every one) or `query`."""

    iterations: Optional[tuple[Ref | int | str, ...]] = None
    all_: bool = False
    query: Optional[str] = None

    def describe(self) -> str:
        if self.query:
            return "the samples returned by an SQL query over the workspace (below)"
        return "the kept samples of iteration" + ("s " if len(self.iterations or ()) != 1 else " ") + \
            ", ".join(str(i) for i in self.iterations or ())


def _refs(values) -> tuple[Ref, ...]:
    try:
        return tuple(sorted({Ref.parse(v) for v in values}))
    except ValueError as exc:
        raise RestemError(f"--iteration: {exc}") from None


def _listing(refs) -> str:
    return "[" + ", ".join(str(r) for r in refs) + "]"


def check_selection(sel: Selection, available: list[Ref]) -> Selection:
    """Resolve `--all` to the iterations and steps present; RestemError for an empty or contradictory choice."""
    given = sum([bool(sel.iterations), sel.all_, bool(sel.query)])
    if given != 1:
        raise RestemError("choose what to export with exactly one of --iteration N (repeatable), --all, or "
                          "--query SQL (e.g. `restem export --iteration 2 --output exports/iter2`)")
    if sel.query:
        return sel
    if not available:
        raise RestemError("no data/iter<i>/kept.parquet in this workspace; run `dvc repro` (or `dvc pull`) first")
    if sel.all_:
        return Selection(iterations=tuple(sorted(available)))
    wanted = _refs(sel.iterations)
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise RestemError(f"iteration {missing[0]}: data/{missing[0].folder}/kept.parquet not found; iterations "
                          f"and steps with kept samples here: {_listing(sorted(available))} (run `dvc repro` or "
                          "`dvc pull` for the others)")
    return Selection(iterations=wanted)


_ROWS_SQL = """
WITH sel AS ({selection}),
sc AS (
  SELECT sample_id, purpose,
         string_agg(DISTINCT verifier, ', ' ORDER BY verifier) AS verifier,
         min(reward) AS score_reward,
         -- several verifiers: one false step check makes the reasoning wrong
         CASE WHEN bool_or(steps_valid = false) THEN false WHEN bool_or(steps_valid) THEN true END AS steps_valid
  FROM scores GROUP BY ALL),
-- a sample kept by an iteration and by its ReST step: the first filter's rule in run order
-- the kept prompt: a rationalized row (rule 'rationalized;...') is trained on without the hint its sample saw
k AS (SELECT sample_id, arg_min(rule, ref) AS rule, arg_min(reward, ref) AS reward, arg_min(prompt, ref) AS prompt
      FROM kept
      {kept_refs} GROUP BY 1),
p AS (SELECT problem_id, min(difficulty) AS difficulty, min(source) AS source, any_value(prompt) AS question
      FROM problems GROUP BY 1)  -- min: a problem in two files (demos and pool) gets one source, the same each run
SELECT s.sample_id, s.problem_id, s.iteration, s.purpose, coalesce(k.prompt, s.prompt) AS prompt, s.completion, s.policy, s.engine,
       s.temperature, s.seed, p.difficulty, p.source, p.question, sc.verifier, coalesce(k.reward, sc.score_reward) AS reward,
       sc.steps_valid, k.rule, s.finish_reason, pr.pass_rate
FROM (SELECT DISTINCT sample_id FROM sel) q
JOIN samples s USING (sample_id)
LEFT JOIN pass_rates pr ON pr.problem_id = s.problem_id AND pr.ref = s.ref AND s.purpose = 'grow'
LEFT JOIN sc ON sc.sample_id = s.sample_id AND sc.purpose = s.purpose
LEFT JOIN k ON k.sample_id = s.sample_id
LEFT JOIN p ON p.problem_id = s.problem_id
-- a sample id in both a grow and an eval table: the grow row wins ('grow' > 'eval')
QUALIFY row_number() OVER (PARTITION BY s.sample_id ORDER BY s.purpose DESC) = 1
ORDER BY s.iteration, s.problem_id, s.sample_id
"""


def sql_refs(refs) -> str:
    return ", ".join(f"'{r}'" for r in refs)  # a Ref prints as digits and letters only


def select_rows(con, sel: Selection) -> list[dict]:
    """The exported rows with what the card needs (policy, engine, verifier, steps_valid, ...), sorted."""
    if sel.query:
        probe = run_query(con, f"SELECT * FROM ({sel.query.strip().rstrip(';')}) LIMIT 0")
        if "sample_id" not in probe.column_names:
            raise RestemError(f"--query must return a `sample_id` column; it returns {probe.column_names} "
                              "(e.g. --query \"SELECT sample_id FROM kept WHERE iteration = 2\")")
        selection, kept_refs = f"SELECT sample_id FROM ({sel.query.strip().rstrip(';')})", ""
    else:
        kept_refs = f"WHERE ref IN ({sql_refs(sel.iterations)})"
        selection = f"SELECT sample_id FROM kept {kept_refs}"
    wanted = run_query(con, f"SELECT count(DISTINCT sample_id) AS n FROM ({selection})").column("n")[0].as_py()
    rows = run_query(con, _ROWS_SQL.format(selection=selection, kept_refs=kept_refs)).to_pylist()
    if not wanted:
        raise RestemError("the selection is empty: nothing to export" + (" (check the query with `restem sql`)"
                                                                          if sel.query else ""))
    if len(rows) != wanted:
        raise RestemError(f"{wanted - len(rows)} of the {wanted} selected sample ids are in no samples table; "
                          "select ids from `kept`, `samples` or `graded` (see `restem sql --schema`)")
    return rows
