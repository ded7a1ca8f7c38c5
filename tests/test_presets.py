"""Every preset is a short overlay that merges into a complete, valid params file; the default params are the
ReST-EM preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from restem.schemas.errors import RestemError
from restem.schemas.presets import load_preset, preset_names, render

REPO = Path(__file__).resolve().parents[1]
NAMES = preset_names()


def test_presets_exist():
    assert set(NAMES) >= {"rest-em", "rest", "rft", "raft", "easy-to-hard", "easy-to-hard-majority",
                          "easy-to-hard-agreement"}
    assert "defaults" not in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_preset_validates_and_has_every_section_dvc_reads(name):
    import yaml

    params = load_preset(name)
    raw = yaml.safe_load(render(name))
    # dvc.yaml interpolates these; a missing one would fail inside DVC with a less clear message.
    assert "steps" in raw["loop"] and "reward_model" in raw and "reward" in raw["score"]
    assert "extraction" in raw["score"]  # voters read score.extraction
    assert params.loop.iterations
    assert render(name).startswith(f"# restem params: preset `{name}`. ")


@pytest.mark.parametrize("name", NAMES)
def test_presets_are_short_overlays(name):
    """A preset names only what it changes; the defaults live in one file."""
    lines = [ln for ln in (REPO / "presets" / f"{name}.yaml").read_text().splitlines() if ln.strip()]
    assert len(lines) <= 50, f"presets/{name}.yaml has {len(lines)} lines: give only what differs from the defaults"


def test_default_params_are_the_rest_em_preset():
    params, defaults = (REPO / "params.yaml").read_text(), (REPO / "presets" / "defaults.yaml").read_text()
    assert params == defaults  # a new workspace starts at the defaults
    assert render("rest-em").splitlines()[1:] == params.splitlines()[1:]  # the first line names the preset


def test_merge_rules(tmp_path, monkeypatch):
    """Sections merge key by key; user-keyed mappings (iterations, test sets) are replaced whole; the overlay's
    comment wins; a preset can extend another; mistakes name the file."""
    import shutil

    import yaml

    import restem.schemas.presets as presets

    root = tmp_path / "presets"
    root.mkdir()
    shutil.copy(REPO / "presets" / "defaults.yaml", root / "defaults.yaml")
    (root / "one.yaml").write_text(
        "# One round.\ngrow:\n  temperature: 1.1   # hotter\nloop:\n  iterations:\n    '1': {prev: 0, init: 0}\n")
    (root / "two.yaml").write_text("# One round, exact dedup off.\nextends: one\nfilter:\n  dedup: none\n")
    (root / "loop_a.yaml").write_text("# a\nextends: loop_b\n")
    (root / "loop_b.yaml").write_text("# b\nextends: loop_a\n")
    (root / "typo.yaml").write_text("# t\ngrow:\n  tempreture: 1.0\n")
    (root / "flat.yaml").write_text("# f\ngrow: 3\n")
    monkeypatch.setattr(presets, "PRESETS", root)

    default = yaml.safe_load((root / "defaults.yaml").read_text())
    two = yaml.safe_load(presets.render("two"))
    assert list(two["loop"]["iterations"]) == ["1"]  # replaced whole: iteration 2 is gone
    assert two["grow"]["temperature"] == 1.1 and two["grow"]["seed"] == default["grow"]["seed"]  # merged
    assert two["filter"]["dedup"] == "none" and two["filter"]["mode"] == default["filter"]["mode"]
    assert "temperature: 1.1   # hotter" in presets.render("one")
    assert "'1': {prev: 0, init: 0}" in presets.render("one")  # DVC needs the quoted key
    with pytest.raises(RestemError, match="circle"):
        presets.render("loop_a")
    with pytest.raises(RestemError, match=r"typo.yaml.*\n.*grow.tempreture"):
        presets.load_preset("typo")
    with pytest.raises(RestemError, match="`grow` is a section"):
        presets.render("flat")
    with pytest.raises(RestemError, match="unknown preset 'defaults'"):
        presets.render("defaults")


def test_each_preset_uses_what_it_names():
    rest = load_preset("rest")
    assert rest.score.reward == "model" and rest.filter.mode == "threshold" and rest.loop.steps
    assert all(str(e.init) != "0" for k, e in rest.loop.iterations.items() if k != "1")  # warm starts
    rft = load_preset("rft")
    assert rft.filter.dedup == "equations" and len(rft.loop.iterations) == 1
    raft = load_preset("raft")
    assert raft.filter.mode == "top_fraction" and raft.score.reward == "model"
    e2h = load_preset("easy-to-hard")
    assert e2h.base.model.position == "none" and e2h.score.verifier == "reversed_addition"
    assert [max(e.pool.mix, key=e.pool.mix.get) for e in e2h.loop.iterations.values()] == [5, 6, 7, 8, 9]
    a = e2h.problems.arithmetic
    assert a.demo_digits.high == 4 and a.train_digits.high == 9 and max(a.test_sets.values()) == 9
    assert a.demo_count >= e2h.base.train.steps * e2h.base.train.batch_size  # each demonstration seen once
    # The label-free variants differ from it only in the filter.
    for name, mode in (("easy-to-hard-majority", "majority"), ("easy-to-hard-agreement", "agreement")):
        variant = load_preset(name)
        assert variant.filter.mode == mode
        assert variant.model_dump(exclude={"filter"}) == e2h.model_dump(exclude={"filter"})
    assert load_preset("easy-to-hard-agreement").filter.voters.seeds == [1, 2]


def test_preset_command_writes_a_valid_file(tmp_path):
    from typer.testing import CliRunner

    from restem.cli.main import app

    out = tmp_path / "params.yaml"
    result = CliRunner().invoke(app, ["preset", "rest", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == render("rest")
    bad = CliRunner().invoke(app, ["preset", "nope", "--output", str(out)])
    assert bad.exit_code == 2 and "unknown preset 'nope'" in bad.output
    listing = CliRunner().invoke(app, ["preset", "--list"])
    assert "rest-em" in listing.output and "easy-to-hard" in listing.output
