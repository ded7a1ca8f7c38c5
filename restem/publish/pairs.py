"""`restem export --pairs`: preference pairs (prompt, chosen, rejected) from the correct and incorrect Grow
samples of the same problem and iteration, the data V-STaR's verifier and Iterative RPO's DPO step train on,
in the layout TRL's DPO trainer reads.

Verdicts: a sample is correct when every verifier row of it says correct, incorrect when every row is correct
or incorrect and one says incorrect; a sample with an unverifiable or error verdict (or none) is skipped, and
reward-model rows (`rm:` verifiers) are not verdicts.

Pairing rule, per (iteration, problem): the correct samples and the incorrect ones, each sorted by sample_id with
repeated completion texts dropped (the first sample_id of a text stays), C and R of them; pair i (i = 0, 1, ...)
is (correct[i mod C], incorrect[i mod R]), for i below min(pairs_per_problem, max(C, R)). Every sample is used
before any is reused, and no pair repeats (i mod C, i mod R differ for i below lcm(C, R) >= max(C, R)).

Configurations: `preference` (strings: prompt, chosen, rejected) and `preference_messages` (TRL's conversational
form: prompt = [user turn], chosen and rejected = [assistant turn]), both with the lineage columns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from restem.publish.layout import MESSAGE_TYPE
from restem.query.sql import run_query
from restem.schemas.errors import RestemError

DEFAULT_PAIRS_PER_PROBLEM = 4
PAIR_CONFIGS = ("preference", "preference_messages")
LINEAGE = [
    ("problem_id", pa.string(), "content hash of the prompt and reference; joins `problems`"),
    ("chosen_sample_id", pa.string(), "the correct sample (`samples.sample_id`)"),
    ("rejected_sample_id", pa.string(), "the incorrect sample of the same problem and iteration"),
    ("iteration", pa.int64(), "Grow iteration of both samples"),
    ("difficulty", pa.int64(), "difficulty level of the problem, null when the task has none"),
]
PAIR_SCHEMAS = {
    "preference": pa.schema([("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())]
                            + [(n, t) for n, t, _ in LINEAGE]),
    "preference_messages": pa.schema([("prompt", MESSAGE_TYPE), ("chosen", MESSAGE_TYPE), ("rejected", MESSAGE_TYPE)]
                                     + [(n, t) for n, t, _ in LINEAGE]),
}

_SAMPLES_SQL = """
WITH cand AS ({candidates}),
v AS (
  SELECT sample_id, count(*) AS verdicts, count(*) FILTER (WHERE verdict = 'correct') AS n_right,
         count(*) FILTER (WHERE verdict = 'incorrect') AS n_wrong
  FROM scores WHERE purpose = 'grow' AND NOT is_reward_model(verifier) GROUP BY 1),
p AS (SELECT problem_id, any_value(difficulty) AS difficulty, any_value(prompt) AS question FROM problems GROUP BY 1)
SELECT s.sample_id, s.problem_id, s.iteration, s.prompt, s.completion, p.difficulty, p.question,
       CASE WHEN v.n_right = v.verdicts THEN true WHEN v.n_right + v.n_wrong = v.verdicts THEN false END AS correct
FROM samples s
JOIN (SELECT DISTINCT sample_id FROM cand) c USING (sample_id)
LEFT JOIN v ON v.sample_id = s.sample_id
LEFT JOIN p ON p.problem_id = s.problem_id
WHERE s.purpose = 'grow'
ORDER BY s.iteration, s.problem_id, s.sample_id
"""


@dataclass
class PairStats:
    """What the card says about the pairing: problems by outcome, samples by verdict, pairs."""

    problems: int = 0
    with_pairs: int = 0
    only_correct: int = 0
    only_incorrect: int = 0
    none_judged: int = 0
    correct: int = 0
    incorrect: int = 0
    skipped: int = 0  # unverifiable, error or no verdict
    repeated_text: int = 0
    pairs: int = 0


def candidate_samples(con, iterations=None, query: str | None = None) -> list[dict]:
    """Grow samples of the given iterations (or the sample ids an SQL query returns), each with `correct`
    (True, False, or None when unjudged), sorted by iteration, problem, sample_id."""
    if query:
        probe = run_query(con, f"SELECT * FROM ({query.strip().rstrip(';')}) LIMIT 0")
        if "sample_id" not in probe.column_names:
            raise RestemError(f"--query must return a `sample_id` column; it returns {probe.column_names}")
        candidates = f"SELECT sample_id FROM ({query.strip().rstrip(';')})"
    else:
        listed = ", ".join(str(int(i)) for i in iterations)
        candidates = f"SELECT sample_id FROM samples WHERE purpose = 'grow' AND iteration IN ({listed})"
    return run_query(con, _SAMPLES_SQL.format(candidates=candidates)).to_pylist()


def _distinct(rows: list[dict]) -> tuple[list[dict], int]:
    seen, out = set(), []
    for r in rows:  # already sorted by sample_id
        if r["completion"] not in seen:
            seen.add(r["completion"])
            out.append(r)
    return out, len(rows) - len(out)


def make_pairs(samples: list[dict], pairs_per_problem: int = DEFAULT_PAIRS_PER_PROBLEM
               ) -> tuple[list[dict], dict[int, PairStats]]:
    """The pairs of `samples` (rows of `candidate_samples`) by the module's rule, sorted by iteration, problem,
    then pair index; and the counts per iteration."""
    if pairs_per_problem < 1:
        raise RestemError(f"--pairs-per-problem {pairs_per_problem}: give a positive number of pairs per problem")
    groups: dict[tuple, list[dict]] = {}
    for s in samples:
        groups.setdefault((s["iteration"], s["problem_id"]), []).append(s)
    per_iteration: dict[int, PairStats] = {}
    pairs = []
    for key in sorted(groups):
        rows = sorted(groups[key], key=lambda r: r["sample_id"])
        stats = per_iteration.setdefault(key[0], PairStats())
        stats.problems += 1
        verdicts = Counter(r["correct"] for r in rows)
        stats.correct += verdicts[True]
        stats.incorrect += verdicts[False]
        stats.skipped += verdicts[None]
        chosen, dup_c = _distinct([r for r in rows if r["correct"] is True])
        rejected, dup_r = _distinct([r for r in rows if r["correct"] is False])
        stats.repeated_text += dup_c + dup_r
        if not chosen or not rejected:
            if chosen:
                stats.only_correct += 1
            elif rejected:
                stats.only_incorrect += 1
            else:
                stats.none_judged += 1
            continue
        stats.with_pairs += 1
        for i in range(min(pairs_per_problem, max(len(chosen), len(rejected)))):
            c, r = chosen[i % len(chosen)], rejected[i % len(rejected)]
            stats.pairs += 1
            pairs.append({"prompt": c["prompt"], "question": c.get("question") or c["prompt"],
                          "chosen": c["completion"], "rejected": r["completion"],
                          "problem_id": key[1], "chosen_sample_id": c["sample_id"],
                          "rejected_sample_id": r["sample_id"], "iteration": key[0], "difficulty": c["difficulty"]})
    return pairs, per_iteration


def pair_tables(rows: list[dict]) -> dict[str, pa.Table]:
    """The two preference shapes of the same pairs, in the same order."""
    lineage = {n: [r[n] for r in rows] for n, _, _ in LINEAGE}
    plain = {k: [r[k] for r in rows] for k in ("prompt", "chosen", "rejected")}

    def turn(role: str, text: str) -> list[dict]:
        return [{"role": role, "content": text}]

    # The user turn is the problem's raw question: a chat-templated prompt (params prompt.style: chat) would carry
    # the template's markup into a conversation that gets templated again when trained on.
    chat = {"prompt": [turn("user", r.get("question") or r["prompt"]) for r in rows],
            "chosen": [turn("assistant", r["chosen"]) for r in rows],
            "rejected": [turn("assistant", r["rejected"]) for r in rows]}
    return {"preference": pa.table({**plain, **lineage}, schema=PAIR_SCHEMAS["preference"]),
            "preference_messages": pa.table({**chat, **lineage}, schema=PAIR_SCHEMAS["preference_messages"])}


# ------------------------------------------------------------------------------------ export and card


def _iterations(selection, available: list[int]) -> list[int]:
    """The Grow iterations to pair: --all, or each --iteration (a ReST step '1b' pairs its iteration's samples)."""
    from restem.schemas.refs import Ref

    given = sum([bool(selection.iterations), selection.all_, bool(selection.query)])
    if given != 1:
        raise RestemError("choose what to pair with exactly one of --iteration N (repeatable), --all, or --query SQL "
                          "(e.g. `restem export --pairs --iteration 1 --output exports/pairs1`)")
    if not available:
        raise RestemError("no data/iter<i>/samples.parquet in this workspace; run `dvc repro` (or `dvc pull`) first")
    if selection.all_:
        return sorted(available)
    try:
        wanted = sorted({Ref.parse(v).iteration for v in selection.iterations})
    except ValueError as exc:
        raise RestemError(f"--iteration: {exc}") from None
    missing = [i for i in wanted if i not in available]
    if missing:
        raise RestemError(f"iteration {missing[0]}: data/iter{missing[0]}/samples.parquet not found; iterations with "
                          f"Grow samples here: {sorted(available)} (run `dvc repro` or `dvc pull` for the others)")
    return wanted


def export_pairs(root, selection, per_problem: int, test_fraction: float, license_, name, jsonl: bool):
    """(pair rows, their shapes, the card) for `restem export --pairs`."""
    from restem.decontam import Item
    from restem.publish.card import card_header, contamination_check, lineage
    from restem.publish.export import _by_split, _license, split_counts
    from restem.publish.selection import Selection, select_rows
    from restem.query.sql import connect, discover
    from restem.schemas.refs import Ref

    available = sorted({r.iteration for r, _ in discover(root).files["samples_grow"] if r is not None})
    iterations = None if selection.query else _iterations(selection, available)
    if selection.query and (selection.iterations or selection.all_):
        _iterations(selection, available)  # the error for a contradictory choice
    con = connect(root)
    try:
        samples = candidate_samples(con, iterations, selection.query)
        pairs, stats = make_pairs(samples, per_problem)
        if not pairs:
            raise RestemError("no problem has both a correct and an incorrect judged Grow sample in the selection: "
                              "no pairs to export (`restem audit coverage` shows problems solved by all or none)")
        used = sorted({p[k] for p in pairs for k in ("chosen_sample_id", "rejected_sample_id")})
        con.register("_pair_ids", pa.table({"sample_id": pa.array(used, pa.string())}))
        rows = select_rows(con, Selection(query="SELECT sample_id FROM _pair_ids"))
        refs = Selection(iterations=tuple(Ref(i) for i in sorted(stats)))
        lin = lineage(con, root, rows, refs)
        lin["contamination"] = contamination_check(con, root, [
            Item("exported", f"{p['chosen_sample_id']}>{p['rejected_sample_id']}",
                 (p["prompt"], p["chosen"], p["rejected"])) for p in pairs])
    finally:
        con.close()
    license_ = _license(license_, lin["sources"])
    name = name or "restem preference pairs, iteration" + ("s " if len(stats) > 1 else " ") + \
        ", ".join(str(i) for i in sorted(stats))
    counts = split_counts(_by_split(pairs, test_fraction))
    header = card_header(counts, license_, name, PAIR_CONFIGS, PAIR_SCHEMAS,
                         ["restem", "dpo", "preference", "synthetic", "rest-em"])
    import yaml

    card = "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + \
        pairs_card_body(selection, lin, stats, counts, name, per_problem, jsonl)
    return pairs, pair_tables, card


def pairs_card_body(selection, lin: dict, stats: dict[int, PairStats], split_counts: dict[str, int], name: str,
                    per_problem: int, jsonl: bool) -> str:
    from restem.publish.card import _params_block, _table, contamination_lines, files_lines
    from restem.schemas.refs import Ref

    total = sum(split_counts.values())
    g, base = lin["git"], lin["models"].get(Ref(0), {})
    what = ("the Grow samples returned by an SQL query" if selection.query else
            "the Grow samples of iteration" + ("s " if len(stats) > 1 else " ") + ", ".join(map(str, sorted(stats))))
    out = [f"# {name}", "",
           f"{total} preference pairs exported by `restem export --pairs` from a ReST-EM workspace: {what}. Each "
           "pair is a correct (`chosen`) and an incorrect (`rejected`) sample of the same problem and iteration, as "
           "the verifier judged them: the data of DPO-style training on verified samples (V-STaR, Iterative RPO).",
           "", "## Configurations", "",
           "- `preference` (default): `prompt`, `chosen`, `rejected` strings: the standard preference format of "
           "TRL's `DPOTrainer` (explicit prompt).",
           "- `preference_messages`: `prompt` = [{role: user, content}], `chosen` and `rejected` = [{role: "
           "assistant, content}]: the conversational preference format.",
           "- both also have " + ", ".join(f"`{n}` ({d})" for n, _, d in LINEAGE) + ".", "",
           *files_lines(split_counts, "pairs", jsonl, "preference",
                        ("# trl.DPOTrainer(model=..., train_dataset=ds[\"train\"], ...)",)),
           "## Pairing", "",
           "Verdicts come from the verifier rows of `scores` (reward-model rows left out): a sample is correct when "
           "every verifier says correct, incorrect when each says correct or incorrect and one says incorrect; "
           "samples with an unverifiable or error verdict are skipped. Per problem and iteration, the correct and "
           "the incorrect samples are each sorted by `sample_id`, repeated completion texts dropped; pair i is "
           f"(correct[i mod C], incorrect[i mod R]) for i < min({per_problem}, max(C, R)) "
           f"(`--pairs-per-problem {per_problem}`): every sample is used before any is reused, and no pair repeats.",
           "", _table(["iteration", "problems", "with pairs", "only correct", "only incorrect", "no verdict",
                       "correct samples", "incorrect samples", "skipped (unverifiable, error)",
                       "repeated texts dropped", "pairs"],
                      [[i, s.problems, s.with_pairs, s.only_correct, s.only_incorrect, s.none_judged, s.correct,
                        s.incorrect, s.skipped, s.repeated_text, s.pairs] for i, s in sorted(stats.items())]), ""]
    if selection.query:
        out += ["Selection query:", "", "```sql", selection.query.strip(), "```", ""]
    out += ["## Lineage", "",
            f"- Git revision: `{g['revision'] or 'not a git repository'}`"
            + ("" if g["dirty"] is None else f", working tree {'dirty' if g['dirty'] else 'clean'}"),
            f"- Base model (models/iter0): `{base.get('model_hash', 'unknown')}`",
            "- Problem sources: " + ", ".join(f"`{x}`" for x in lin["sources"]),
            "- Verifiers (name and version): " + ", ".join(f"`{v}`" for v in lin["verifiers"]), "",
            _table(["iteration", "policy checkpoint (model_hash)", "engine", "temperature", "seed range",
                    "samples in pairs"],
                   [[p["iteration"], ", ".join(f"`{h}`" for h, _ in p["policies"]), ", ".join(p["engines"]),
                     ", ".join(str(t) for t in p["temperatures"]), f"{p['seeds'][0]}–{p['seeds'][1]}", p["exported"]]
                    for p in lin["per_iteration"]]), "", "Params of each stage as recorded in dvc.lock:", ""]
    for p in lin["per_iteration"]:
        for stage in (f"grow@{p['iteration']}", f"score@{p['iteration']}"):
            out.append(f"- `{stage}`: {_params_block(lin['stage_params'].get(stage, {}))}")
    out += ["", *contamination_lines(lin["contamination"]),
            "### Inputs (DVC lock hashes)", "",
            _table(["path", "md5 in dvc.lock", "file matches the lock"],
                   [[f"`{i['path']}`", f"`{i['md5']}`" if i["md5"] else None,
                     None if i["current"] is None else ("yes" if i["current"] else "NO: changed since dvc.lock")]
                    for i in lin["inputs"]]), ""]
    return "\n".join(out)
