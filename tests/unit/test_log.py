"""The nesting logger: console text, records, JSON-lines files, threads."""

from __future__ import annotations

import contextvars
import io
import json
import threading
from pathlib import Path

import pytest

from nxc.log import Level, Logger


def console() -> tuple[Logger, io.StringIO]:
    stream = io.StringIO()
    return Logger(stream=stream), stream


def test_plain_console_indents_nested_blocks() -> None:
    logger, stream = console()
    logger.info("top")
    with logger.nested("outer", node="node1"):
        logger.info("inside", node="node1")
        with logger.nested("inner"):
            logger.warning("careful")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "top"
    assert lines[1] == "node1: outer"
    assert lines[2] == "  node1: inside"
    assert lines[3] == "  inner"
    assert lines[4] == "    warning: careful"
    assert lines[5].startswith("  (finished: inner, in ") and lines[5].endswith("s)")
    assert lines[6].startswith("node1: (finished: outer, in ")
    assert "\x1b[" not in stream.getvalue()  # not a terminal: no colour


def test_multiline_messages_stay_indented() -> None:
    logger, stream = console()
    with logger.nested("block"):
        logger.info("first\nsecond")
    assert stream.getvalue().splitlines()[1:3] == ["  first", "    second"]


def test_quick_empty_blocks_print_no_end_line_but_keep_the_record() -> None:
    logger, stream = console()
    with logger.nested("quick"):
        pass
    assert stream.getvalue() == "quick\n"
    end = logger.records()[-1]
    assert end.kind == "end" and end.ok is True and end.duration is not None


def test_failure_is_recorded_once_on_the_innermost_block() -> None:
    logger, stream = console()
    with pytest.raises(ValueError), logger.nested("outer"), logger.nested("inner"):
        raise ValueError("bad value\nsecond line")
    ends = [r for r in logger.records() if r.kind == "end"]
    assert [(r.message, r.ok, r.error) for r in ends] == [
        ("inner", False, "ValueError: bad value"),
        ("outer", False, None),
    ]
    text = stream.getvalue()
    assert "(failed: inner, after " in text and ": ValueError: bad value)" in text
    assert "(failed: outer, after " in text


def test_level_filters_the_console_not_the_records() -> None:
    logger, stream = console()
    logger.debug("hidden")
    logger.set_level("debug")
    logger.debug("shown")
    logger.set_level(Level.ERROR)
    logger.warning("hidden too")
    logger.error("loud")
    assert stream.getvalue().splitlines() == ["shown", "error: loud"]
    assert [r.message for r in logger.records()] == ["hidden", "shown", "hidden too", "loud"]


def test_level_parse() -> None:
    assert Level.parse("Warning") is Level.WARNING
    assert Level.parse(40) is Level.ERROR
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        Level.parse("loud")


def test_attach_file_writes_json_lines_and_replays(tmp_path: Path) -> None:
    logger, _ = console()
    logger.info("before", node="n1")
    path = tmp_path / "logs" / "run.jsonl"
    logger.attach_file(path)
    with logger.nested("phase", step=2):
        logger.error("broken", code=7, where=Path("/x"))
    logger.detach_file(path)
    logger.info("after")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["kind"], r["msg"]) for r in records] == [
        ("line", "before"),
        ("begin", "phase"),
        ("line", "broken"),
        ("end", "phase"),
    ]
    assert records[0]["attrs"] == {"node": "n1"} and records[0]["level"] == "info"
    assert records[2]["attrs"] == {"code": 7, "where": "/x"} and records[2]["depth"] == 1
    assert records[3]["ok"] is True and records[3]["duration"] >= 0
    assert [r["seq"] for r in records] == [0, 1, 2, 3]
    assert logger.files == []


def test_mark_records_and_text() -> None:
    logger, _ = console()
    logger.info("one")
    mark = logger.mark()
    with logger.nested("two"):
        logger.info("three")
    until = logger.mark()
    logger.info("four")
    assert [r.message for r in logger.records(mark, until)] == ["two", "three", "two"]
    text = logger.text(mark, until)
    assert text.splitlines()[:2] == ["two", "  three"]
    assert logger.text(min_level=Level.WARNING) == ""


def test_colour_on_a_terminal() -> None:
    stream = io.StringIO()
    logger = Logger(stream=stream, color=True)
    with logger.nested("coloured", node="n1"):
        logger.error("red [not markup]")
    text = stream.getvalue()
    assert "\x1b[" in text
    assert "red [not markup]" in text  # brackets are not rich markup


def test_threads_nest_under_the_block_that_started_them() -> None:
    logger, _ = console()
    with logger.nested("parent"):
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(logger.info, "from worker"))
        worker.start()
        worker.join()
        plain = threading.Thread(target=logger.info, args=("fresh thread",))
        plain.start()
        plain.join()
    depths = {r.message: r.depth for r in logger.records() if r.kind == "line"}
    assert depths == {"from worker": 1, "fresh thread": 0}


def test_keep_bounds_memory() -> None:
    logger = Logger(stream=io.StringIO(), keep=3)
    for i in range(10):
        logger.info(str(i))
    assert [r.message for r in logger.records()] == ["7", "8", "9"]
    assert logger.mark() == 10


def test_broken_console_does_not_break_logging() -> None:
    stream = io.StringIO()
    logger = Logger(stream=stream)
    stream.close()
    logger.info("still recorded")
    assert logger.records()[-1].message == "still recorded"


def test_default_logger_writes_to_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from nxc.log import log

    log.info("to stderr")
    assert "to stderr" in capsys.readouterr().err
