"""The DVC plots: definitions that follow the user's test sets and iterations, a page that draws without a
network (its libraries inline, checked in headless Chromium where it is installed), static SVG copies."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from restem.schemas.errors import RestemError
from restem.schemas.io import write_json, write_rows
from restem.schemas.tables import Kept, Rejected, Sample, Score
from restem.query.plots import write_plot_data
from tests.test_sql import GROW, make_workspace, sample, score

PLOTS = ["accuracy", "accuracy_by_test", "audit_rates", "kept", "solve_rates"]  # dvc.yaml's plots:
SETS = ("long_division", "my_set")  # not the demo's in_dist / harder


def _iteration_3(root: Path) -> None:
    """A third iteration: iteration 2's grow rows again."""
    rows = [r for r in GROW if r[2] == 2]
    samples = [sample(f"x{r[0]}", r[1], 3, r[3], index=i) for i, r in enumerate(rows)]
    write_rows(root / "data/iter3/samples.parquet", Sample, samples)
    write_rows(root / "data/iter3/scores.parquet", Score, [score(s, r[4], r[5]) for s, r in zip(samples, rows)])
    write_rows(root / "data/iter3/kept.parquet", Kept, [
        Kept(sample_id=s.sample_id, problem_id=s.problem_id, iteration=3, prompt=s.prompt, completion=s.completion,
             reward=1.0, rule="correct") for s, r in zip(samples, rows) if r[6] == "kept"])
    write_rows(root / "data/iter3/rejected.parquet", Rejected, [
        Rejected(sample_id=s.sample_id, problem_id=s.problem_id, iteration=3, reward=float(r[4]), filter_reason=r[6])
        for s, r in zip(samples, rows) if r[6] != "kept"])


def make_project(root: Path) -> Path:
    """A DVC project (no git) with this checkout's plot definitions and templates, the hand-made workspace of
    tests/test_sql.py with a third iteration, and the user's own test sets (SETS) in every model's metrics."""
    from dvc.repo import Repo

    make_workspace(root)
    _iteration_3(root)
    for it in range(4):
        write_json(root / f"metrics/iterations/iter{it}.json", {"iteration": it, "model": f"m{it}", "test": {
            name: {"n": 10, "pass@1": 0.1 * it + j, "pass@4": 0.2 + 0.1 * it, "maj@4": 0.1, "pass@1_sampled": 0.0}
            for j, name in enumerate(SETS)}})
    # what stage evaluate writes beside them (one level per test set)
    (root / "metrics/plots").mkdir(parents=True, exist_ok=True)
    (root / "metrics/plots/accuracy_by_test.csv").write_text("iteration,test,difficulty,pass@1\n" + "".join(
        f"iter{it},{name},{j + 3},{0.1 * it}\n" for it in range(4) for j, name in enumerate(SETS)))
    write_plot_data(root)
    Repo.init(str(root), no_scm=True).close()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    (root / ".dvc/plots").mkdir(exist_ok=True)
    for template in (REPO / ".dvc/plots").glob("*.json"):
        shutil.copy(template, root / ".dvc/plots" / template.name)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("plots") / "ws")


@pytest.fixture(scope="module")
def page(project) -> Path:
    pytest.importorskip("vl_convert")
    from restem.query.plot_page import write_page

    return write_page(project)


def _values(spec: dict) -> list[dict]:
    return spec["data"]["values"]


def test_definitions_follow_test_sets_and_iterations(project):
    from restem.query.plot_page import plot_specs

    specs = plot_specs(project)
    assert sorted(specs) == PLOTS
    accuracy = {(r["iteration"], r["series"]): float(r["value"]) for r in _values(specs["accuracy"])}
    assert {series for _, series in accuracy} == {f"{s} {m}" for s in SETS for m in ("pass@1", "pass@4", "maj@4")}
    assert sorted({it for it, _ in accuracy}) == ["0", "1", "2", "3"] and accuracy[("3", "my_set pass@1")] == 1.3
    assert {r["series"] for r in _values(specs["solve_rates"])} == {"iter1", "iter2", "iter3"}
    assert [r["iteration"] for r in _values(specs["kept"])] == ["1", "2", "3"]
    # every field a plot encodes is in its data (what `could not find provided field` would be about)
    for name, spec in specs.items():
        fields = {e["field"] for e in spec["encoding"].values() if isinstance(e, dict) and "field" in e}
        assert fields <= set(_values(spec)[0]), name


def test_a_definition_naming_a_missing_field_is_a_clear_error(project, tmp_path):
    """The old kind of definition (the demo's test-set names as columns) fails on the user's test sets."""
    from restem.query.plot_page import plot_specs

    broken = make_project(tmp_path / "ws")
    text = (broken / "dvc.yaml").read_text()
    (broken / "dvc.yaml").write_text(text.replace("metrics/plots/accuracy.csv: [value]",
                                                  "metrics/plots/accuracy.csv: [in_dist pass@1]"))
    with pytest.raises(RestemError, match=r"plot 'accuracy'.*in_dist pass@1"):
        plot_specs(broken)


def test_offline_page_has_every_library_inline(page, project, monkeypatch):
    text = page.read_text()
    assert "{plot_divs}" in text and "{scripts}" not in text  # DVC's CDN <script> tags go into {scripts}
    assert re.findall(r"<script[^>]*\bsrc\s*=", text, re.I) == [] and text.count("</script>") == 1
    assert "window.vegaEmbed" in text and len(text) > 300_000
    assert re.search(r"html_template\s*=\s*plots/offline.html", (project / ".dvc/config.local").read_text())
    from dvc.cli import main as dvc_main

    monkeypatch.chdir(project)
    assert dvc_main(["plots", "show", "-o", "out"]) == 0
    shown = (project / "out/index.html").read_text()
    assert "cdn.jsdelivr" not in shown and not re.findall(r"<script[^>]*\bsrc\s*=", shown, re.I)
    assert all(f'id = "{name}"' in shown for name in PLOTS)


def _chromium() -> list[str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        return None
    # no network: a new network namespace where the kernel allows it (root), else no proxy and no DNS
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", browser]
    return [browser, "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]


@pytest.mark.skipif(_chromium() is None, reason="needs chromium (apt-get install chromium)")
def test_page_draws_every_plot_without_network(page, project, monkeypatch):
    from dvc.cli import main as dvc_main

    monkeypatch.chdir(project)
    assert dvc_main(["plots", "show", "-o", "drawn"]) == 0
    dom = subprocess.run([*_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", (project / "drawn/index.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    # vega-embed replaces each plot's div content with the drawn chart: an <svg class="marks"> with line marks
    drawn = re.findall(r'<div id="(\w+)" class="vega-embed[^"]*">.*?<svg[^>]*class="marks"', dom, re.S)
    assert sorted(drawn) == PLOTS, dom[-2000:]
    assert dom.count('class="mark-line role-mark') >= len(PLOTS)


def test_static_svgs_are_written_and_deterministic(project, tmp_path):
    pytest.importorskip("vl_convert")
    from restem.query.plot_page import write_static

    first = write_static(project, out=tmp_path / "a")
    again = write_static(project, out=tmp_path / "b")
    assert [p.name for p in first] == [f"{name}.svg" for name in PLOTS]
    for a, b in zip(first, again):
        assert a.read_bytes() == b.read_bytes() and a.read_text().startswith("<svg")
    assert "my_set pass@1" in (tmp_path / "a/accuracy.svg").read_text()  # the user's test set is in the legend


def test_static_without_plot_data_is_a_clear_error(tmp_path):
    pytest.importorskip("vl_convert")
    from dvc.repo import Repo

    from restem.query.plot_page import write_static

    Repo.init(str(tmp_path), no_scm=True).close()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    with pytest.raises(RestemError, match="dvc repro"):
        write_static(tmp_path)
