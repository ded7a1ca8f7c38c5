"""The data card (`README.md`) of an exported data set: its YAML header (configs, splits, features,
license) and a body recording the lineage of every row, gathered here from the workspace tables,
restem.json, dvc.lock and git. The card has no timestamps and every listing in it is sorted.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Optional

import pyarrow as pa
import yaml

from restem.schemas.errors import RestemError
from restem.schemas.refs import Ref
from restem.schemas.tables import truncated
from restem.workspace import DECONTAM_FILE, PROBLEMS, TABLES, iter_dir, model_dir
from restem.publish.layout import CONFIGS, MESSAGE_TYPE, SCHEMAS, TRACE_COLUMNS
from restem.publish.selection import Selection, sql_refs
from restem.query.sql import discover, run_query


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
    ref_list = sql_refs(refs)
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
    paths = [PROBLEMS.as_posix()]  # as dvc.lock names them (restem/workspace.py's layout)
    for r in refs:
        names = ("kept", "rejected") if r.is_step else TABLES
        paths += [(iter_dir(r, Path()) / f"{n}.parquet").as_posix() for n in names]
    policy_refs = {r for p in per_iter for _, r in p["policies"] if r is not None} | {Ref(0)} | set(refs)
    paths += [model_dir(r, Path()).as_posix() for r in sorted(policy_refs) if r in models]
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
        "truncated": sum(1 for r in rows if truncated(r)),
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
    """The card's `features` list for an Arrow schema of strings, int64, float64 and the messages list."""
    out = []
    for field in schema:
        if field.type == MESSAGE_TYPE:
            out.append({"name": field.name, "list": [{"name": "role", "dtype": "string"},
                                                       {"name": "content", "dtype": "string"}]})
        else:
            out.append({"name": field.name, "dtype": {pa.string(): "string", pa.int64(): "int64",
                                                        pa.float64(): "float64"}[field.type]})
    return out


SFT_TAGS = ["restem", "rest-em", "self-training", "synthetic", "sft"]


def card_header(split_counts: dict[str, int], license_: str, name: str, configs=CONFIGS, schemas=SCHEMAS,
                tags=SFT_TAGS) -> dict:
    """The YAML header: license, configs (one per shape, the first the default) with their data files, features
    and splits."""
    total = sum(split_counts.values())
    splits = [s for s in ("train", "test") if split_counts.get(s)]
    return {
        "license": license_,
        "pretty_name": name,
        "task_categories": ["text-generation"],
        "tags": list(tags),
        "size_categories": [_size_category(total)],
        "configs": [{"config_name": c, **({"default": True} if c == configs[0] else {}),
                     "data_files": [{"split": s, "path": f"{c}/{s}-*.parquet"} for s in splits]}
                    for c in configs],
        "dataset_info": [{"config_name": c, "features": _feature_yaml(schemas[c]),
                          "splits": [{"name": s, "num_examples": split_counts[s]} for s in splits]}
                         for c in configs],
    }


def contamination_check(con, root: Path, items: list) -> dict:
    """The card's contamination record: the problems stage's check (data/problems/decontam.json, when params
    problems.decontaminate ran it) and the exported texts (`items`, restem.decontam.Item) checked here against
    the workspace's test problems with the same rule and n."""
    from restem.decontam import DEFAULT_N, build_index, overlaps, problem_items

    path = root / PROBLEMS / DECONTAM_FILE
    stage = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    n = stage["n"] if stage else DEFAULT_N
    tests = problem_items(run_query(con, "SELECT problem_id, split, subset, prompt, solution FROM problems "
                                         "WHERE split = 'test' ORDER BY subset, problem_id").to_pylist(),
                          bool(stage and stage.get("solutions")))
    hits = overlaps(items, build_index(tests, n)) if tests else []
    return {"stage": stage, "n": n, "test_sets": sorted(Counter(t.set for t in tests).items()),
            "checked": len(items), "contaminated": len({h["train_id"] for h in hits}),
            "test_items_hit": len({h["test_id"] for h in hits}), "examples": hits[:5]}


def contamination_lines(c: dict) -> list[str]:
    """The card's "Contamination check" section."""
    st = c["stage"]
    out = ["### Contamination check", "", "Word n-gram overlap with the test sets (restem/decontam.py: lowercase, "
           "punctuation removed, one shared n-gram of normalised words counts; `restem audit contamination` "
           "lists them).", ""]
    if st:
        counts = "; ".join(f"{k}: {v['contaminated']} of {v['checked']} contaminated, {v['dropped']} dropped"
                           for k, v in sorted(st["counts"].items()))
        out.append(f"- Problems stage (params `problems.decontaminate`, mode `{st['mode']}`, n = {st['n']}, "
                   + ("prompts and solutions" if st.get("solutions") else "prompts") + "), against "
                   + ", ".join(f"`{k}` ({v} items)" for k, v in sorted(st["test_sets"].items())) + f": {counts}.")
    else:
        out.append("- Problems stage: not run (params `problems.decontaminate.mode` is `none`).")
    if not c["test_sets"]:
        out.append("- Exported rows: not checked, the workspace has no test problems.")
        return out + [""]
    out.append(f"- Exported rows (prompt and completion texts), n = {c['n']}, against the test problems of "
               + ", ".join(f"`{k}` ({v} items)" for k, v in c["test_sets"]) + f": {c['contaminated']} of "
               f"{c['checked']} share an n-gram with {c['test_items_hit']} test item(s).")
    if c["examples"]:
        out += ["", _table(["exported row", "test item", "shared n-grams", "first shared n-gram"],
                           [[f"`{h['train_id']}`", f"`{h['test_id']}`", h["shared"], h["ngram"]]
                            for h in c["examples"]])]
    return out + [""]


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return "–" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _params_block(params: dict) -> str:
    return "`" + json.dumps(params, sort_keys=True, separators=(", ", ": ")) + "`" if params else "not in dvc.lock"


def files_lines(split_counts: dict[str, int], unit: str, jsonl: bool, config: str, after: tuple[str, ...] = ()
                ) -> list[str]:
    """The card's lines on splits and files, and how to load config `config` offline (`after`: more lines of that
    snippet), shared by the SFT card and the preference-pair card."""
    return ["Splits: " + ", ".join(f"`{k}` ({v} {unit})" for k, v in sorted(split_counts.items()) if v)
            + (" (whole problems are assigned to one split by a hash of `problem_id`)" if len(split_counts) > 1 else "")
            + ". Files are Parquet" + (", with the same rows as JSONL beside each shard" if jsonl else "") + ".", "",
            "```python", "from datasets import load_dataset",
            f"ds = load_dataset(\"parquet\", data_files={{\"train\": \"{config}/train-*.parquet\"}})",
            *after, "```", ""]


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
           *files_lines(split_counts, "rows", jsonl, "prompt_completion"),
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
            f"- Truncated rows (cut off at max_new_tokens, finish_reason `length`): {lin['truncated']} of {total}"
            + (" (the filter keeps them only with `filter.keep_truncated: true`; they end mid-answer)"
               if lin["truncated"] else ""),
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
            *contamination_lines(lin["contamination"]),
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
