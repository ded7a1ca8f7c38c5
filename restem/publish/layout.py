"""The folder `restem export` writes: its two configurations (SFT shapes) with their Arrow schemas, the
train/test split of problems, and the Hub's shard names.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

CONFIGS = ("prompt_completion", "messages")
TRACE_COLUMNS = [
    ("sample_id", pa.string(), "content hash of the sample; joins `samples`, `scores`, `kept`"),
    ("problem_id", pa.string(), "content hash of the prompt and reference; joins `problems`"),
    ("iteration", pa.int64(), "Grow iteration of the sample; for eval rows, the evaluated model's"),
    ("difficulty", pa.int64(), "difficulty level of the problem, null when the task has none"),
    ("pass_rate", pa.float64(), "share of the problem's samples in the sample's Grow iteration that the verifier "
     "calls correct (data/iter<i>/pass_rates.parquet; the filter's pass-rate band reads it); null for eval rows"),
]
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMAS = {
    "prompt_completion": pa.schema([("prompt", pa.string()), ("completion", pa.string())]
                                   + [(n, t) for n, t, _ in TRACE_COLUMNS]),
    "messages": pa.schema([("messages", MESSAGE_TYPE)] + [(n, t) for n, t, _ in TRACE_COLUMNS]),
}


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
    # The user turn is the problem's raw question (`question`, from the problems table): a chat-templated prompt
    # (params prompt.style: chat) would put the template's markup inside the turn, templated again when trained on.
    chat = {"messages": [[{"role": "user", "content": r.get("question") or r["prompt"]},
                          {"role": "assistant", "content": r["completion"]}] for r in rows], **trace}
    return {"prompt_completion": pa.table(pc, schema=SCHEMAS["prompt_completion"]),
            "messages": pa.table(chat, schema=SCHEMAS["messages"])}


def shard_names(split: str, n_rows: int, shard_rows: int) -> list[tuple[str, int, int]]:
    """(file stem, first row, row count) per shard, named as the Hub names shards."""
    count = max(1, -(-n_rows // shard_rows))
    return [(f"{split}-{i:05d}-of-{count:05d}", i * shard_rows, min(shard_rows, n_rows - i * shard_rows))
            for i in range(count)]


def jsonl_text(table: pa.Table) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in table.to_pylist())
