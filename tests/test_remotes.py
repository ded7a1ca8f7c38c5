"""Push every artifact to a DVC remote from one clone, pull it into a fresh clone, and find the pipeline
up to date there (docs/remotes.md): with a local directory remote, and with an S3-compatible remote
(moto's server on loopback + dvc-s3). Prints how long the pull took against recomputing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY, copy_project, write_params

# Bytecode must be invisible to DVC: `schemas` and `verifiers` are folder deps, and a fresh clone has no
# __pycache__, so hashing it would make every stage look changed there (see docs/remotes.md).
BYTECODE_RULES = ["__pycache__/", "*.pyc"]
GIT_ID = ["-c", "user.name=restem-test", "-c", "user.email=test@restem.invalid"]


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    # Stages must leave bytecode as they do for users (some CI images turn it off), so that a
    # .dvcignore without the bytecode rules fails here rather than in a colleague's fresh clone.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, **(extra or {})}


def _run(cmd, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env or _env())
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _tracked_outputs(root: Path) -> dict[str, bytes]:
    """Every file DVC caches (data/, models/) and the git-committed metrics, by relative path."""
    files = {}
    for top in ("data", "models", "metrics"):
        for p in sorted((root / top).rglob("*")):
            if p.is_file() and p.name != ".gitignore":
                files[p.relative_to(root).as_posix()] = p.read_bytes()
    return files


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A git+DVC project with the miniature params, reproduced and committed (metrics in git)."""
    root = tmp_path_factory.mktemp("remotes") / "origin"
    root.mkdir()
    copy_project(root, extra=(".gitignore",))  # the project's .gitignore: metrics are committed past it
    ignore = root / ".dvcignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    ignore.write_text("\n".join(lines + [r for r in BYTECODE_RULES if r not in lines]) + "\n")
    write_params(root / "params.yaml", TINY)
    _run(["git", "init", "-q"], root)
    _run(["dvc", "init", "-q"], root)
    _run(["dvc", "config", "core.analytics", "false"], root)
    _run(["dvc", "config", "cache.type", "reflink,hardlink,copy"], root)
    start = time.perf_counter()
    _run(["dvc", "repro"], root)
    repro_s = time.perf_counter() - start
    # metrics are `cache: false` outputs: git carries them (the project's .gitignore may still list /metrics)
    _run(["git", "add", "-A"], root)
    _run(["git", "add", "-f", "metrics"], root)
    _run(["git", *GIT_ID, "commit", "-qm", "miniature run"], root)
    return root, repro_s


def _round_trip(origin_root: Path, remote: str, clone: Path, env: dict) -> dict:
    """Push from `origin_root`, clone, pull into the clone; returns timings and the commands' outputs."""
    push = time.perf_counter()
    _run(["dvc", "push", "-r", remote], origin_root, env)
    push_s = time.perf_counter() - push
    in_sync = _run(["dvc", "status", "--cloud", "-r", remote], origin_root, env).stdout
    _run(["git", "clone", "-q", str(origin_root), str(clone)], clone.parent, env)
    before = _run(["dvc", "status"], clone, env).stdout
    pull = time.perf_counter()
    _run(["dvc", "pull", "-r", remote], clone, env)
    pull_s = time.perf_counter() - pull
    status = _run(["dvc", "status"], clone, env).stdout
    repro = _run(["dvc", "repro"], clone, env).stdout
    return {"push_s": push_s, "pull_s": pull_s, "in_sync": in_sync, "before": before, "status": status,
            "repro": repro}


def _check(origin, result, clone: Path, label: str) -> None:
    root, repro_s = origin
    assert "in sync" in result["in_sync"], result["in_sync"]
    assert "up to date" not in result["before"], "a clone without a pull should miss the outputs"
    assert "Data and pipelines are up to date." in result["status"], result["status"]
    assert "Running stage" not in result["repro"] and "up to date" in result["repro"], result["repro"]
    theirs, ours = _tracked_outputs(root), _tracked_outputs(clone)
    assert set(ours) == set(theirs) and ours == theirs
    assert any(p.endswith("model.safetensors") for p in ours) and "metrics/summary.json" in ours
    print(f"\n[{label}] recompute (dvc repro) {repro_s:.1f}s, push {result['push_s']:.1f}s, "
          f"pull {result['pull_s']:.1f}s: a pull saves {repro_s - result['pull_s']:.1f}s "
          f"({repro_s / result['pull_s']:.0f}x)")
    assert result["pull_s"] < repro_s


def test_local_remote_round_trip(origin, tmp_path):
    root, _ = origin
    storage = tmp_path / "storage"
    _run(["dvc", "remote", "add", "local", str(storage)], root)
    _run(["git", *GIT_ID, "commit", "-qam", "local remote"], root)
    clone = tmp_path / "clone"
    result = _round_trip(root, "local", clone, _env())
    _check(origin, result, clone, "local remote")
    assert any((storage / "files" / "md5").rglob("*"))
    # the pulled clone exports the same bytes as the original, card (git revision, lock hashes) included
    from restem.publish.export import run
    from restem.publish.selection import Selection

    run(root, tmp_path / "export_origin", Selection(all_=True))
    run(clone, tmp_path / "export_clone", Selection(all_=True))
    card = (tmp_path / "export_clone" / "README.md").read_text()
    assert "working tree clean" in card and "NO: changed" not in card and "| yes |" in card
    assert _tree(tmp_path / "export_origin") == _tree(tmp_path / "export_clone")


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path):
    """moto's S3 server on loopback: (endpoint url, env with fake credentials and no AWS config)."""
    pytest.importorskip("moto.server")
    pytest.importorskip("dvc_s3")
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    env = _env({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    log = open(tmp_path / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError(f"moto server did not start:\n{(tmp_path / 'moto.log').read_text()}")
                time.sleep(0.2)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
        s3.create_bucket(Bucket="restem-artifacts")
        yield endpoint, env, s3
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_s3_remote_round_trip(origin, s3_server, tmp_path):
    root, _ = origin
    endpoint, env, s3 = s3_server
    _run(["dvc", "remote", "add", "s3", "s3://restem-artifacts/dvc"], root, env)
    _run(["dvc", "remote", "modify", "s3", "endpointurl", endpoint], root, env)
    _run(["git", *GIT_ID, "commit", "-qam", "s3 remote"], root, env)
    clone = tmp_path / "clone"
    result = _round_trip(root, "s3", clone, env)
    _check(origin, result, clone, "s3 remote (moto)")
    keys = s3.list_objects_v2(Bucket="restem-artifacts", Prefix="dvc/files/md5/").get("KeyCount", 0)
    assert keys > 0


def test_project_dvcignore_hides_bytecode(tmp_path):
    """The project's own .dvcignore must hide __pycache__, or a fresh clone reruns every stage."""
    src = REPO / ".dvcignore"
    assert src.exists(), "the project has no .dvcignore"
    shutil.copy(src, tmp_path / ".dvcignore")
    _run(["git", "init", "-q"], tmp_path)
    _run(["dvc", "init", "-q"], tmp_path)
    pyc = tmp_path / "schemas" / "__pycache__" / "io.cpython-311.pyc"
    pyc.parent.mkdir(parents=True)
    pyc.write_bytes(b"\0")
    proc = _run(["dvc", "check-ignore", "schemas/__pycache__/io.cpython-311.pyc"], tmp_path, check=False)
    assert proc.returncode == 0, (f"{src} does not ignore __pycache__: add the lines {BYTECODE_RULES} "
                                  "(see docs/remotes.md)")
