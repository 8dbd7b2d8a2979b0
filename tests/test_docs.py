"""The README's commands and options exist, and the Dockerfile matches the package."""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from abproxy.cli import COMMANDS, parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _subparsers():
    p = parser()
    action = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def _documented_invocations() -> list[list[str]]:
    """Every `abproxy ...` invocation in code blocks and inline code of the README."""
    snippets, block = [], None
    for line in README.splitlines():
        if line.startswith("```"):
            block = line[3:].strip() if block is None else None
        elif block in ("bash", "sh"):
            snippets.append(line)
    snippets += re.findall(r"`([^`\n]*abproxy [^`\n]*)`", README)
    found = []
    for block in snippets:
        for line in block.splitlines():
            line = line.split("#", 1)[0]
            for part in re.split(r"&&|;|\|", line):
                words = shlex.split(part.replace("[", " ").replace("]", " "))
                for i, w in enumerate(words):
                    if w.endswith("abproxy") and i + 1 < len(words) and not words[i + 1].startswith("-") \
                            and re.fullmatch(r"[a-z]+", words[i + 1]):
                        found.append(words[i + 1:])
    return found


def test_readme_documents_the_front_door():
    assert "make run" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_documented_command_and_option_exists():
    subs = _subparsers()
    invocations = _documented_invocations()
    assert len(invocations) >= 10
    for words in invocations:
        name = words[0]
        assert name in subs, f"README documents 'abproxy {name}', which does not exist"
        options = {o for a in subs[name]._actions for o in a.option_strings}
        for w in words[1:]:
            if w.startswith("--"):
                assert w.split("=")[0] in options, f"README documents 'abproxy {name} {w}', which does not exist"


def test_every_command_is_documented():
    for name in _subparsers():
        assert f"abproxy {name}" in README, f"'abproxy {name}' is not documented in the README"
    assert set(COMMANDS) == set(_subparsers())


def test_dockerfile_matches_the_package():
    docker = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, func = project["scripts"]["abproxy"].split(":")
    assert module == "abproxy.cli" and func == "main"
    port = re.search(r"^EXPOSE (\d+)", docker, re.M).group(1)
    serve = _subparsers()["serve"]
    default_port = next(a.default for a in serve._actions if "--port" in a.option_strings)
    assert int(port) == default_port
    assert f"127.0.0.1:{port}/_stcore/health" in docker
    cmd = re.search(r"^CMD (.*)$", docker, re.M).group(1)
    assert "abproxy serve" in cmd and f"--port {port}" in cmd
    assert re.search(r"^USER (?!root)\w+", docker, re.M), "the image must run as a non-root user"
    assert re.search(r"^VOLUME", docker, re.M)
    assert re.search(r"^FROM python:3\.1\d-slim", docker, re.M)
    for copied in re.findall(r"^COPY (.*) \S+$", docker, re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which is not in the repository"


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["analyze", "--help"]])
def test_help_works(args, capsys):
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(args)
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def _yaml_blocks() -> list[str]:
    blocks, current = [], None
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None and line[3:].strip() == "yaml":
                current = []
            elif current is not None:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_readme_configuration_reference_is_a_valid_workspace():
    import yaml

    from abproxy.config import parse_config

    from abproxy.config import Config

    merged: dict = {}
    registry_blocks = []
    for block in _yaml_blocks():
        data = yaml.safe_load(block)
        if not isinstance(data, dict) or not set(data) <= set(Config.model_fields):
            continue  # the CI / pipeline examples of the deployment gate
        if "mlflow" in data:
            registry_blocks.append(data)
            continue
        for key, value in data.items():
            if value != {"...": None}:  # the `metrics: { ... }` placeholders of the overview block
                merged[key] = value
    config = parse_config(merged)
    assert registry_blocks
    for data in registry_blocks:  # the MLflow example: its variants replace the reference's
        variant = {**merged, "mlflow": data["mlflow"], "experiments": {
            k: {**e, "variants": data["experiments"].get(k, {}).get("variants", e["variants"])}
            for k, e in merged["experiments"].items()}}
        with_registry = parse_config(variant)
        assert with_registry.mlflow.promote.alias == "champion" and with_registry.uses_mlflow()
    assert {"spend_per_user", "buyer_rate", "refund_rate", "spend_per_session", "power_user_score"} <= set(config.metrics)
    assert config.experiments["recsys-v2"].guardrail_specs[0].margin == 0.05


# ---------------------------------------------------------------- "Your first experiment in 10 minutes"

def _first_experiment_steps() -> list[tuple[str, str, str]]:
    """(kind, info, text) of each code block of the walk-through, in order."""
    start = README.index("## Your first experiment in 10 minutes")
    section = README[start:README.index("\n## ", start + 10)]
    steps, info, lines = [], None, []
    for line in section.splitlines():
        if line.startswith("```"):
            if info is None:
                info, lines = line[3:].strip(), []
            else:
                kind, _, rest = info.partition(" ")
                steps.append((kind, rest, "\n".join(lines)))
                info = None
        elif info is not None:
            lines.append(line)
    return steps


def test_the_first_experiment_walk_through_is_true(tmp_path, monkeypatch, capsys):
    import yaml

    from abproxy.cli import main

    monkeypatch.chdir(tmp_path)
    outputs = []
    steps = _first_experiment_steps()
    assert [k for k, _, _ in steps].count("bash") >= 4
    for kind, info, text in steps:
        if kind == "yaml":
            assert info == "first-experiment"
            config = yaml.safe_load(Path("abproxy.yaml").read_text())
            config.update(yaml.safe_load(text))
            Path("abproxy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        elif kind == "csv":
            Path(info).write_text(text + "\n")
        else:
            for line in text.splitlines():
                command, _, comment = line.partition("#")
                words = shlex.split(command)
                if words[0] == "cd":
                    monkeypatch.chdir(words[1])
                    continue
                assert words[0] == "abproxy"
                code = main(words[1:] + ["--log-level", "ERROR"])
                out = capsys.readouterr()
                outputs.append(out.out + out.err)
                expected = re.match(r"\s*exit (\d):", comment)  # `# exit 1: ...` documents a failure
                expected = int(expected.group(1)) if expected else 0
                assert code == expected, f"{line}: exit {code}\n{outputs[-1]}"
    text = "\n".join(outputs)

    assert "2 file(s) loaded" in text and "KEEP_RUNNING" in text
    assert Path("review-checkout-v2.html").exists()
    # the sentences the walk-through quotes are what the commands say
    config = yaml.safe_load(Path("abproxy.yaml").read_text())
    config["metrics"]["buyer_rate"]["event"] = "purchases"
    Path("abproxy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["validate", "--data", "--log-level", "ERROR"]) == 2
    text += capsys.readouterr().out
    start = README.index("## Your first experiment in 10 minutes")
    quoted = re.findall(r'\*"(.+?)"\*', README[start:README.index("\n## ", start + 10)], re.S)
    assert len(quoted) >= 3
    for phrase in quoted:
        assert " ".join(phrase.split()) in " ".join(text.split()), phrase
