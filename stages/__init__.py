"""The stage entry points of the loop (problems, base, reward_model, voters, grow, score, filter, improve,
evaluate, plots), imported as `restem.stages`.

Each module is thin: a typed `run(params, ...)` that reads its inputs, calls the library (`restem/`,
`restem.verifiers`) and writes its outputs; tests call `run`. DVC runs `python -m restem.stages.<name>`, which is
the same typer command as `restem <name>` (restem/cli/stages.py). No stage imports another.
"""
