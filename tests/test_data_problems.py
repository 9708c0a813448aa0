"""Tests of birdclef.data.problems: problem records, the fail-mode error, the quarantine table."""

import pytest

from birdclef.data.problems import REASONS, BadInputError, Problem, count_by_reason, quarantine_frame


def test_bad_input_error_lists_every_problem():
    problems = [Problem("unknown_label", "train.csv:3", "train_audio/x/a.ogg", "primary_label 'x' unknown"),
                Problem("truncated", "train.csv:7", "train_audio/y/b.ogg", "the last Ogg page is cut"),
                Problem("truncated", "", "train_soundscapes/s.ogg", "only 3 of 9 frames decode")]
    message = str(BadInputError(problems))
    assert "3 bad input problem(s) (1 unknown_label, 2 truncated)" in message
    for p in problems:
        assert str(p) in message
    assert "train.csv:7, train_audio/y/b.ogg: truncated:" in message


def test_problem_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown problem kind 'weird'"):
        Problem("weird", "", "", "")


def test_quarantine_groups_by_reason_and_keeps_file_order():
    problems = [Problem("truncated", "train.csv:10", "f10", "cut"), Problem("malformed", "train.csv:9", "", "x"),
                Problem("truncated", "train.csv:2", "f2", "cut")]
    q = quarantine_frame(problems)
    assert list(q.columns) == ["kind", "row", "file", "problem"]
    assert q["row"].tolist() == ["train.csv:9", "train.csv:10", "train.csv:2"]
    counts = count_by_reason(problems)
    assert list(counts) == list(REASONS) and counts["truncated"] == 2 and counts["empty"] == 0
    assert quarantine_frame([]).empty
