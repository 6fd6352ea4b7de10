"""Demo and test signing: every prescriber of the demo registry, every centre of routing's sender
registry and the portal get a made-up secret.

The algorithm is the published one (``aiguillage_schemas.signing``); only the secrets are fake.
Production secrets are generated per prescriber and handed over out of band, never derived.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from aiguillage_common.geography import default_data_dir
from aiguillage_schemas.envelope import Envelope
from aiguillage_schemas.events.centres import CENTRE_RESPONSES, DIRECTORY_UPDATES
from aiguillage_schemas.events.referral_requests import (
    ReferralAmended,
    ReferralCancellationRequested,
)
from aiguillage_schemas.events.referral_submitted import ReferralSubmitted, ReferralSubmittedV1
from aiguillage_schemas.signing import sign

SECRETS_ENV = "AIGUILLAGE_INTAKE_SIGNING_SECRETS"
ROUTING_SECRETS_ENV = "AIGUILLAGE_ROUTING_SIGNING_SECRETS"
PORTAL_KEY_ID = "portal-2026"
# Whom the portal may name as acting (routing.domain.senders.PORTAL_ACTORS).
PORTAL_ACTORS = ("centre_user", "operator")


@cache
def demo_key_ids(registry: Path | None = None) -> dict[str, str]:
    """Prescriber id -> signing key id, from the demo registry file."""
    path = registry or default_data_dir() / "prescribers.json"
    entries = json.loads(path.read_text("utf-8"))["prescribers"]
    return {entry["prescriber_id"]: entry["signing_key_id"] for entry in entries}


def demo_secret(key_id: str) -> str:
    return f"demo-only-secret-{key_id}"


def demo_secrets_json() -> str:
    """The value of ``AIGUILLAGE_INTAKE_SIGNING_SECRETS`` for the demo and the tests."""
    return json.dumps({key: demo_secret(key) for key in demo_key_ids().values()})


def sign_as(prescriber_id: str, value: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers that authenticate ``value`` as sent by ``prescriber_id`` (a demo prescriber)."""
    key_id = demo_key_ids()[prescriber_id]
    return sign(value, key_id, demo_secret(key_id).encode("utf-8"), timestamp)


@cache
def demo_sender_keys(registry: Path | None = None) -> dict[str, str | None]:
    """Signing key id -> centre id (None for the portal), from routing's sender registry."""
    path = registry or default_data_dir() / "centre_senders.json"
    entries = json.loads(path.read_text("utf-8"))["senders"]
    return {entry["key_id"]: entry.get("centre_id") for entry in entries}


def demo_routing_secrets_json() -> str:
    """The value of ``AIGUILLAGE_ROUTING_SIGNING_SECRETS`` for the demo and the tests."""
    return json.dumps({key: demo_secret(key) for key in demo_sender_keys()})


def centre_key_id(centre_id: str) -> str:
    """The demo signing key id of a centre of ``data/cpca_centres.csv``."""
    return next(key for key, centre in demo_sender_keys().items() if centre == centre_id)


def sign_with(key_id: str, value: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers that authenticate ``value`` under a demo key id (prescriber, centre or portal)."""
    return sign(value, key_id, demo_secret(key_id).encode("utf-8"), timestamp)


def centre_topic_key(event: Envelope) -> str | None:
    """The key a centre-topic event is signed with, as routing expects: the portal's when it
    names a portal user or operator, else the key of the centre it names (an answer, a path
    report, a site added). None for any other event, and for a directory update that names
    neither (whose centre only the directory knows): it goes unsigned."""
    if not isinstance(event, CENTRE_RESPONSES + DIRECTORY_UPDATES):
        return None
    data = getattr(event, "data", None)
    actor = getattr(data, "actor", None)
    if actor is not None and actor.kind in PORTAL_ACTORS:
        return PORTAL_KEY_ID
    centre_id = getattr(data, "centre_id", None)
    return centre_key_id(centre_id) if isinstance(centre_id, str) else None


def sender_of(event: Envelope) -> str | None:
    """The prescriber a prescriber's event (submission, amendment, cancellation) comes from;
    None for every other event, which is not signed."""
    if isinstance(event, ReferralSubmitted | ReferralSubmittedV1):
        return event.data.prescriber.prescriber_id
    if isinstance(event, ReferralAmended | ReferralCancellationRequested):
        return event.data.prescriber_id
    return None
