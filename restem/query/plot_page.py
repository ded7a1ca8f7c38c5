"""Plots that draw without a network: the HTML template of `dvc plots show` with the chart libraries inline,
and static SVG copies of every plot (for the README and the data card). `restem plots --page` / `--static`.

- Page: `dvc plots show` fills an HTML template's `{plot_divs}` with one `vegaEmbed(...)` call per plot; its
  default template's `{scripts}` loads vega, vega-lite and vega-embed from a CDN, so the page is blank offline.
  Ours has no `{scripts}` placeholder: it carries the three libraries inline, as bundled by the installed
  vl-convert-python (extra `plots`), and `.dvc/config.local` names it (`plots.html_template`, per machine,
  because the file is built from what this machine has installed; it is not committed).
- Static: the same vega-lite specs DVC builds for the page (its own plot definitions and templates, so the
  pictures cannot differ), rendered to SVG by vl-convert. Same data and vl-convert version -> same bytes.
"""

from __future__ import annotations

import html
from pathlib import Path

import typer

from restem.cli.errors import user_errors
from restem.schemas.errors import RestemError
from restem.schemas.io import write_text

PAGE = Path(".dvc") / "plots" / "offline.html"  # relative to the repo root; the config names it from .dvc/
STATIC = Path("metrics") / "plots"
VEGA_LITE_MAJOR = "5"  # the major version DVC's templates and ours declare in their $schema

STYLE = "body { font-family: sans-serif; display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }"


def _vl_convert():
    try:
        import vl_convert
    except ImportError:
        raise RestemError("offline plots need vl-convert-python, which bundles the vega libraries: "
                          "pip install 'restem[plots]' (scripts/setup.sh installs it)") from None
    return vl_convert


def _vega_lite_version(vlc) -> str | None:
    """The newest vega-lite of the templates' major version that vl-convert bundles (else its default)."""
    ours = [v for v in vlc.get_vegalite_versions() if v.split(".")[0].lstrip("v") == VEGA_LITE_MAJOR]
    return max(ours, key=lambda v: tuple(int(x) for x in v.lstrip("v").split("."))) if ours else None


def page_html() -> str:
    """The HTML template: vega, vega-lite and vega-embed inline (one classic script, run before the plots' own
    scripts call `vegaEmbed`), DVC's `{plot_divs}` and `{refresh_tag}` placeholders, no network reference."""
    vlc = _vl_convert()
    version = _vega_lite_version(vlc)
    bundle = vlc.javascript_bundle(vl_version=version)
    # A classic script: the bundle's top-level names stay inside the function, window.vega* are set by it.
    # "</script" may not appear inside an inline script; in JS source "<\/" reads as "</".
    script = "(function () {\n" + bundle.replace("</script", "<\\/script") + "\n})();"
    if "{plot_divs}" in script or "{scripts}" in script:
        raise RestemError("the vega bundle contains a DVC placeholder; cannot build the offline page")
    about = html.escape(f"vega {vlc.get_vega_version()}, vega-lite {version or 'default'}, "
                        f"vega-embed {vlc.get_vega_embed_version()}, from vl-convert-python {vlc.__version__}")
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>restem plots</title>
<!-- written by `restem plots --page`: {about}, inline, so the page draws without a network -->
<script>
{script}
</script>
<style>
    {STYLE}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def _dvc_project(root: Path) -> Path:
    root = Path(root)
    if not (root / ".dvc").is_dir():
        raise RestemError(f"{root.resolve()} is not a DVC project (no .dvc/ folder): run this from the repo root")
    return root


def write_page(root: Path = Path("."), configure: bool = True) -> Path:
    """Write the offline template to `root/.dvc/plots/offline.html` and (`configure`) name it in
    `.dvc/config.local` as `plots.html_template`, so a plain `dvc plots show` uses it. Returns its path."""
    root = _dvc_project(root)
    path = root / PAGE
    write_text(path, page_html())
    if configure:
        from dvc.config import Config

        config = Config(dvc_dir=str(root / ".dvc"))
        with config.edit("local") as conf:
            conf["plots"]["html_template"] = str(PAGE.relative_to(".dvc"))
    return path


def plot_specs(root: Path = Path(".")) -> dict[str, dict]:
    """The filled vega-lite spec of every plot `dvc plots show` draws from the workspace, by plot id."""
    from dvc.render.match import match_defs_renderers
    from dvc.repo import Repo

    specs: dict[str, dict] = {}
    with Repo(str(_dvc_project(root))) as repo:
        data = repo.plots.show()
        for rev, shown in data.items():
            if error := (shown.get("definitions") or {}).get("error"):
                raise RestemError(f"the plot definitions (dvc.yaml, {rev}) could not be read: {error}")
        found = match_defs_renderers(data=data, templates_dir=repo.plots.templates_dir)
        for r in found:
            errors = [*r.definition_errors.values(), *(e for errs in r.source_errors.values() for e in errs.values())]
            if errors:
                raise RestemError(f"plot {r.renderer.name!r} (dvc.yaml plots:): {errors[0]}; "
                                  "run `dvc repro plots` to write its data")
            if r.renderer.TYPE == "vega":
                try:
                    specs[r.renderer.name] = r.renderer.get_filled_template()
                except Exception as e:  # dvc_render's own errors name the missing field
                    raise RestemError(f"plot {r.renderer.name!r} (dvc.yaml plots:): {e}") from None
    return specs


def write_static(root: Path = Path("."), out: Path | None = None) -> list[Path]:
    """Write `<plot id>.svg` for every plot under `out` (default `root/metrics/plots`); returns the files."""
    vlc = _vl_convert()
    root = Path(root)
    out = root / STATIC if out is None else Path(out)
    specs = plot_specs(root)
    if not specs:
        raise RestemError(f"no plot data found under {root.resolve()}: run `dvc repro` (or `restem plots`) first")
    version = _vega_lite_version(vlc)
    written = []
    for name, spec in sorted(specs.items()):
        path = out / f"{name.replace('/', '_')}.svg"
        write_text(path, vlc.vegalite_to_svg(spec, vl_version=version))
        written.append(path)
    return written


def draw_command(
    page: bool = typer.Option(False, "--page", help="write the offline HTML template of `dvc plots show` "
                              f"({PAGE}, vega inline) and name it in .dvc/config.local"),
    static: bool = typer.Option(False, "--static", help=f"write every DVC plot as SVG ({STATIC}/<plot>.svg) "
                                "from the plot data now in the workspace"),
) -> None:
    """Plots that draw offline: the page template of `dvc plots show` and static SVG copies (neither option:
    both). Run from the repo root; the plot data comes from `dvc repro` (stage plots)."""
    with user_errors():
        both = not (page or static)
        for path in ([write_page()] if page or both else []) + (write_static() if static or both else []):
            typer.echo(path)
