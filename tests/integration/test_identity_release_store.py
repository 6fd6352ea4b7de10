"""Intake's identity release against PostgreSQL: one read, then an audit that refuses a grant on a
referral cancelled since, even one whose cancellation is committing at that very moment."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from aiguillage_common.identity_requests import Release
from aiguillage_demo.samples import make_referral
from aiguillage_schemas import topics
from referral_intake.adapters.identity_cipher import IdentityCipher
from referral_intake.adapters.postgres import PostgresReleaseStore
from referral_intake.domain.identity_release import decide_release
from referral_intake.use_cases.identity_release import (
    ROUTED_CONSUMER,
    ReleaseRequest,
    release_identity,
)
from tests.conftest import Isolated
from tests.support.services import TEST_MASTER_KEY
from tests.support.waiting import eventually

CENTRE = "ARA-LYON"
APPLICATION = f"release-store-test-{uuid.uuid4().hex[:8]}"  # finds this test's sessions only


@pytest.fixture
async def schema_pool(isolated: Isolated) -> AsyncIterator[asyncpg.Pool]:
    schema = isolated.schema("referral-intake")
    async with isolated.schema_pool(schema, max_size=4, application_name=APPLICATION) as pool:
        yield pool


async def _stored_referral_held_by(isolated: Isolated, pool: asyncpg.Pool, index: int) -> str:
    """A referral accepted by intake (started here, as a process), then held by CENTRE."""
    await isolated.start_all("referral-intake")
    referral = make_referral(index)
    await isolated.kafka.send_event(isolated.topic(topics.INTAKE), referral)
    await eventually(
        lambda: pool.fetchval(
            "SELECT count(*) FROM identities WHERE referral_id = $1", referral.subject
        ),
        lambda n: n == 1,
        timeout_s=60,
        what="the referral stored",
    )
    await pool.execute(
        "INSERT INTO identity_holders (referral_id, centre_id, state, event_id)"
        " VALUES ($1, $2, 'offered', $3)",
        referral.subject,
        CENTRE,
        uuid.uuid4(),
    )
    return referral.subject


def _store(pool: asyncpg.Pool) -> PostgresReleaseStore:
    return PostgresReleaseStore(pool, IdentityCipher(TEST_MASTER_KEY, "k1"))


async def _audit(pool: asyncpg.Pool, referral_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT outcome FROM identity_releases WHERE referral_id = $1 ORDER BY id", referral_id
    )
    return [row["outcome"] for row in rows]


async def test_the_holder_gets_the_identity_read_and_audited_once(
    isolated: Isolated, schema_pool: asyncpg.Pool
) -> None:
    referral_id = await _stored_referral_held_by(isolated, schema_pool, 1)
    store = _store(schema_pool)

    answer = await release_identity(ReleaseRequest(referral_id, CENTRE), store)
    assert answer.outcome is Release.GRANTED
    assert answer.identity == make_referral(1).data.identity
    refused = await release_identity(ReleaseRequest(referral_id, "NA-BORDEAUX"), store)
    assert (refused.outcome, refused.identity) == (Release.NOT_HOLDER, None)
    unseen = await release_identity(ReleaseRequest(referral_id, CENTRE, uuid.uuid4()), store)
    assert unseen.outcome is Release.NOT_YET_KNOWN  # names an offer intake has not handled
    assert await _audit(schema_pool, referral_id) == ["granted", "not_holder", "not_yet_known"]
    assert (await store.release_view("ref-nobody-0001", ROUTED_CONSUMER, None)).state is None


async def _grant_audited_while_committing(
    pool: asyncpg.Pool, store: PostgresReleaseStore, referral_id: str, change: str, *args: object
) -> bool:
    """Read the referral, then audit a grant while ``change`` (SQL) is being committed by
    another transaction: the audit must wait for it. Whether the grant was recorded."""
    view = await store.release_view(referral_id, ROUTED_CONSUMER, None)
    assert decide_release(view.state, CENTRE, view.offer_seen) is Release.GRANTED
    async with pool.acquire() as other, other.transaction():
        await other.execute(change, referral_id, *args)
        audit = asyncio.create_task(store.audit_release(referral_id, CENTRE, Release.GRANTED, view))
        await eventually(
            lambda: pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = $1 AND wait_event_type = 'Lock'",
                APPLICATION,
            ),
            lambda waiting: waiting >= 1,
            timeout_s=10,
            what="the audit waiting for the other transaction",
        )
        assert not audit.done()
    return await audit


async def test_a_grant_waits_for_a_committing_cancellation_and_is_then_refused(
    isolated: Isolated, schema_pool: asyncpg.Pool
) -> None:
    referral_id = await _stored_referral_held_by(isolated, schema_pool, 2)
    store = _store(schema_pool)
    cancel = "UPDATE referrals SET status = 'cancelled' WHERE referral_id = $1"
    # The cancellation committed first: nothing granted.
    assert await _grant_audited_while_committing(schema_pool, store, referral_id, cancel) is False
    answer = await release_identity(ReleaseRequest(referral_id, CENTRE), store)
    assert (answer.outcome, answer.identity) == (Release.GONE, None)
    assert await _audit(schema_pool, referral_id) == ["gone"]


async def test_a_grant_read_before_a_committing_amendment_releases_the_amended_identity(
    isolated: Isolated, schema_pool: asyncpg.Pool
) -> None:
    referral_id = await _stored_referral_held_by(isolated, schema_pool, 3)
    store = _store(schema_pool)
    amended = make_referral(3).data.identity.model_copy(update={"phone": "0600000099"})
    sealed = IdentityCipher(TEST_MASTER_KEY, "k1").seal(referral_id, amended)
    amend = (
        "UPDATE identities SET ciphertext = $2, wrapped_key = $3, master_key_id = $4"
        " WHERE referral_id = $1"
    )
    recorded = await _grant_audited_while_committing(
        schema_pool, store, referral_id, amend, sealed.ciphertext, sealed.wrapped_key, "k1"
    )
    assert recorded is False  # the version read is gone: never released
    answer = await release_identity(ReleaseRequest(referral_id, CENTRE), store)
    assert answer.outcome is Release.GRANTED
    assert answer.identity == amended
    assert await _audit(schema_pool, referral_id) == ["granted"]
