"""Log lines are JSON, carry the bound ids, and never carry identity or frame locals."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from aiguillage_common.logging import configure_logging, get_logger


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    configure_logging("unit-test")
    log = get_logger("test")
    with structlog.contextvars.bound_contextvars(referral_id="ref-123456", correlation_id="c-1"):
        log.info("referral.accepted", last_name="Canaryname", phone="0600000000")
        logging.getLogger("aiokafka.fake").warning("stdlib line %s", "rendered")
        try:
            secret = "Canaryname"  # a local that must not be printed with the traceback
            raise ValueError("boom")
        except ValueError:
            log.exception("handler.failed")
        del secret
    structlog.reset_defaults()
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_every_line_is_json_with_ids_and_no_identity(lines: list[dict[str, object]]) -> None:
    assert len(lines) == 3
    for line in lines:
        assert line["service"] == "unit-test"
        assert "Canaryname" not in json.dumps(line)
    accepted, stdlib, failed = lines
    assert accepted["referral_id"] == "ref-123456"
    assert accepted["last_name"] == "[redacted]"
    assert stdlib["event"] == "stdlib line rendered"
    assert stdlib["referral_id"] == "ref-123456"
    assert "exception" in failed
