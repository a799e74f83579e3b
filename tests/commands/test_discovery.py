"""Slash-command discovery on temporary trees (no CLI needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coordinator.commands.builtins import BUILTIN_NAMES
from coordinator.commands.discovery import (
    SlashCommand,
    command_name_of,
    discover,
    find,
    merge_cli_names,
    project_roots,
    scan,
    user_config_dir,
)
from coordinator.commands.frontmatter import split_frontmatter
from coordinator.errors import UsageError


def write(path: Path, text: str = "body\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    (workspace / ".git").mkdir(parents=True)  # bounds the walk up the ancestors
    return workspace


@pytest.fixture
def home(tmp_path: Path) -> Path:
    directory = tmp_path / "home"
    directory.mkdir()
    return directory


def custom(commands: list[SlashCommand]) -> dict[str, SlashCommand]:
    return {c.name: c for c in commands if c.source != "builtin"}


def pcmd(ws: Path, rel: str, text: str = "body\n") -> Path:
    return write(ws / ".claude" / "commands" / rel, text)


def skill(root: Path, name: str, text: str = "skill body\n") -> Path:
    return write(root / ".claude" / "skills" / name / "SKILL.md", text)


# ---------------------------------------------------------------- naming


def test_subdirectories_become_colon_separated_names(ws: Path, home: Path) -> None:
    pcmd(ws, "maketests.md")
    pcmd(ws, "testing/flakyfinder.md")
    pcmd(ws, "a/b/c.md")
    assert set(custom(discover(ws, home))) == {"maketests", "testing:flakyfinder", "a:b:c"}


def test_only_lowercase_md_files_count_and_hidden_ones_do(ws: Path, home: Path) -> None:
    pcmd(ws, "notes.txt")
    pcmd(ws, "Upper.MD")
    pcmd(ws, ".hidden.md")
    pcmd(ws, ".dir/inner.md")
    (ws / ".claude" / "commands" / "folder.md").mkdir()
    assert set(custom(discover(ws, home))) == {".hidden", ".dir:inner"}


def test_frontmatter_name_does_not_rename_a_command(ws: Path, home: Path) -> None:
    pcmd(ws, "named.md", "---\nname: other\n---\nbody\n")
    assert set(custom(discover(ws, home))) == {"named"}


def test_skills_are_named_by_their_directory(ws: Path, home: Path) -> None:
    skill(ws, "release-notes", "---\nname: relnotes\ndescription: notes\n---\nWrite notes\n")
    skill(home, "uskill")
    write(ws / ".claude" / "skills" / "lower" / "skill.md")
    write(ws / ".claude" / "skills" / "readme-only" / "README.md")
    write(ws / ".claude" / "skills" / "group" / "nested" / "SKILL.md")
    write(ws / ".claude" / "skills" / "loose.md")
    found = custom(discover(ws, home))
    assert set(found) == {"release-notes", "uskill"}
    assert found["release-notes"].source == "project-skill"
    assert found["release-notes"].description == "notes"
    assert found["uskill"].source == "user-skill"


def test_fields_are_read_from_frontmatter(ws: Path, home: Path) -> None:
    pcmd(
        ws,
        "maketests.md",
        "---\ndescription: Make tests\nargument-hint: [dir]\n"
        "allowed-tools: [Bash, Read]\nmodel: sonnet\n---\nWrite tests for $ARGUMENTS\n",
    )
    cmd = custom(discover(ws, home))["maketests"]
    assert cmd.description == "Make tests"
    assert cmd.argument_hint == "[dir]"
    assert cmd.frontmatter["allowed-tools"] == ["Bash", "Read"]
    assert cmd.body == "Write tests for $ARGUMENTS\n"
    assert cmd.body_line == 7
    assert cmd.path == ws / ".claude" / "commands" / "maketests.md"


def test_description_falls_back_to_first_body_line(ws: Path, home: Path) -> None:
    pcmd(ws, "plain.md", "\n# Find flaky tests\nmore\n")
    pcmd(ws, "empty.md", "")
    found = custom(discover(ws, home))
    assert found["plain"].description == "Find flaky tests"
    assert found["empty"].description is None
    assert found["empty"].body == ""


# ---------------------------------------------------------------- precedence


def test_user_command_shadows_project_command(ws: Path, home: Path) -> None:
    pcmd(ws, "shared.md", "project\n")
    write(home / ".claude" / "commands" / "shared.md", "user\n")
    result = scan(ws, home)
    winner = custom(result.commands)["shared"]
    assert (winner.source, winner.body) == ("user", "user\n")
    [lost] = [s for s in result.shadowed if s.command.name == "shared"]
    assert lost.command.source == "project" and lost.by is winner


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (("project", "project-skill"), "project-skill"),
        (("user", "project-skill"), "project-skill"),
        (("project", "user-skill"), "user-skill"),
        (("user", "user-skill"), "user-skill"),
        (("project-skill", "user-skill"), "user-skill"),
    ],
)
def test_skills_shadow_commands_and_user_shadows_project(
    ws: Path, home: Path, layout: tuple[str, str], expected: str
) -> None:
    for source in layout:
        root = home if source.startswith("user") else ws
        if source.endswith("skill"):
            skill(root, "x", f"{source}\n")
        else:
            write(root / ".claude" / "commands" / "x.md", f"{source}\n")
    winner = custom(discover(ws, home))["x"]
    assert (winner.source, winner.body) == (expected, f"{expected}\n")


def test_custom_commands_shadow_builtins(ws: Path, home: Path) -> None:
    assert {"init", "verify"} <= BUILTIN_NAMES
    pcmd(ws, "init.md", "my init\n")
    skill(ws, "verify")
    by_name = {c.name: c for c in discover(ws, home)}
    assert by_name["init"].source == "project"
    assert by_name["verify"].source == "project-skill"
    assert {c.name for c in discover(ws, home)} >= BUILTIN_NAMES


def test_nearest_project_root_wins(tmp_path: Path, home: Path) -> None:
    top = tmp_path / "top"
    ws = top / "repo" / "ws"
    write(top / ".claude" / "commands" / "dup.md", "top\n")
    write(ws / ".claude" / "commands" / "dup.md", "ws\n")
    write(top / ".claude" / "commands" / "only-top.md")
    found = custom(discover(ws, home))
    assert found["dup"].body == "ws\n"
    assert "only-top" in found


# ---------------------------------------------------------------- roots


def test_walk_stops_at_git_root_inclusive(tmp_path: Path, home: Path) -> None:
    outer = tmp_path / "outer"
    repo = outer / "repo"
    ws = repo / "sub"
    ws.mkdir(parents=True)
    (repo / ".git").write_text("gitdir: /elsewhere\n")  # a .git file counts too
    write(outer / ".claude" / "commands" / "outer.md")
    write(repo / ".claude" / "commands" / "repo.md")
    assert project_roots(ws, home) == [ws.resolve(), repo.resolve()]
    assert set(custom(discover(ws, home))) == {"repo"}


def test_walk_stops_below_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ws = home / "x" / "ws"
    ws.mkdir(parents=True)
    write(tmp_path / ".claude" / "commands" / "above-home.md")
    write(home / ".claude" / "commands" / "user.md")
    write(home / "x" / ".claude" / "commands" / "mid.md")
    assert project_roots(ws, home) == [ws.resolve(), (home / "x").resolve()]
    found = custom(discover(ws, home))
    assert set(found) == {"user", "mid"}
    assert found["user"].source == "user"


def test_user_config_dir_rules(tmp_path: Path) -> None:
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "cfg")}
    assert user_config_dir(None, None, env) == tmp_path / "cfg"
    assert user_config_dir(tmp_path, None, env) == tmp_path / ".claude"
    assert user_config_dir(tmp_path, tmp_path / "c2", env) == tmp_path / "c2"


def test_config_dir_replaces_home_claude(ws: Path, home: Path, tmp_path: Path) -> None:
    write(home / ".claude" / "commands" / "from-home.md")
    write(tmp_path / "cfg" / "commands" / "from-cfg.md")
    assert set(custom(discover(ws, home, config_dir=tmp_path / "cfg"))) == {"from-cfg"}


# ---------------------------------------------------------------- user-invocable


@pytest.mark.parametrize(
    ("value", "listed"),
    [
        ("false", False),
        ("no", False),
        ("0", False),
        ("", False),
        ("null", False),
        ("y", False),
        ("[]", False),
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("1", True),
        ('"true"', True),
        ("true # comment", True),
    ],
)
def test_user_invocable_values(ws: Path, home: Path, value: str, listed: bool) -> None:
    pcmd(ws, "c.md", f"---\nuser-invocable: {value}\n---\nbody\n")
    assert ("c" in custom(discover(ws, home))) is listed


def test_hidden_winner_still_hides_what_it_shadows(ws: Path, home: Path) -> None:
    write(home / ".claude" / "commands" / "x.md", "---\nuser-invocable: false\n---\nu\n")
    pcmd(ws, "x.md", "p\n")
    pcmd(ws, "clear.md", "---\nuser-invocable: false\n---\nc\n")
    result = scan(ws, home)
    names = result.names()
    assert "x" not in names and "clear" not in names
    assert {c.name for c in result.hidden} == {"x", "clear"}
    with pytest.raises(UsageError, match="not user-invocable"):
        find(result.commands, "/x", hidden=result.hidden)


# ---------------------------------------------------------------- bad files


def test_bad_files_are_reported_not_fatal(ws: Path, home: Path) -> None:
    pcmd(ws, "badfm.md", "---\ndescription: [unclosed\n: nonsense\n---\nbody\n")
    pcmd(ws, "unterminated.md", "---\ndescription: x\n")
    (ws / ".claude" / "commands" / "binary.md").write_bytes(b"\xff\xfe bad \x80\n")
    result = scan(ws, home)
    found = custom(result.commands)
    assert {"badfm", "unterminated", "binary"} <= set(found)
    assert found["badfm"].frontmatter == {"description": "[unclosed"}
    assert found["unterminated"].frontmatter == {}
    messages = [str(p) for p in result.problems]
    assert any("badfm.md" in m and "nonsense" in m for m in messages)
    assert any("unterminated.md" in m and "never closed" in m for m in messages)
    assert any("binary.md" in m and "UTF-8" in m for m in messages)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_skipped_and_reported(ws: Path, home: Path) -> None:
    path = pcmd(ws, "secret.md")
    path.chmod(0)
    try:
        result = scan(ws, home)
    finally:
        path.chmod(0o644)
    assert "secret" not in result.names()
    assert any(p.path == path and "cannot read" in p.message for p in result.problems)


# ---------------------------------------------------------------- symlinks


def test_symlinked_files_and_directories_are_followed(ws: Path, home: Path, tmp_path: Path) -> None:
    ext = tmp_path / "ext"
    write(ext / "target.md", "target\n")
    write(ext / "cmds" / "inner" / "deep.md")
    write(ext / "skill" / "SKILL.md")
    commands = ws / ".claude" / "commands"
    commands.mkdir(parents=True)
    (commands / "linkfile.md").symlink_to(ext / "target.md")
    (commands / "linkdir").symlink_to(ext / "cmds")
    (commands / "broken.md").symlink_to(tmp_path / "missing.md")
    (ws / ".claude" / "skills").mkdir()
    (ws / ".claude" / "skills" / "linkskill").symlink_to(ext / "skill")
    result = scan(ws, home)
    assert set(custom(result.commands)) == {"linkfile", "linkdir:inner:deep", "linkskill"}
    assert any("broken symlink" in p.message for p in result.problems)


def test_one_file_reached_twice_is_offered_once(ws: Path, home: Path) -> None:
    commands = ws / ".claude" / "commands"
    pcmd(ws, "zz.md")
    (commands / "aa.md").symlink_to("zz.md")  # first by relative path wins
    pcmd(ws, "c.md")
    (commands / "c").mkdir()
    (commands / "c" / "a.md").symlink_to("../c.md")  # "c.md" sorts before "c/a.md"
    (commands / "loop").symlink_to(".")  # must not recurse forever
    user_file = write(home / ".claude" / "commands" / "ua.md")
    (commands / "pz.md").symlink_to(user_file)  # project beats user for one file
    result = scan(ws, home)
    assert set(custom(result.commands)) == {"aa", "c", "pz"}
    assert {s.command.name for s in result.shadowed} == {"zz", "c:a", "ua"}


# ---------------------------------------------------------------- find / names


def test_find_suggests_close_names(ws: Path, home: Path) -> None:
    pcmd(ws, "testing/flakyfinder.md")
    pcmd(ws, "maketests.md")
    commands = discover(ws, home)
    assert find(commands, "/maketests").name == "maketests"
    assert find(commands, "testing:flakyfinder").source == "project"
    with pytest.raises(UsageError) as info:
        find(commands, "/flakyfindr")
    assert (
        str(info.value)
        == "unknown slash command '/flakyfindr' (did you mean /testing:flakyfinder?)"
    )
    assert info.value.exit_code == 2
    with pytest.raises(UsageError) as info:
        find(commands, "/zzzzqqq")
    assert str(info.value) == "unknown slash command '/zzzzqqq'"


@pytest.mark.parametrize(
    ("prompt", "name"),
    [
        ("/maketests backend", "maketests"),
        ("/maketests", "maketests"),
        ("  /testing:flakyfinder src\nmore", "testing:flakyfinder"),
        ("/release-notes", "release-notes"),
        ("fix the bug", None),
        ("please run /maketests", None),
        ("/", None),
        ("/ maketests", None),
        ("/usr/bin/env python", None),
        ("", None),
    ],
)
def test_command_name_of(prompt: str, name: str | None) -> None:
    assert command_name_of(prompt) == name


# ---------------------------------------------------------------- frontmatter reader


def test_frontmatter_subset() -> None:
    text = (
        "\ufeff---\r\n"
        "description: 'It''s quoted'  # comment\r\n"
        'argument-hint: "[a] [b]"\r\n'
        "allowed-tools: [Bash(git add:*), 'Read', \"Edit\"]\r\n"
        "tags:\r\n  - one\r\n  - 2\r\n"
        "long: >\r\n  folded\r\n  text\r\n"
        "keep: |\r\n  line 1\r\n  line 2\r\n"
        "disable-model-invocation: true\r\n"
        "empty:\r\n"
        "---\r\n"
        "body\r\n"
    )
    fm = split_frontmatter(text)
    assert fm.problems == []
    assert fm.fields == {
        "description": "It's quoted",
        "argument-hint": "[a] [b]",
        "allowed-tools": ["Bash(git add:*)", "Read", "Edit"],
        "tags": ["one", 2],
        "long": "folded text\n",
        "keep": "line 1\nline 2\n",
        "disable-model-invocation": True,
        "empty": None,
    }
    assert fm.body == "body\n"
    assert fm.body_line == 17


def test_frontmatter_must_open_on_the_first_line() -> None:
    fm = split_frontmatter("\n---\nkey: v\n---\nbody\n")
    assert not fm.present and fm.fields == {} and fm.body_line == 1


def test_frontmatter_keeps_good_keys_around_bad_lines() -> None:
    fm = split_frontmatter('---\na: 1\n  stray\nnot a pair\nb: "open\n---\n')
    assert fm.fields == {"a": 1, "b": '"open'}
    assert len(fm.problems) == 3


@pytest.mark.parametrize(
    ("written", "hint"),
    [("[dir]", "[dir]"), ("[pr] [priority]", "[pr] [priority]"), ('"<file>"', "<file>")],
)
def test_argument_hint_is_kept_as_written(ws: Path, home: Path, written: str, hint: str) -> None:
    pcmd(ws, "c.md", f"---\nargument-hint: {written}\n---\nbody\n")
    assert custom(discover(ws, home))["c"].argument_hint == hint


def test_merge_cli_names_adds_what_files_do_not_explain(ws: Path, home: Path) -> None:
    pcmd(ws, "maketests.md")
    merged = merge_cli_names(discover(ws, home), ["maketests", "myplugin:deploy", "newthing"])
    by_name = {c.name: c for c in merged}
    assert by_name["maketests"].source == "project"
    assert by_name["myplugin:deploy"].source == "plugin"
    assert by_name["newthing"].source == "builtin"
    assert [c.name for c in merged] == sorted(by_name)
