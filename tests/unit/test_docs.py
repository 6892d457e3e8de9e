"""The README and docs/ name only what exists: every `facegen.…` name resolves to a module or an attribute, every
`python -m facegen <command>` is a command of the CLI, every relative link points at a file, and the README stays a
front door (at most 200 lines)."""
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NAME = re.compile(r"(?<![/\w.-])facegen(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
COMMAND = re.compile(r"python -m facegen ([a-z][a-z-]*)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_readme_is_a_front_door():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_name_command_and_link_in_the_docs_exists(doc):
    from facegen.cli import _parser

    text = doc.read_text()
    missing = []
    for dotted in sorted(set(NAME.findall(text))):
        try:
            resolve(dotted.rstrip("."))
        except (ImportError, AttributeError):
            missing.append(dotted)
    commands = set(_parser()._subparsers._group_actions[0].choices)
    missing += [f"python -m facegen {c}" for c in sorted(set(COMMAND.findall(text))) if c not in commands]
    missing += [link for link in sorted(set(LINK.findall(text)))
                if "://" not in link and not (doc.parent / link).exists()]
    assert not missing, f"{doc.name} names what does not exist: {missing}"
