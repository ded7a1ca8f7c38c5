"""Stage `improve`: fine-tune on the kept samples, `models/iter<i>`.

Starts from `models/iter<init>`: the base model for ReST-EM (init 0), the previous iteration for a
warm start. The loss is on the completion tokens only. `restem.json` records the parent model, a hash
of the training rows and the loss curve.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas.hashing import content_hash, derive_seed
from schemas.io import read_rows
from schemas.params import Params, load_params
from schemas.tables import Kept
from stages.common import iter_dir, log, model_dir, parse_args, stage_main
from stages.engines import set_threads
from stages.modeling import load_policy, model_hash, save_policy
from stages.training import train_sft


def run(params: Params, iteration: int, init: int, root: Path = Path(".")) -> dict:
    set_threads(params.runtime.threads)
    kept = read_rows(iter_dir(iteration, root) / "kept.parquet", Kept)
    start = model_dir(init, root)
    model, tokenizer = load_policy(start)
    pairs = [(k["prompt"], k["completion"]) for k in kept]
    # A distinct, reproducible shuffle per iteration.
    train = params.improve.model_copy(update={"seed": derive_seed(params.improve.seed, iteration) % (2**31)})
    max_len = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    log(f"improve@{iteration}: {len(pairs)} kept samples, starting from models/iter{init}")
    train_log = train_sft(model, tokenizer, pairs, train, max_len)
    log(f"improve@{iteration}: loss {train_log[0]['loss']:.3f} -> {train_log[-1]['loss']:.3f}")
    meta = save_policy(model, tokenizer, model_dir(iteration, root), {
        "iteration": iteration,
        "parent": model_hash(start),
        "training_data": content_hash(sorted(k["sample_id"] for k in kept)),
        "params": {"improve": json.loads(params.improve.model_dump_json()), "init": init, "rows": len(pairs)},
        "train_log": train_log,
    })
    return {"rows": len(pairs), "model_hash": meta.model_hash}


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args("improve", __doc__, argv, "iteration", "init")
    run(load_params(args.params), args.iteration, args.init)


if __name__ == "__main__":
    main()
