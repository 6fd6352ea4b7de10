"""Retention: the purge command makes identities of long-closed referrals unreadable, for good."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from cryptography.exceptions import InvalidTag

from aiguillage_demo.samples import make_cancellation, make_referral
from aiguillage_schemas import topics
from referral_intake.adapters.identity_cipher import IdentityCipher, SealedIdentity
from tests.conftest import Isolated
from tests.support.services import BIN, TEST_MASTER_KEY
from tests.support.waiting import eventually


async def test_purge_destroys_keys_of_referrals_closed_longer_than_the_period(
    isolated: Isolated,
) -> None:
    await isolated.start_all("referral-intake")
    intake = isolated.topic(topics.INTAKE)
    schema = isolated.schema("referral-intake")
    old, recent, still_open = (make_referral(i) for i in (1, 2, 3))
    for referral in (old, recent, still_open):
        await isolated.kafka.send_event(intake, referral)
    for referral in (old, recent):
        await isolated.kafka.send_event(
            intake, make_cancellation(referral, reason="prescriber_decision")
        )
    await eventually(
        lambda: isolated.count(
            f"SELECT count(*) FROM {schema}.referrals WHERE closed_at IS NOT NULL"
        ),
        lambda n: n == 2,
        timeout_s=60,
        what="two referrals cancelled",
    )
    # The old one was closed 40 days ago; the retention period is 30 days.
    await isolated.db.execute(
        f"UPDATE {schema}.referrals SET closed_at = now() - interval '40 days'"
        " WHERE referral_id = $1",
        old.subject,
    )
    cipher = IdentityCipher(TEST_MASTER_KEY, "k1")

    async def sealed(referral_id: str) -> SealedIdentity:
        row = await isolated.db.fetchrow(
            f"SELECT ciphertext, wrapped_key, master_key_id FROM {schema}.identities"
            " WHERE referral_id = $1",
            referral_id,
        )
        assert row is not None
        return SealedIdentity(row["ciphertext"], row["wrapped_key"], row["master_key_id"])

    copy_left_behind = await sealed(old.subject)  # e.g. a backup or a topic holding the ciphertext
    assert cipher.open(old.subject, copy_left_behind) == old.data.identity

    env = {
        **os.environ,
        **isolated.processes[0].env,
        "AIGUILLAGE_INTAKE_RETENTION_DAYS": "30",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "aiguillage-intake-purge")],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert b'"purged": 1' in done.stdout
    assert old.data.identity.last_name.encode() not in done.stdout

    purged = await sealed(old.subject)
    assert purged.wrapped_key is None
    assert purged.ciphertext == b""
    # The person key existed only wrapped in that row: no key left in the store opens the copy,
    # not even with the master key.
    remaining = await isolated.db.fetch(
        f"SELECT wrapped_key FROM {schema}.identities WHERE wrapped_key IS NOT NULL"
    )
    assert len(remaining) == 2
    for row in remaining:
        with pytest.raises(InvalidTag):
            cipher.open(old.subject, SealedIdentity(copy_left_behind.ciphertext, row[0], "k1"))
    assert cipher.open(recent.subject, await sealed(recent.subject)) == recent.data.identity
    assert cipher.open(still_open.subject, await sealed(still_open.subject)) == (
        still_open.data.identity
    )
    rows = {
        r["referral_id"]: r
        for r in await isolated.db.fetch(f"SELECT referral_id, purged_at FROM {schema}.referrals")
    }
    assert rows[old.subject]["purged_at"] is not None
    assert rows[recent.subject]["purged_at"] is None
