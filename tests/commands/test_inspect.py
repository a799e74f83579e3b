"""Inspection, placeholder finding, expansion previews and renderers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from coordinator.commands.discovery import SlashCommand, scan
from coordinator.commands.frontmatter import split_frontmatter
from coordinator.commands.inspect import (
    expand,
    find_placeholders,
    inspect,
    render_inspection_json,
    render_inspection_text,
    render_list_json,
    render_list_text,
)


def command(text: str, name: str = "c", source: str = "project") -> SlashCommand:
    parsed = split_frontmatter(text)
    return SlashCommand(
        name=name,
        source=source,  # type: ignore[arg-type]
        path=Path(f"/ws/.claude/commands/{name}.md"),
        description=None,
        argument_hint=None,
        frontmatter=parsed.fields,
        body=parsed.body,
        body_line=parsed.body_line,
    )


ARGS_BODY = (
    "---\ndescription: d\n---\n"
    "A=[$ARGUMENTS] A0=[$ARGUMENTS[0]] A1=[$ARGUMENTS[1]] A5=[$ARGUMENTS[5]] "
    "D0=[$0] D1=[$1] D2=[$2] D10=[$10] dd=[$$] price=[$5.00] esc=[\\$1]\n"
)


# Each expected text is what CLI 2.1.329 sent for the same file and arguments.
@pytest.mark.parametrize(
    ("text", "arguments", "expected"),
    [
        (
            ARGS_BODY,
            'one "two three" four',
            'A=[one "two three" four] A0=[one] A1=[two three] A5=[$ARGUMENTS[5]] '
            "D0=[one] D1=[two three] D2=[four] D10=[$10] dd=[$$] price=[$5.00] esc=[$1]\n",
        ),
        (
            ARGS_BODY,
            "",
            "A=[] A0=[$ARGUMENTS[0]] A1=[$ARGUMENTS[1]] A5=[$ARGUMENTS[5]] "
            "D0=[$0] D1=[$1] D2=[$2] D10=[$10] dd=[$$] price=[$5.00] esc=[$1]\n",
        ),
        ("no newline", "a b", "no newline\n\nARGUMENTS: a b"),
        ("shared\n", "  x  y ", "shared\n\n\nARGUMENTS: x  y"),
        ("x $5 y\n", "a", "x $5 y\n\n\nARGUMENTS: a"),
        ("only $0\n", "", "only $0\n"),
        ("zero=[$0] one=[$1]\n", "a b", "zero=[a] one=[b]\n"),
        (
            "a=[$ARGUMENTS] A=[${ARGUMENTS}] low=[$arguments] $ARGUMENTSX $ARGUMENTS[a] "
            "$ARGUMENTS[-1] $01 $1x\n",
            "a 'b c' d",
            "a=[a 'b c' d] A=[${ARGUMENTS}] low=[$arguments] a 'b c' dX a 'b c' d[a] "
            "a 'b c' d[-1] b c $1x\n",
        ),
        (
            "bs=[\\$ARGUMENTS] n=[\\n] d=[\\$0]\n",
            "a b",
            "bs=[$ARGUMENTS] n=[\\n] d=[$0]\n\n\nARGUMENTS: a b",
        ),
        (
            "---\narguments: [foo, bar]\n---\nfoo=[$foo] bar=[$bar] all=[$ARGUMENTS]\n",
            "X Y Z",
            "foo=[X] bar=[Y] all=[X Y Z]\n",
        ),
        (
            "---\narguments: foo bar\n---\nfoo=[$foo] bar=[$bar] $foobar $foo_x $foo[0]\n",
            "P Q",
            "foo=[P] bar=[Q] $foobar $foo_x $foo[0]\n",
        ),
        ("---\ndescription: d\n---\n\n\nbody $ARGUMENTS\n\n\n", "a", "body a\n\n\n"),
        ("\n\n  body2\n\n", "a", "\n\n  body2\n\n\n\nARGUMENTS: a"),
        (
            "before\n!`echo hi`\nsee @notes.txt\n",
            "q",
            "before\n!`echo hi`\nsee @notes.txt\n\n\nARGUMENTS: q",
        ),
    ],
)
def test_expand_matches_the_cli(text: str, arguments: str, expected: str) -> None:
    assert expand(command(text), arguments) == expected


def test_expand_skill_adds_base_directory() -> None:
    cmd = replace(
        command("s1 skill\n", name="s1", source="user-skill"),
        path=Path("/h/.claude/skills/s1/SKILL.md"),
    )
    assert expand(cmd, "zz") == (
        "Base directory for this skill: /h/.claude/skills/s1\n\ns1 skill\n\n\nARGUMENTS: zz"
    )


def test_expand_builtin_returns_the_prompt() -> None:
    builtin = SlashCommand("compact", "builtin", None, "built-in command", None, {}, None)
    assert expand(builtin, " keep the plan ") == "/compact keep the plan"
    assert expand(builtin, "") == "/compact"


def test_placeholders_have_file_line_numbers() -> None:
    cmd = command(
        "---\ndescription: d\narguments: [target]\n---\n"
        "Fix $ARGUMENTS now\n"
        "first $0 then $ARGUMENTS[1] and $target, not \\$1 or $other\n"
        "!`git status`\n"
        "Read @src/app.py, then me@example.com\n"
    )
    found = [(p.kind, p.text, p.line, p.column, p.detail) for p in find_placeholders(cmd)]
    assert found == [
        ("arguments", "$ARGUMENTS", 5, 5, None),
        ("positional", "$0", 6, 7, "0"),
        ("argument-index", "$ARGUMENTS[1]", 6, 15, "1"),
        ("named", "$target", 6, 33, "target"),
        ("shell", "!`git status`", 7, 1, "git status"),
        ("file", "@src/app.py", 8, 6, "src/app.py"),
    ]


def test_inspection_text_and_json(tmp_path: Path) -> None:
    ws, home = tmp_path / "ws", tmp_path / "home"
    (ws / ".git").mkdir(parents=True)
    home.mkdir()
    target = ws / ".claude" / "commands" / "testing" / "flakyfinder.md"
    target.parent.mkdir(parents=True)
    target.write_text(
        "---\ndescription: Find flaky tests\nargument-hint: [path]\nmodel: sonnet\n---\n"
        "Run the tests in $ARGUMENTS ten times.\n!`git log -1`\n"
    )
    user = home / ".claude" / "commands" / "testing" / "flakyfinder.md"
    user.parent.mkdir(parents=True)
    user.write_text("user version\n")
    result = scan(ws, home)
    [project] = [s.command for s in result.shadowed if s.command.path == target]
    insp = inspect(project, shadowed=result.shadowed)
    assert insp.file == target
    assert any(n.startswith("shadowed by user definition") for n in insp.notes)

    text = render_inspection_text(insp)
    assert "/testing:flakyfinder  (project)" in text
    assert f"file:          {target}" in text
    assert "argument hint: [path]" in text
    assert "model" in text and "sonnet" in text
    assert "line   6 col  18  $ARGUMENTS" in text
    assert ">   6 | Run the tests in $ARGUMENTS ten times." in text
    assert ">   7 | !`git log -1`" in text

    data = json.loads(render_inspection_json(insp))
    assert data["name"] == "testing:flakyfinder"
    assert data["frontmatter"] == {
        "description": "Find flaky tests",
        "argument-hint": ["path"],
        "model": "sonnet",
    }
    assert data["argument_hint"] == "[path]"
    assert [(p["kind"], p["line"]) for p in data["placeholders"]] == [
        ("arguments", 6),
        ("shell", 7),
    ]
    assert data["body_line"] == 6

    winner = inspect(
        next(c for c in result.commands if c.name == "testing:flakyfinder"),
        shadowed=result.shadowed,
    )
    assert any(n.startswith("shadows project definition") for n in winner.notes)
    assert any("no argument placeholder" in n for n in winner.notes)


def test_list_renderers(tmp_path: Path) -> None:
    ws, home = tmp_path / "ws", tmp_path / "home"
    (ws / ".git").mkdir(parents=True)
    home.mkdir()
    path = ws / ".claude" / "commands" / "maketests.md"
    path.parent.mkdir(parents=True)
    path.write_text("---\ndescription: Make tests\nargument-hint: <dir>\n---\nbody\n")
    commands = scan(ws, home).commands
    text = render_list_text(commands)
    line = next(x for x in text.splitlines() if x.startswith("/maketests "))
    assert line.split() == ["/maketests", "project", "<dir>", "Make", "tests"]
    assert "/compact" in text
    data = json.loads(render_list_json(commands))
    assert [d["name"] for d in data] == sorted(d["name"] for d in data)
    entry = next(d for d in data if d["name"] == "maketests")
    assert entry["path"] == str(path) and entry["source"] == "project"
    assert entry["frontmatter"] == {"description": "Make tests", "argument-hint": "<dir>"}
    assert render_list_text([]) == "no slash commands found\n"
