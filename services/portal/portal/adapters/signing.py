"""Signs each record the portal publishes, at send time (see ``outbox.RecordSigner``).

The shared contract of the centre topics: the three ``x-aiguillage-*`` headers of
``aiguillage_schemas.signing``, made with the portal's key (``portal-2026`` by default), whose
secret routing holds in ``AIGUILLAGE_ROUTING_SIGNING_SECRETS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from aiguillage_common.kafka import OutgoingRecord
from aiguillage_schemas.signing import sign


def record_signer(
    key_id: str, secret: bytes, clock: Callable[[], float] | None = None
) -> Callable[[OutgoingRecord], OutgoingRecord]:
    def signed(record: OutgoingRecord) -> OutgoingRecord:
        timestamp = int(clock()) if clock is not None else None
        headers = {**record.headers, **sign(record.value, key_id, secret, timestamp)}
        return dataclasses.replace(record, headers=headers)

    return signed
