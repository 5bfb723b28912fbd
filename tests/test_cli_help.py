"""The command line a user reads: every flag of every command has help, and a required flag
names no default."""

from __future__ import annotations

import argparse

from fastdet.cli import build_parser


def _commands(parser, words=()):
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*words, name))


def test_every_flag_has_help_and_no_required_flag_shows_a_default():
    seen = 0
    for words, parser in _commands(build_parser()):
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"fastdet {' '.join(words)} {'/'.join(a.option_strings) or a.dest}"
            assert a.help and a.help.strip(), f"{where}: no help"
            if a.required or "required" in a.help:
                assert "(default" not in a.help, f"{where}: required, yet shows a default"
            seen += 1
    assert seen > 200  # every task's train, predict and evaluate were walked


def test_train_model_is_required_and_says_so():
    parser = build_parser()
    for kind in ("seg", "det", "cls"):
        sub = next(s for w, s in _commands(parser) if w == ("train", kind))
        model = next(a for a in sub._actions if "--model" in a.option_strings)
        assert "required unless --resume" in model.help and "default" not in model.help
