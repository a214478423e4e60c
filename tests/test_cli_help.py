"""The help screens a newcomer sees first: every subcommand described, flag help in plain text."""

import re

import pytest

from nerfkit.cli import main, plain_help


def _help(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([*args, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _subcommands(text):
    """(name, description) pairs of the subcommand panel of a help screen."""
    panel = text.split("subcommands")[1]
    return re.findall(r"• (\S+)\s+(\S[^\n│]*)", panel)


BAD = ("Union type", "Union[X, Y]", "``", "{None}", ":class:", ":func:")


def test_top_level_help_describes_every_subcommand(capsys):
    out = _help(capsys)
    subs = dict(_subcommands(out))
    assert set(subs) >= {"train", "distill", "render", "eval", "demo", "export"}
    assert all(len(d.strip()) > 10 for d in subs.values()), subs
    assert not [b for b in BAD if b in out]


@pytest.mark.parametrize("cmd", [("train",), ("distill",), ("export",), ("train", "ngp"),
                                 ("train", "nerf"), ("train", "video"), ("distill", "r2l"),
                                 ("render",), ("eval",), ("export", "mesh")])
def test_help_screens_read_as_plain_text(capsys, cmd):
    out = _help(capsys, *cmd)
    assert not [b for b in BAD if b in out], [b for b in BAD if b in out]
    if cmd in (("train",), ("distill",), ("export",)):
        subs = _subcommands(out)
        assert subs and all(len(d.strip()) > 10 for _, d in subs)


def test_plain_help_strips_markup():
    assert plain_help("writes ``RUN/eval`` see :class:`~nerfkit.data.scene.Scene`") == \
        "writes RUN/eval see Scene"


def test_output_that_is_a_file_is_one_clean_error(tmp_path, capsys):
    f = tmp_path / "some_file"
    f.write_text("x")
    assert main(["train", "ngp", "--output", str(f), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and "not a directory" in err[0]
