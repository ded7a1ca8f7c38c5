"""Every preset is a complete, valid params file; the default params are the ReST-EM preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.params import load_params

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))


def test_presets_exist():
    assert {p.stem for p in PRESETS} >= {"rest-em", "rest", "rft", "raft", "easy-to-hard", "easy-to-hard-majority",
                                       "easy-to-hard-agreement"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_has_every_section_dvc_reads(path):
    import yaml

    params = load_params(path)
    raw = yaml.safe_load(path.read_text())
    # dvc.yaml interpolates these; a missing one would fail inside DVC with a less clear message.
    assert "steps" in raw["loop"] and "reward_model" in raw and "reward" in raw["score"]
    assert "extraction" in raw["score"]  # voters read score.extraction
    assert params.loop.iterations


def test_default_params_are_the_rest_em_preset():
    def body(p: Path) -> list[str]:
        return p.read_text().splitlines()[1:]  # the first line names the preset

    assert body(REPO / "params.yaml") == body(REPO / "presets" / "rest-em.yaml")


def test_each_preset_uses_what_it_names():
    rest = load_params(REPO / "presets" / "rest.yaml")
    assert rest.score.reward == "model" and rest.filter.mode == "threshold" and rest.loop.steps
    assert all(str(e.init) != "0" for k, e in rest.loop.iterations.items() if k != "1")  # warm starts
    rft = load_params(REPO / "presets" / "rft.yaml")
    assert rft.filter.dedup == "equations" and len(rft.loop.iterations) == 1
    raft = load_params(REPO / "presets" / "raft.yaml")
    assert raft.filter.mode == "top_fraction" and raft.score.reward == "model"
    e2h = load_params(REPO / "presets" / "easy-to-hard.yaml")
    assert e2h.base.model.position == "none" and e2h.score.verifier == "reversed_addition"
    assert [max(e.pool.mix, key=e.pool.mix.get) for e in e2h.loop.iterations.values()] == [5, 6, 7, 8, 9]
    a = e2h.problems.arithmetic
    assert a.demo_digits.high == 4 and a.train_digits.high == 9 and max(a.test_sets.values()) == 9
    assert a.demo_count >= e2h.base.train.steps * e2h.base.train.batch_size  # each demonstration seen once
    # The label-free variants differ from it only in the filter.
    for name, mode in (("easy-to-hard-majority", "majority"), ("easy-to-hard-agreement", "agreement")):
        variant = load_params(REPO / "presets" / f"{name}.yaml")
        assert variant.filter.mode == mode
        assert variant.model_dump(exclude={"filter"}) == e2h.model_dump(exclude={"filter"})
    assert load_params(REPO / "presets" / "easy-to-hard-agreement.yaml").filter.voters.seeds == [1, 2]


def test_preset_command_writes_a_valid_file(tmp_path):
    from typer.testing import CliRunner

    from stages.cli import app

    out = tmp_path / "params.yaml"
    result = CliRunner().invoke(app, ["preset", "rest", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == (REPO / "presets" / "rest.yaml").read_text()
    bad = CliRunner().invoke(app, ["preset", "nope", "--output", str(out)])
    assert bad.exit_code == 2 and "unknown preset 'nope'" in bad.output
    listing = CliRunner().invoke(app, ["preset", "--list"])
    assert "rest-em" in listing.output and "easy-to-hard" in listing.output
