"""The stages of the loop (problems, base, grow, score, filter, improve, evaluate) and the CLI.

Each stage module has a typed `run(...)` that tests call and a thin `main()` that DVC calls as
`python -m restem.stages.<name>`.
"""
