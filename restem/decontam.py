"""Decontamination: word n-gram overlap between training text and test sets, the one rule for the problems
stage (`problems.decontaminate`), `restem audit contamination` and the data card of `restem export`.

Rule. Text is normalised (Unicode NFKC, lowercase, every character that is not a letter or digit made a space,
whitespace split) and cut into word n-grams (n = 8 by default, as open-r1 and s1 use). A training item is
contaminated when it shares at least one n-gram with a test item. Each field of an item (prompt, solution, ...)
is cut on its own, so no n-gram spans two fields. A field shorter than n words counts as one n-gram of all its
words, so an exact copy of a short problem is still caught. An n-gram found in more than half of the test items
of a set (and in at least 5) is template text shared by the prompts, not evidence: it is ignored and counted.

Inputs are `Item`s (set name, id, texts); the output is one row per (training item, test item) pair that
shares n-grams, with the count and the first shared n-gram in the training text.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from restem.schemas.errors import RestemError

DEFAULT_N = 8
_NOT_WORD = re.compile(r"[\W_]+")  # punctuation, symbols and underscores become word breaks
_TEMPLATE_MIN_ITEMS = 5
_SNIPPET = 160


@dataclass(frozen=True)
class Item:
    """One training or test item: the set it belongs to (e.g. 'train', 'test/in_dist', 'aime.jsonl'), its id
    (problem_id, sample_id or 'line 12'), and its texts (one per field)."""

    set: str
    id: str
    texts: tuple[str, ...]


def words(text: str) -> list[str]:
    """The normalised words of `text`."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()


def ngrams(text: str, n: int = DEFAULT_N) -> list[str]:
    """The word n-grams of `text` in order (repeats kept); a text of fewer than n words is one n-gram."""
    if n < 1:
        raise RestemError(f"decontamination: n is {n}; give a positive n-gram length such as 8")
    w = words(text)
    if not w:
        return []
    if len(w) < n:
        return [" ".join(w)]
    return [" ".join(w[i:i + n]) for i in range(len(w) - n + 1)]


def item_ngrams(item: Item, n: int) -> list[str]:
    """The n-grams of every field of `item`, fields in order, each n-gram once (first occurrence)."""
    return list(dict.fromkeys(g for t in item.texts if t for g in ngrams(t, n)))


@dataclass
class Index:
    """The test side: n-gram -> indexes of the test items holding it, without the template n-grams."""

    items: list[Item]
    n: int
    grams: dict[str, list[int]]
    template: dict[str, int]  # test set -> template n-grams ignored there


def build_index(test_items: Sequence[Item], n: int = DEFAULT_N) -> Index:
    grams: dict[str, list[int]] = {}
    for i, item in enumerate(test_items):
        for g in item_ngrams(item, n):
            grams.setdefault(g, []).append(i)
    sizes = Counter(item.set for item in test_items)
    template: Counter = Counter()
    for g in list(grams):
        per_set = Counter(test_items[i].set for i in grams[g])
        common = [s for s, k in per_set.items() if k >= _TEMPLATE_MIN_ITEMS and k > sizes[s] / 2]
        if common:
            template.update(common)
            grams[g] = [i for i in grams[g] if test_items[i].set not in common]
            if not grams[g]:
                del grams[g]
    return Index(list(test_items), n, grams, dict(sorted(template.items())))


def _snippet(item: Item) -> str:
    text = " ".join(t for t in item.texts if t)
    return text if len(text) <= _SNIPPET else text[:_SNIPPET - 3] + "..."


def overlaps(train_items: Iterable[Item], index: Index) -> list[dict]:
    """One row per (training item, test item) sharing n-grams, in training order then test order: sets, ids,
    `shared` (distinct shared n-grams), `ngram` (the first in the training text) and text snippets."""
    rows = []
    for item in train_items:
        hits: dict[int, list] = {}
        for g in item_ngrams(item, index.n):
            for i in index.grams.get(g, ()):
                hit = hits.setdefault(i, [0, g])
                hit[0] += 1
        for i in sorted(hits):
            test = index.items[i]
            rows.append({"train_set": item.set, "train_id": item.id, "test_set": test.set, "test_id": test.id,
                         "shared": hits[i][0], "ngram": hits[i][1],
                         "train_text": _snippet(item), "test_text": _snippet(test)})
    return rows


def summarise(train_items: Sequence[Item], index: Index, rows: list[dict]) -> list[dict]:
    """Per (training set, test set): items on each side, contaminated training items, test items hit, pairs."""
    train_sizes = Counter(i.set for i in train_items)
    test_sizes = Counter(i.set for i in index.items)
    out = []
    for ts in sorted(train_sizes):
        for es in sorted(test_sizes):
            pair = [r for r in rows if r["train_set"] == ts and r["test_set"] == es]
            out.append({"train_set": ts, "train_items": train_sizes[ts], "test_set": es,
                        "test_items": test_sizes[es], "n": index.n,
                        "contaminated_train_items": len({r["train_id"] for r in pair}),
                        "test_items_hit": len({r["test_id"] for r in pair}), "pairs": len(pair),
                        "template_ngrams_ignored": index.template.get(es, 0)})
    return out


def contaminated_ids(rows: list[dict]) -> dict[str, set[str]]:
    """Training set -> ids of its contaminated items."""
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["train_set"], set()).add(r["train_id"])
    return out


def file_items(path: Path, fields: Sequence[str], set_name: str | None = None) -> list[Item]:
    """Items of a JSONL or Parquet file: each record's `fields` (strings; a missing or null field is skipped, a
    record with none of them is an error naming the file and line)."""
    from restem.schemas.io import read_records, record_unit

    if not fields:
        raise RestemError(f"{path}: name the field(s) to read, e.g. --field question")
    items = []
    for no, rec in read_records(path):
        texts = tuple(str(rec[f]) for f in fields if rec.get(f) is not None)
        if not texts:
            raise RestemError(f"{path}, {record_unit(path)} {no}: none of the fields {list(fields)} is there "
                              f"(fields present: {sorted(rec)}); name the text field(s) to compare")
        items.append(Item(set_name or Path(path).name, f"{record_unit(path)} {no}", texts))
    if not items:
        raise RestemError(f"{path}: no records to compare")
    return items


# ------------------------------------------------------------------------------ the problems stage


def problem_items(problems, solutions: bool = False) -> list[Item]:
    """Items of Problem rows (or dicts): the prompt, and with `solutions` the gold solution where present; set =
    'test/<subset>' for test rows, the split for the others. Solutions are off by default: worked solutions full of
    numbers share 8-grams of arithmetic by chance (GSM8K train vs test: 812 training problems with solutions,
    94 on the questions alone, most of the difference runs of numbers such as `x 2 3 60 2 3 40 40`)."""
    out = []
    for p in problems:
        p = p if isinstance(p, dict) else p.model_dump()
        name = f"test/{p['subset']}" if p["split"] == "test" else p["split"]
        out.append(Item(name, p["problem_id"], (p["prompt"], (p.get("solution") or "") if solutions else "")))
    return out


def against_items(spec, root: Path) -> list[Item]:
    """The benchmark files of params `problems.decontaminate.against`, each in inputs/decontam/ (tracked by DVC)."""
    from restem.workspace import user_input

    items = []
    for k, f in enumerate(spec.against):
        path = user_input(f.path, "decontam", f"problems.decontaminate.against[{k}].path", root)
        items += file_items(path, f.fields)
    return items


def decontaminate_problems(tables: dict[str, list], spec, root: Path) -> tuple[dict[str, list], dict | None]:
    """The problems stage's check (params `problems.decontaminate`, `spec`): Grow pool and demonstrations against
    the test split and the `against` files. Mode none: tables unchanged, no record. Mode report: the record
    only. Mode drop: contaminated train and demo problems removed too. Returns (tables, record)."""
    from restem.workspace import log

    if spec.mode == "none":
        return tables, None
    tests = problem_items(tables["test"], spec.solutions) + against_items(spec, root)
    index = build_index(tests, spec.n)
    train = problem_items(tables["train"], spec.solutions) + problem_items(tables["demos"], spec.solutions)
    rows = overlaps(train, index)
    bad = contaminated_ids(rows)
    split_set = {"train": "train", "demos": "demo"}
    counts = {split: {"checked": len(tables[split]), "contaminated": len(bad.get(s, ())),
                      "dropped": len(bad.get(s, ())) if spec.mode == "drop" else 0}
              for split, s in split_set.items()}
    if spec.mode == "drop":
        tables = dict(tables)
        for split, s in split_set.items():
            tables[split] = [p for p in tables[split] if p.problem_id not in bad.get(s, set())]
        if not tables["train"]:
            raise RestemError("problems.decontaminate: every Grow-pool problem overlaps a test set, nothing is "
                              "left to train on; check the files, or raise problems.decontaminate.n")
    record = {
        "mode": spec.mode, "n": spec.n, "solutions": spec.solutions,
        "test_sets": dict(sorted(Counter(i.set for i in tests).items())),
        "counts": counts,
        "template_ngrams_ignored": index.template,
        "contaminated": {split: sorted(bad.get(s, ())) for split, s in split_set.items()},
        "examples": [{k: r[k] for k in ("train_set", "train_id", "test_set", "test_id", "shared", "ngram")}
                     for r in rows[:20]],
    }
    log(f"problems: decontamination (n={spec.n}, {spec.mode}): contaminated train {counts['train']['contaminated']}, "
        f"demos {counts['demos']['contaminated']}; dropped {counts['train']['dropped'] + counts['demos']['dropped']}")
    return tables, record

