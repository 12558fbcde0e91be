"""What the README and ``--help`` say about the command and its configuration holds:
one table of S3BLOBS_* variables behind both, the middleware example runs as
written, and the README shows every command."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conftest import BUCKET
from s3blobs.cli import COMMANDS, main
from s3blobs.variables import VARIABLES, plain

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
#: Named in the code only to be refused (see Config.from_env).
REFUSED = {"S3BLOBS_COPY_THRESHOLD"}


def test_the_readme_table_is_the_variables_table() -> None:
    section = README.split("## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(S3BLOBS_[A-Z0-9_]+)` \| (.*?) \| (.*) \|$", section, re.M)
    assert rows == [tuple(variable) for variable in VARIABLES]


def test_every_variable_the_code_reads_is_in_the_table() -> None:
    named = set()
    for source in (ROOT / "s3blobs").rglob("*.py"):
        text = source.read_text()
        named |= set(re.findall(r"S3BLOBS_[A-Z0-9_]*[A-Z0-9]", text))
        if 'f"S3BLOBS_{name}"' in text:  # get("PART_SIZE") reads S3BLOBS_PART_SIZE
            found = re.findall(r'\bget\("((?!S3BLOBS_)[A-Z0-9_]+)"', text)
            named |= {f"S3BLOBS_{name}" for name in found}
    listed = {variable.name for variable in VARIABLES}
    # A family named in prose (S3BLOBS_AUTH_TOKEN_*) is listed by its members.
    families = {name for name in named if any(v.startswith(name + "_") for v in listed)}
    unlisted = named - REFUSED - families - listed
    assert not unlisted, f"not in s3blobs/variables.py: {unlisted}"


def test_serve_help_lists_every_variable_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    for variable in VARIABLES:
        line = re.search(rf"^  {variable.name} +default: (.*)$", shown, re.M)
        assert line, variable.name
        assert line.group(1) == plain(variable.default)
    assert "--data DIR" in shown


def test_the_middleware_example_runs_as_written(
    s3: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    match = re.search(r"other middleware\n.*?```python\n(.*?)```", README, re.S)
    assert match, "the README lost its middleware example"
    monkeypatch.setenv("S3BLOBS_BUCKET", BUCKET)
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    digest = namespace["repo"].stat(
        "sha256:" + "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )
    assert digest.size == 5
    assert ("library/app", digest.digest) in namespace["audit"].seen
    assert "('library/app', 'sha256:2cf24dba" in capsys.readouterr().out


def test_the_readme_shows_every_command() -> None:
    section = README.split("## The s3blobs command\n", 1)[1].split("\n## ", 1)[0]
    examples = re.search(r"```sh\n(.*?)```", section, re.S)
    assert examples
    shown = set(re.findall(r"^s3blobs (\S+)", examples.group(1), re.M))
    names = {command.__name__.rsplit(".", 1)[1] for command in COMMANDS}
    assert names | {"--version"} <= shown
