"""DVC's deps cannot drift from the code: every stage of dvc.yaml (foreach stages included) must list as deps
every file of its import closure (the module its `python -m` runs and every module of ours it imports,
transitively, lazy imports inside functions and `importlib.import_module("...")` names included), and every
workspace folder it reads. A stale "up to date" is the worst bug a cache can have: a file missing here means
`dvc repro` would skip a stage whose output an edit changes.

Pure `ast` and YAML: no stage is imported or run, so the whole check takes well under a second.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PACKAGE = "restem"  # the one import name whose code a stage runs
FOLDERS = ("stages", "schemas", "verifiers")  # top-level folders installed as restem.stages, ... (restem/__init__.py)
CODE_ROOTS = (PACKAGE, *FOLDERS)  # where a code dep lives
MODULE_NAME = re.compile(r"^%s(?:\.\w+)*$" % PACKAGE)
# The folders `restem.query.sql.discover` reads (every table of the workspace): a stage running that code must depend
# on all of them (its own outputs among them excepted).
WORKSPACE = ("data", "models", "metrics/iterations")


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The file of module `name` if it is one of ours (a module or a package's __init__), else None:
    `restem.stages.grow` is stages/grow.py, `restem.sampling.engines` restem/sampling/engines.py."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) > 1 and parts[1] in FOLDERS:
        parts = parts[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package(path: Path, root: Path) -> list[str]:
    """The package a file belongs to (for a package's __init__.py, the package itself), as import names."""
    parts = list(path.relative_to(root).parts[:-1])
    return [PACKAGE, *parts] if parts and parts[0] in FOLDERS else parts


def imported_names(path: Path, root: Path = REPO) -> set[str]:
    """Every module name `path` may import: import statements anywhere in it (inside functions too), the
    submodules named by `from package import name`, and string literals that spell a module of ours (the
    names handed to `importlib.import_module`, e.g. the verifier registry and the pool's preload list)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package(path, root)
                package = package[: len(package) - node.level + 1]
                module = ".".join(package + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.match(node.value):
            names.add(node.value)
    return names


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts) + 1)]


def closure(module: str, root: Path = REPO) -> set[Path]:
    """The files of ours that `python -m <module>` may execute, relative to `root`."""
    seen: set[Path] = set()
    todo = _with_parents(module)
    while todo:
        path = module_file(todo.pop(), root)
        if path is None or path in seen:
            continue
        seen.add(path)
        for name in imported_names(path, root):
            todo.extend(_with_parents(name))
    return {p.relative_to(root) for p in seen}


@lru_cache(maxsize=None)
def stages(root: Path = REPO) -> dict[str, dict]:
    """Stage name -> its definition (the `do` body for foreach stages), from dvc.yaml as written."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in spec.items()}


def _paths(entries: list) -> list[str]:
    """Paths of a deps or outs list (entries are strings or {path: options})."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def covered(path: Path, deps: list[str]) -> bool:
    """A file dep equal to `path` or a folder dep that holds it. Templated deps (`${...}`) are data, not code."""
    return any(path == Path(d) or Path(d) in path.parents for d in deps if "${" not in d)


def stage_module(body: dict) -> str:
    found = re.match(r"python -m ([\w.]+)", body["cmd"])
    assert found, f"cmd {body['cmd']!r}: stages run `python -m restem.stages.<name>` (DESIGN.md, section 2)"
    return found.group(1)


def missing_code(root: Path = REPO) -> dict[str, list[str]]:
    """Stage -> the files of its import closure that no dep covers."""
    gaps = {}
    for name, body in stages(root).items():
        deps = _paths(body.get("deps"))
        lost = sorted(str(p) for p in closure(stage_module(body), root) if not covered(p, deps))
        if lost:
            gaps[name] = lost
    return gaps


def test_every_stage_runs_a_module_of_ours():
    for name, body in stages().items():
        assert module_file(stage_module(body)) is not None, f"stage {name}: {body['cmd']!r} runs no module of ours"


def test_import_closure_is_covered_by_deps():
    gaps = missing_code()
    assert not gaps, "dvc.yaml: stages run code their deps do not list (add each file, or its folder):\n" + "\n".join(
        f"  {name}: {', '.join(files)}" for name, files in gaps.items())


def test_stages_running_the_query_layer_depend_on_the_whole_workspace():
    """`restem/query/sql.py` builds views over every table of the workspace; the stage running it must see them all."""
    for name, body in stages().items():
        if Path("restem/query/sql.py") not in closure(stage_module(body)):
            continue
        deps, outs = _paths(body.get("deps")), _paths(body.get("outs"))
        lost = [f for f in WORKSPACE if not covered(Path(f), deps) and not covered(Path(f), outs)]
        assert not lost, f"stage {name} reads the whole workspace (restem/query/sql.py) but lacks deps {lost}"


def test_code_deps_exist():
    """A renamed module leaves a dep DVC cannot find; it must fail here, not in the middle of `dvc repro`."""
    for name, body in stages().items():
        for dep in _paths(body.get("deps")):
            if "${" not in dep and dep.split("/")[0] in CODE_ROOTS:
                assert (REPO / dep).exists(), f"stage {name}: dep {dep} does not exist"


# ------------------------------------------------------------------- the checker itself, on a small tree


@pytest.fixture
def tree(tmp_path):
    """A package tree with a lazy import, a relative import, a registry string and an unrelated library."""
    files = {
        "restem/__init__.py": "",
        "stages/__init__.py": "",
        "stages/a.py": "import json\nfrom restem.stages import b\n\ndef f():\n    from .c import g\n",
        "stages/b.py": "REGISTRY = {'x': ('restem.verifiers.x', 'X')}\n",
        "stages/c.py": "def g():\n    pass\n",
        "stages/unused.py": "",
        "verifiers/__init__.py": "from restem.verifiers.base import V\n",
        "verifiers/base.py": "V = 1\n",
        "verifiers/x.py": "import numpy\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_closure_follows_lazy_relative_and_string_imports(tree):
    assert {str(p) for p in closure("restem.stages.a", tree)} == {
        "restem/__init__.py", "stages/__init__.py", "stages/a.py", "stages/b.py", "stages/c.py",
        "verifiers/__init__.py", "verifiers/base.py", "verifiers/x.py"}


def test_a_new_import_without_a_dep_is_reported(tree):
    (tree / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"one": {"foreach": {"1": {}}, "do": {
        "cmd": "python -m restem.stages.a --iteration ${key}",
        "deps": ["restem/__init__.py", "stages", "verifiers", "data/iter${key}"]}}}}))
    stages.cache_clear()
    assert missing_code(tree) == {}
    (tree / "stages/c.py").write_text("def g():\n    from restem.schemas.new import h\n")
    (tree / "schemas").mkdir()
    (tree / "schemas/new.py").write_text("")
    assert missing_code(tree) == {"one": ["schemas/new.py"]}
    stages.cache_clear()


# ----------------------------------------------------- results-changing runtime knobs: tracked and in every key

# The stages whose outputs each knob changes: precision sets the dtype of the transformers engine (grow, evaluate,
# the reward model's and the voters' samples) and of training (base, improve, voters); vllm_dtype that of the vllm
# engine. The other runtime knobs change speed, not results: batch composition (tests/test_engine.py), the Grow
# shard size (tests/test_grow_resume.py), grading workers, torch threads (matmul and backward bit-identical at 1
# and 2 threads on the CPU), vLLM's memory knobs; tensor_parallel_size, like the device, may move float rounding.
RESULTS_CHANGING = {
    "runtime.precision": {"base", "reward_model", "voters", "votes", "voters_improve", "grow", "rationalize", "improve", "improve_step", "evaluate"},
    "runtime.vllm_dtype": {"reward_model", "voters", "votes", "grow", "rationalize", "evaluate"},
}


def test_results_changing_runtime_knobs_are_tracked_and_nothing_else_of_runtime():
    for name, body in stages().items():
        params = {p if isinstance(p, str) else next(iter(p)) for p in body.get("params") or []}
        for knob, users in RESULTS_CHANGING.items():
            assert (knob in params) == (name in users), f"stage {name}: {knob} {'un' * (name in users)}tracked"
        stray = {p for p in params if p.startswith("runtime") and p not in RESULTS_CHANGING}
        assert not stray, f"stage {name} tracks operational knobs {stray}: they do not change results"


def _with_runtime(tiny_params, **knobs):
    return tiny_params.model_copy(update={"runtime": tiny_params.runtime.model_copy(update=knobs)})


def test_grow_resume_key_holds_the_engine_dtype(tiny_params):
    from restem.sampling.engines import SamplingParams
    from restem.stages.grow import shard_key

    sampling = SamplingParams(0.8, 16)
    key = lambda p: shard_key("policy", sampling, p, 1, ["a", "b"])  # noqa: E731
    assert key(_with_runtime(tiny_params, precision="float32")) != key(_with_runtime(tiny_params, precision="bfloat16"))
    assert key(tiny_params) == key(_with_runtime(tiny_params, batch_size=3, workers=5))  # operational knobs
    vllm = tiny_params.model_copy(update={"grow": tiny_params.grow.model_copy(update={"engine": "vllm"})})
    assert key(_with_runtime(vllm, vllm_dtype="float32")) != key(_with_runtime(vllm, vllm_dtype="bfloat16"))


def test_evaluate_memo_key_holds_the_engine_dtype(tiny_params, monkeypatch, tmp_path):
    from restem.schemas.hashing import content_hash
    from restem.stages import evaluate

    monkeypatch.setattr(evaluate, "model_hash", lambda folder: "model")
    monkeypatch.setattr(evaluate, "file_hash", lambda path: f"hash of {Path(path).name}")
    key = lambda p: evaluate.eval_key(p, "0", tmp_path)  # noqa: E731
    cpu32 = _with_runtime(tiny_params, precision="float32")
    bf16 = _with_runtime(tiny_params, precision="bfloat16")
    assert key(cpu32) != key(bf16)
    assert key(cpu32) == key(_with_runtime(cpu32, vllm_dtype="bfloat16"))  # not the transformers engine's knob
    vllm = cpu32.model_copy(update={"grow": cpu32.grow.model_copy(update={"engine": "vllm"})})
    assert key(_with_runtime(vllm, vllm_dtype="float32")) != key(_with_runtime(vllm, vllm_dtype="bfloat16"))
    # float32 on the CPU adds nothing: the memo keys of the default's stored metrics stand
    import torch
    if not torch.cuda.is_available():
        from restem import verifiers
        code = [Path(m.__file__) for m in (evaluate.engines, evaluate.sampler, evaluate.modeling, evaluate.prompting)]
        code += [Path(evaluate.__file__)] + sorted(Path(verifiers.__file__).parent.glob("*.py"))
        p = cpu32
        assert key(p) == content_hash(evaluate.FORMAT, "model", "hash of test.parquet", p.evaluate.model_dump(),
                                      p.grow.engine, p.score.model_dump(), [f"hash of {c.name}" for c in code])


def test_every_tracked_param_is_in_params_yaml():
    """DVC stops with "Parameters ... are missing" when a key a stage tracks is absent from params.yaml."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, body in stages().items():
        for key in body.get("params") or []:
            if isinstance(key, str) and "${" not in key:
                node = raw
                for part in key.split("."):
                    assert isinstance(node, dict) and part in node, f"stage {name} tracks {key}, not in params.yaml"
                    node = node[part]
