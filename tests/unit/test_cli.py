"""The command line: every option explained with its default, a version, a readable validate summary."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from ope import __version__
from ope.cli import main, parser

SAMPLE = Path(__file__).resolve().parents[2] / "logs"


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", ["run", "tune", "validate", "import", "export", "simulate"])
def test_every_option_has_help_and_shows_its_default(command: str) -> None:
    p = _commands()[command]
    text = "".join(p.format_help().split())       # lines may wrap anywhere, hyphens included
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"ope {command} {action.dest} has no help text"
        if isinstance(action, argparse._StoreTrueAction) or (not action.option_strings and action.nargs is None):
            continue          # a flag is off unless given; a required positional has no default
        shown = " ".join(p._get_formatter()._expand_help(action).split())
        assert "".join(shown.split()) in text
        if action.required:
            assert "(required)" in shown, f"ope {command} {action.option_strings}"
        elif action.default is not None:
            assert f"(default: {action.default})" in shown, f"ope {command} {action.option_strings}: {shown}"
        else:
            assert "(default:" in shown, f"ope {command} {action.option_strings} does not say what happens without it"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"ope {__version__}"


def test_validate_prints_a_readable_summary_and_json_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    logs, catalog = str(SAMPLE / "sample_requests.parquet"), str(SAMPLE / "catalog.csv")
    assert main(["validate", logs, "--catalog", catalog]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{logs}: valid\n")
    assert re.search(r"rows +60,000\n", text)
    assert re.search(r"span +2025-10-01 00:00 to 2025-10-07 23:59 UTC \(7\.0 days\)", text)
    assert re.search(r"arms +58, serving 16 model\(s\)", text)
    assert re.search(r"status +ok 96\.8 %, rate_limited", text)
    assert re.search(r"propensities +logged on 100\.0 % of rows", text)
    assert main(["validate", logs, "--catalog", catalog, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 60_000 and summary["arms"] == 58 and summary["with_propensity"] == 1.0


@pytest.mark.parametrize("command", ["run", "validate", "import", "export", "simulate"])
def test_readme_synopsis_lists_every_option(command: str) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    synopsis = next(line for line in readme.splitlines() if line.startswith(f"| `ope {command} "))
    for action in _commands()[command]._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                assert flag in synopsis, f"the README's ope {command} synopsis lacks {flag}"
        for choice in action.choices or () if action.option_strings else ():
            assert choice in synopsis, f"the README's ope {command} synopsis lacks {choice}"
