"""Every reason routing can give has French words in the notices: none falls back to its code."""

from __future__ import annotations

from typing import get_args

from aiguillage_schemas.events.routing_decisions import (
    ReferralEscalatedData,
    ReferralUnroutableData,
)
from notifications.domain.messages import ESCALATION_LABELS, UNROUTABLE_LABELS


def _reasons(model: type) -> set[str]:
    return set(get_args(model.model_fields["reason"].annotation))  # type: ignore[attr-defined]


def test_every_escalation_reason_has_french_words() -> None:
    assert _reasons(ReferralEscalatedData) <= set(ESCALATION_LABELS)


def test_every_unroutable_reason_has_french_words() -> None:
    assert _reasons(ReferralUnroutableData) <= set(UNROUTABLE_LABELS)
