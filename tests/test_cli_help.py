"""CLI help a newcomer can use: every argument described, exit codes and examples in --help."""
from __future__ import annotations

import argparse

import pytest

from abproxy.cli import EXAMPLES, main, parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_argument_of_every_subcommand_has_a_description():
    for name, sub in _subparsers().items():
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, \
                f"abproxy {name}: argument {action.option_strings or action.dest} has no description"


def test_top_level_help_lists_exit_codes_and_an_example_per_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "  2  abproxy.yaml is invalid, or `validate --data` found a problem" in out
    assert set(EXAMPLES) == set(_subparsers())
    for name, example in EXAMPLES.items():
        assert example.startswith(f"abproxy {name}") and example in out


def test_init_does_not_offer_workspace(capsys):
    with pytest.raises(SystemExit):
        main(["init", "--help"])
    out = capsys.readouterr().out
    assert "--workspace" not in out and "the folder to create" in out


@pytest.mark.slow
def test_report_without_output_writes_review_key_html_and_says_where(tmp_path, capsys, monkeypatch):
    from abproxy.simulate import default_spec, simulate
    from abproxy.workspace import Workspace

    ws = simulate(tmp_path / "ws", default_spec(units=2000, seed=3))
    assert main(["run", "-w", str(ws), "--log-level", "ERROR"]) in (0, 1)
    monkeypatch.chdir(tmp_path)
    key = next(iter(Workspace.open(ws).config.experiments))
    capsys.readouterr()
    assert main(["report", key, "-w", str(ws), "--log-level", "ERROR"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / f"review-{key}.html").exists()
    assert out.strip() == f"Wrote the review of {key} to {(tmp_path / f'review-{key}.html').resolve()}"
