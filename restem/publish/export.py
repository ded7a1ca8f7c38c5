"""`restem export`: kept samples as a Hugging Face data set folder, with a data card that records lineage.

Input: a workspace (as `dvc repro` or `dvc pull` leaves it) and a selection: the kept samples of some
iterations or ReST steps (`--iteration 1`, `--iteration 1b`, repeatable), of every iteration and step
(`--all`), or any SQL over the `restem sql` views that returns a `sample_id` column (`--query`).

Output folder (the layout `datasets.load_dataset` and the Hub read):

    README.md                                   data card: YAML header (configs, splits, features,
                                                license) and a body with the lineage of every row
    prompt_completion/<split>-00000-of-0000N.parquet   prompt, completion + trace columns
    messages/<split>-00000-of-0000N.parquet            chat `messages` (user, assistant) + trace columns
    (with --jsonl, the same rows as .jsonl beside each Parquet shard)

Splits: `train`, and `test` when `--test-fraction` > 0 (whole problems go to one side, chosen by a hash
of the problem id, so no problem leaks across). Every row keeps `sample_id` and `problem_id`.

The same inputs give the same bytes: rows are sorted, Parquet settings are pinned (schemas.io), the card
has no timestamps, and every listing in it is sorted.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pyarrow as pa
import typer
import yaml

from restem.cli.errors import user_errors
from restem.schemas.errors import RestemError
from restem.schemas.io import atomic_dir, write_table, write_text
from restem.schemas.refs import Ref
from restem.query.sql import connect, discover, run_query

CONFIGS = ("prompt_completion", "messages")
TRACE_COLUMNS = [
    ("sample_id", pa.string(), "content hash of the sample; joins `samples`, `scores`, `kept`"),
    ("problem_id", pa.string(), "content hash of the prompt and reference; joins `problems`"),
    ("iteration", pa.int64(), "Grow iteration of the sample; for eval rows, the evaluated model's"),
    ("difficulty", pa.int64(), "difficulty level of the problem, null when the task has none"),
]
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMAS = {
    "prompt_completion": pa.schema([("prompt", pa.string()), ("completion", pa.string())]
                                   + [(n, t) for n, t, _ in TRACE_COLUMNS]),
    "messages": pa.schema([("messages", MESSAGE_TYPE)] + [(n, t) for n, t, _ in TRACE_COLUMNS]),
}
DEFAULT_SHARD_ROWS = 100_000
_LICENSE_OF_SOURCE = {"arithmetic": "apache-2.0"}  # the embedded generator's problems are this project's


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


# ------------------------------------------------------------------------------------------ selection


def _refs(values) -> tuple[Ref, ...]:
    try:
        return tuple(sorted({Ref.parse(v) for v in values}))
    except ValueError as exc:
        raise RestemError(f"--iteration: {exc}") from None


def _listing(refs) -> str:
    return "[" + ", ".join(str(r) for r in refs) + "]"


def _check_selection(sel: Selection, available: list[Ref]) -> Selection:
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
k AS (SELECT sample_id, arg_min(rule, ref) AS rule, arg_min(reward, ref) AS reward FROM kept
      {kept_refs} GROUP BY 1),
p AS (SELECT problem_id, any_value(difficulty) AS difficulty, any_value(source) AS source FROM problems GROUP BY 1)
SELECT s.sample_id, s.problem_id, s.iteration, s.purpose, s.prompt, s.completion, s.policy, s.engine,
       s.temperature, s.seed, p.difficulty, p.source, sc.verifier, coalesce(k.reward, sc.score_reward) AS reward,
       sc.steps_valid, k.rule
FROM (SELECT DISTINCT sample_id FROM sel) q
JOIN samples s USING (sample_id)
LEFT JOIN sc ON sc.sample_id = s.sample_id AND sc.purpose = s.purpose
LEFT JOIN k ON k.sample_id = s.sample_id
LEFT JOIN p ON p.problem_id = s.problem_id
-- a sample id in both a grow and an eval table: the grow row wins ('grow' > 'eval')
QUALIFY row_number() OVER (PARTITION BY s.sample_id ORDER BY s.purpose DESC) = 1
ORDER BY s.iteration, s.problem_id, s.sample_id
"""


def _sql_refs(refs) -> str:
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
        kept_refs = f"WHERE ref IN ({_sql_refs(sel.iterations)})"
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


# -------------------------------------------------------------------------------------------- tables


def split_of(problem_id: str, test_fraction: float) -> str:
    """`test` for a stable `test_fraction` share of problems (by a hash of the id), else `train`."""
    if test_fraction <= 0:
        return "train"
    h = int.from_bytes(hashlib.sha256(problem_id.encode("utf-8")).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


def shape_tables(rows: list[dict]) -> dict[str, pa.Table]:
    """The two SFT shapes of the same rows, in the same order."""
    trace = {n: [r[n] for r in rows] for n, _, _ in TRACE_COLUMNS}
    pc = {"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows], **trace}
    chat = {"messages": [[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
                         for r in rows], **trace}
    return {"prompt_completion": pa.table(pc, schema=SCHEMAS["prompt_completion"]),
            "messages": pa.table(chat, schema=SCHEMAS["messages"])}


def shard_names(split: str, n_rows: int, shard_rows: int) -> list[tuple[str, int, int]]:
    """(file stem, first row, row count) per shard, named as the Hub names shards."""
    count = max(1, -(-n_rows // shard_rows))
    return [(f"{split}-{i:05d}-of-{count:05d}", i * shard_rows, min(shard_rows, n_rows - i * shard_rows))
            for i in range(count)]


def _jsonl(table: pa.Table) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in table.to_pylist())


# ----------------------------------------------------------------------------------------- lineage


def git_state(root: Path) -> dict:
    """{'revision': commit or None, 'dirty': bool or None} of the repository holding `root` (read-only git)."""
    def git(*args: str) -> Optional[str]:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    if revision is None:
        return {"revision": None, "dirty": None}
    status = git("status", "--porcelain")
    return {"revision": revision.strip(), "dirty": bool(status and status.strip())}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def lock_inputs(root: Path, paths: list[str]) -> tuple[dict, list[dict]]:
    """(params per stage, [{path, md5, current}]) from `root/dvc.lock` for the given output paths.

    `current` says whether the file on disk still has the locked hash (None for folders, whose
    DVC hash is of a listing, and for paths DVC does not track).
    """
    lock_path = root / "dvc.lock"
    if not lock_path.is_file():
        return {}, [{"path": p, "md5": None, "current": None} for p in paths]
    try:
        lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RestemError(f"{lock_path}: not valid YAML ({exc}); restore it with `git checkout dvc.lock`") from None
    stage_params, outs = {}, {}
    for name, stage in (lock.get("stages") or {}).items():
        stage_params[name] = (stage.get("params") or {}).get("params.yaml", {})
        for out in stage.get("outs") or []:
            outs[out["path"]] = out.get("md5") or out.get("hash")
    found = []
    for p in paths:
        md5 = outs.get(p)
        current = None
        if md5 and not str(md5).endswith(".dir") and (root / p).is_file():
            current = _md5(root / p) == md5
        found.append({"path": p, "md5": md5, "current": current})
    return stage_params, found


def _models(root: Path) -> dict[Ref, dict]:
    out = {}
    for ref, path in discover(root).files["models"]:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # the card says "unknown" for a model it cannot read; export does not need models
        out[ref] = meta
    return out


def lineage(con, root: Path, rows: list[dict], sel: Optional[Selection] = None) -> dict:
    """Everything the card's body records, from the rows, the workspace tables, restem.json and dvc.lock.
    Sampling is told per Grow iteration; filtering per filter: each selected iteration and ReST step (a
    query's rows: their iterations)."""
    iterations = sorted({r["iteration"] for r in rows})
    refs = sorted(sel.iterations) if sel is not None and sel.iterations else [Ref(i) for i in iterations]
    models = _models(root)
    by_hash = {m.get("model_hash"): r for r, m in models.items()}
    per_iter = []
    for it in iterations:
        its = [r for r in rows if r["iteration"] == it]
        per_iter.append({
            "iteration": it,
            "policies": sorted({(r["policy"], by_hash.get(r["policy"])) for r in its}, key=str),
            "engines": sorted({r["engine"] for r in its}),
            "temperatures": sorted({r["temperature"] for r in its}),
            "seeds": (min(r["seed"] for r in its), max(r["seed"] for r in its)),
            "exported": len(its),
            # the models trained on this iteration's kept rows: its own, and those of its selected steps
            "trained": [(r, models[r].get("model_hash")) for r in refs if r.iteration == it and r in models],
        })
    ref_list = _sql_refs(refs)
    filt = run_query(con, f"""SELECT ref, 'kept' AS reason, count(*) AS n FROM kept
                              WHERE ref IN ({ref_list}) GROUP BY ALL
                              UNION ALL SELECT ref, filter_reason, count(*) FROM rejected
                              WHERE ref IN ({ref_list}) GROUP BY ALL""").to_pylist()
    con.register("_exported", pa.table({"sample_id": pa.array([r["sample_id"] for r in rows], pa.string())}))
    exported = {r["ref"]: r["n"] for r in run_query(con, f"""SELECT ref, count(DISTINCT sample_id) AS n FROM kept
                    WHERE ref IN ({ref_list}) AND sample_id IN (SELECT sample_id FROM _exported) GROUP BY 1""").to_pylist()}
    per_filter = [{"ref": r, "counts": {x["reason"]: x["n"] for x in filt if x["ref"] == str(r)},
                   # an iteration's own filter: its exported rows (as sampled); a step: those it kept
                   "exported": (len([x for x in rows if x["iteration"] == r.iteration]) if not r.is_step
                                else exported.get(str(r), 0))} for r in refs]
    # math/gsm8k rows record their answer extraction (strict | lenient) in `details`; other verifiers do not
    iter_list = ", ".join(str(i) for i in iterations)
    extraction = [r["mode"] for r in run_query(con, f"""
        SELECT DISTINCT json_extract_string(details, '$.extraction') AS mode FROM scores
        WHERE iteration IN ({iter_list}) AND json_extract_string(details, '$.extraction') IS NOT NULL
        ORDER BY 1""").to_pylist()]
    paths = ["data/problems"]
    for r in refs:
        names = ("kept", "rejected") if r.is_step else ("samples", "scores", "kept", "rejected")
        paths += [f"data/{r.folder}/{n}.parquet" for n in names]
    policy_refs = {r for p in per_iter for _, r in p["policies"] if r is not None} | {Ref(0)} | set(refs)
    paths += [f"models/{r.folder}" for r in sorted(policy_refs) if r in models]
    params, inputs = lock_inputs(root, paths)
    sources = sorted({r["source"] or "unknown" for r in rows})
    return {
        "iterations": iterations, "refs": refs, "per_iteration": per_iter, "per_filter": per_filter,
        "models": models,
        "verifiers": sorted({r["verifier"] or "none" for r in rows}),
        "extraction": extraction,
        # every selected filter's rule (a row kept by an iteration and its step carries the first one)
        "rules": sorted({r["rule"] for r in rows if r["rule"]} | set(run_query(con, f"""SELECT DISTINCT rule
                        FROM kept WHERE ref IN ({ref_list}) AND sample_id IN (SELECT sample_id FROM _exported)
                        """).column("rule").to_pylist())),
        "purposes": sorted(Counter(r["purpose"] for r in rows).items()),
        "difficulty": sorted(Counter(r["difficulty"] for r in rows).items(),
                             key=lambda kv: (kv[0] is None, kv[0] or 0)),
        "steps": Counter("false" if r["steps_valid"] is False else "true" if r["steps_valid"] else "null"
                         for r in rows),
        "stage_params": params, "inputs": inputs, "git": git_state(root), "sources": sources,
    }


# --------------------------------------------------------------------------------------------- card


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>1M" if n < 10**9 else "n>1T"  # the Hub's labels beyond 10M are coarse


def _feature_yaml(schema: pa.Schema) -> list[dict]:
    """The card's `features` list for an Arrow schema of strings, int64 and the messages list."""
    out = []
    for field in schema:
        if field.type == MESSAGE_TYPE:
            out.append({"name": field.name, "list": [{"name": "role", "dtype": "string"},
                                                       {"name": "content", "dtype": "string"}]})
        else:
            out.append({"name": field.name, "dtype": {pa.string(): "string", pa.int64(): "int64"}[field.type]})
    return out


def card_header(split_counts: dict[str, int], license_: str, name: str) -> dict:
    """The YAML header: license, configs (one per SFT shape) with their data files, features and splits."""
    total = sum(split_counts.values())
    splits = [s for s in ("train", "test") if split_counts.get(s)]
    return {
        "license": license_,
        "pretty_name": name,
        "task_categories": ["text-generation"],
        "tags": ["restem", "rest-em", "self-training", "synthetic", "sft"],
        "size_categories": [_size_category(total)],
        "configs": [{"config_name": c, **({"default": True} if c == CONFIGS[0] else {}),
                     "data_files": [{"split": s, "path": f"{c}/{s}-*.parquet"} for s in splits]}
                    for c in CONFIGS],
        "dataset_info": [{"config_name": c, "features": _feature_yaml(SCHEMAS[c]),
                          "splits": [{"name": s, "num_examples": split_counts[s]} for s in splits]}
                         for c in CONFIGS],
    }


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return "–" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _params_block(params: dict) -> str:
    return "`" + json.dumps(params, sort_keys=True, separators=(", ", ": ")) + "`" if params else "not in dvc.lock"


def card_body(sel: Selection, lin: dict, split_counts: dict[str, int], name: str, jsonl: bool) -> str:
    """The Markdown body: how to load it, the fields, and the lineage of the rows."""
    total = sum(split_counts.values())
    models, per_iter = lin["models"], lin["per_iteration"]
    g = lin["git"]
    s = lin["steps"]
    wrong = s.get("false", 0)
    base = models.get(Ref(0), {})
    out = [f"# {name}", "",
           f"{total} supervised fine-tuning rows exported by `restem export` from a ReST-EM workspace: "
           f"{sel.describe()}. Every row keeps `sample_id` and `problem_id`, the content hashes that trace it "
           "back to the workspace's `samples`, `scores`, `kept` and `problems` tables.", "",
           "## Configurations", "",
           "- `prompt_completion` (default): `prompt`, `completion`: the prompt-completion shape of SFT trainers.",
           "- `messages`: `messages` = [{role: user, content: prompt}, {role: assistant, content: completion}], "
           "the conversational shape.",
           "- both also have " + ", ".join(f"`{n}` ({d})" for n, _, d in TRACE_COLUMNS) + ".", "",
           "Splits: " + ", ".join(f"`{k}` ({v} rows)" for k, v in sorted(split_counts.items()) if v)
           + (" (whole problems are assigned to one split by a hash of `problem_id`)" if len(split_counts) > 1 else "")
           + ". Files are Parquet" + (", with the same rows as JSONL beside each shard" if jsonl else "") + ".", "",
           "```python",
           "from datasets import load_dataset",
           "ds = load_dataset(\"parquet\", data_files={\"train\": \"prompt_completion/train-*.parquet\"})",
           "```", "",
           "## Lineage", "",
           f"- Git revision: `{g['revision'] or 'not a git repository'}`"
           + ("" if g["dirty"] is None
              else f", working tree {'dirty (uncommitted changes)' if g['dirty'] else 'clean'}"),
           f"- Base model (models/iter0): `{base.get('model_hash', 'unknown')}`"
           + (f", from the checkpoint `{base['checkpoint']}`" if base.get("checkpoint") else ""),
           "- Problem sources: " + ", ".join(f"`{x}`" for x in lin["sources"]),
           "- Verifiers (name and version): " + ", ".join(f"`{v}`" for v in lin["verifiers"]),
           ]
    if lin.get("extraction"):
        out.append("- Math answer extraction (`score.extraction`, recorded in each score row's details): "
                   + ", ".join(f"`{m}`" for m in lin["extraction"]))
    out += ["- Filter rules: " + (", ".join(f"`{r}`" for r in lin["rules"]) or "none (rows not from `kept`)"),
            "- Rows by purpose: " + ", ".join(f"{p} {n}" for p, n in lin["purposes"])
            + ("; eval rows were sampled by the `evaluate` stage (params below), not by Grow"
               if any(p == "eval" for p, _ in lin["purposes"]) else "")]
    if sel.query:
        out += ["- Selection query:", "", "```sql", sel.query.strip(), "```"]
    out += ["", "### Sampling, per iteration", "",
            _table(["iteration", "policy checkpoint (model_hash)", "engine", "temperature", "seed range",
                    "rows exported", "model trained on this iteration's kept rows"],
                   [[p["iteration"],
                     ", ".join(f"`{h}`" + (f" (models/{r.folder})" if r is not None else "") for h, r in p["policies"]),
                     ", ".join(p["engines"]), ", ".join(str(t) for t in p["temperatures"]),
                     f"{p['seeds'][0]}–{p['seeds'][1]}", p["exported"],
                     ", ".join(f"`{h}`" + (f" (step {r})" if r.is_step else "") for r, h in p["trained"]) or None]
                    for p in per_iter]), "",
            "Params of each stage as recorded in dvc.lock:", ""]
    for p in per_iter:
        it = p["iteration"]
        for stage in ("grow", "score", "filter"):
            out.append(f"- `{stage}@{it}`: {_params_block(lin['stage_params'].get(f'{stage}@{it}', {}))}")
    for r in lin["refs"]:
        if r.is_step:
            out.append(f"- `filter_step@{r}`: {_params_block(lin['stage_params'].get(f'filter_step@{r}', {}))}")
    if any(p == "eval" for p, _ in lin["purposes"]):
        out.append(f"- `evaluate`: {_params_block(lin['stage_params'].get('evaluate', {}))}")
    reasons = sorted({x for f in lin["per_filter"] for x in f["counts"]} - {"kept"})
    steps = any(f["ref"].is_step for f in lin["per_filter"])
    out += ["", "### Counts", "", "Kept and dropped samples of each iteration, by reason (the whole iteration, "
            "before any selection)" + ("; a ReST step (1b) filters its iteration's samples again, and its "
                                       "`exported` counts the exported rows it kept" if steps else "") + ":", "",
            _table(["iteration", "kept"] + [f"dropped: {x}" for x in reasons] + ["exported"],
                   [[str(f["ref"]), f["counts"].get("kept", 0)] + [f["counts"].get(x, 0) for x in reasons]
                    + [f["exported"]] for f in lin["per_filter"]]),
            "", "Exported rows by problem difficulty:", "",
            _table(["difficulty", "rows"], [[d if d is not None else "none", n] for d, n in lin["difficulty"]]), "",
            "### Right answer, wrong reasoning", "",
            f"Rows whose step check failed (`scores.steps_valid = false`): {wrong} of {total}"
            f" ({wrong / total:.4f}); steps valid: {s.get('true', 0)}; not checkable (null): {s.get('null', 0)}.", "",
            "### Inputs (DVC lock hashes)", "",
            _table(["path", "md5 in dvc.lock", "file matches the lock"],
                   [[f"`{i['path']}`", f"`{i['md5']}`" if i["md5"] else None,
                     None if i["current"] is None else ("yes" if i["current"] else "NO: changed since dvc.lock")]
                    for i in lin["inputs"]]), ""]
    return "\n".join(out)


def render_card(sel: Selection, lin: dict, split_counts: dict[str, int], license_: str, name: str,
                jsonl: bool) -> str:
    header = yaml.safe_dump(card_header(split_counts, license_, name), sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n{card_body(sel, lin, split_counts, name, jsonl)}"


# ---------------------------------------------------------------------------------------------- run


def _check_output(out: Path, root: Path, force: bool) -> None:
    """RestemError unless `out` is a new or empty folder (or --force), and never the workspace itself."""
    out_r, root_r = out.resolve(), root.resolve()
    if out_r == root_r or out_r in root_r.parents:
        raise RestemError(f"--output {out}: that folder holds the workspace; give a new folder such as exports/iter2")
    if out.exists() and not out.is_dir():
        raise RestemError(f"--output {out}: is a file, not a folder; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RestemError(f"--output {out}: folder is not empty; pass --force to replace it, or choose a new folder")


def run(root: Path, out: Path, selection: Selection, *, force: bool = False, jsonl: bool = False,
        test_fraction: float = 0.0, shard_rows: int = DEFAULT_SHARD_ROWS, license_: Optional[str] = None,
        name: Optional[str] = None) -> dict:
    """Write the data set folder `out`; returns {'rows': n, 'splits': {split: n}, 'files': [relative paths]}.

    Every check runs before anything is written, and the folder is built aside and renamed into place,
    so an error leaves `out` as it was.
    """
    root, out = Path(root), Path(out)
    if not 0.0 <= test_fraction < 1.0:
        raise RestemError(f"--test-fraction {test_fraction}: give a share of problems in [0, 1), e.g. 0.1")
    if shard_rows < 1:
        raise RestemError(f"--shard-rows {shard_rows}: give a positive number of rows per Parquet file")
    _check_output(out, root, force)
    available = [i for i, _ in discover(root).files["kept"]]
    sel = _check_selection(selection, available)
    con = connect(root)
    try:
        rows = select_rows(con, sel)
        lin = lineage(con, root, rows, sel)
    finally:
        con.close()
    if license_ is None:
        licenses = {_LICENSE_OF_SOURCE.get(s) for s in lin["sources"]}
        license_ = licenses.pop() if len(licenses) == 1 and None not in licenses else "unknown"
        if license_ == "unknown":
            print("warning: problems come from your own files; pass --license with the data's license "
                  "(the card says `unknown`)", file=sys.stderr)
    name = name or ("restem " + ("selection" if sel.query else "kept samples, iteration"
                                 + ("s " if len(lin["refs"]) > 1 else " ")
                                 + ", ".join(str(r) for r in lin["refs"])))
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(split_of(r["problem_id"], test_fraction), []).append(r)
    split_counts = {s: len(v) for s, v in sorted(by_split.items())}
    files = []
    with atomic_dir(out) as tmp:
        for split, split_rows in sorted(by_split.items()):
            for config, table in shape_tables(split_rows).items():
                for stem, start, n in shard_names(split, table.num_rows, shard_rows):
                    shard = table.slice(start, n)
                    write_table(tmp / config / f"{stem}.parquet", shard)
                    files.append(f"{config}/{stem}.parquet")
                    if jsonl:
                        write_text(tmp / config / f"{stem}.jsonl", _jsonl(shard))
                        files.append(f"{config}/{stem}.jsonl")
        write_text(tmp / "README.md", render_card(sel, lin, split_counts, license_, name, jsonl))
        files.append("README.md")
    return {"rows": len(rows), "splits": split_counts, "files": sorted(files)}


def export_command(
    output: Path = typer.Option(..., "--output", "-o", help="folder to write the data set to (new or empty)"),
    iteration: Optional[list[str]] = typer.Option(None, "--iteration", "-i",
                                                  help="export the kept samples of this iteration or ReST step, "
                                                       "e.g. 2 or 1b (repeatable)"),
    all_: bool = typer.Option(False, "--all", help="export the kept samples of every iteration and step"),
    query: Optional[str] = typer.Option(None, "--query", "-q",
                                        help="SQL over the `restem sql` views returning a sample_id column"),
    root: Path = typer.Option(Path("."), "--root", help="workspace folder"),
    jsonl: bool = typer.Option(False, "--jsonl", help="also write each shard as JSONL"),
    test_fraction: float = typer.Option(0.0, "--test-fraction",
                                        help="share of problems held out as a `test` split (0: train only)"),
    shard_rows: int = typer.Option(DEFAULT_SHARD_ROWS, "--shard-rows", help="rows per Parquet shard"),
    license_: Optional[str] = typer.Option(None, "--license",
                                           help="license id for the card (default: apache-2.0 for the embedded task, "
                                                "else unknown)"),
    name: Optional[str] = typer.Option(None, "--name", help="the card's title (pretty_name)"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty output folder"),
) -> None:
    """Export kept samples as a Hugging Face data set (Parquet, prompt/completion and messages) with a data card."""
    with user_errors():
        result = run(root, output, Selection(iterations=tuple(iteration) if iteration else None, all_=all_,
                                             query=query),
                     force=force, jsonl=jsonl, test_fraction=test_fraction, shard_rows=shard_rows,
                     license_=license_, name=name)
    splits = ", ".join(f"{k}: {v}" for k, v in result["splits"].items())
    typer.echo(f"wrote {result['rows']} rows ({splits}) to {output}: {len(result['files'])} files")
