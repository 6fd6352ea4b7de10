"""What routing tells about the directory itself, published on ``directory.notices`` (key: site
id) for notifications to relay to the centre concerned.

- ``directory.capacity_confirmation_due``: a site's count for one service was last confirmed at
  ``as_of`` and will be (or already is) stale at ``stale_at``; the centre is reminded to confirm
  it before routing ranks the site lower (or stops offering it, per the policy). One event per
  (site, service, as_of): a newer confirmation makes a later reminder possible again.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from aiguillage_schemas.envelope import Contract, Envelope
from aiguillage_schemas.events.centres import CentreId, SiteId
from aiguillage_schemas.vocabulary import ServiceCode

# What routing does with a count once it is stale (its ``stale_capacity`` setting):
# ``ranked_lower`` ("rank"): still offered on the last count, after confirmed sites of similar
# distance; ``not_offered`` ("drop"): never offered until confirmed.
StaleOutcome = Literal["ranked_lower", "not_offered"]
# The reminder's own reference, quoted back by the centre. Not a referral id: a reminder is about
# no referral. It fits the referral-reference pattern of notification.issued (which must carry
# one) and its prefix says what it is.
NoticeReference = Annotated[str, StringConstraints(pattern=r"^capacite-[0-9a-f]{16}$")]


class CapacityConfirmationDueData(Contract):
    site_id: SiteId
    centre_id: CentreId
    centre_name: str = Field(min_length=1, max_length=200)
    service: ServiceCode
    places_total: int = Field(ge=0, le=10_000, description="The count on record.")
    as_of: AwareDatetime = Field(
        description="When the count on record was confirmed: the confirmation reminded about."
    )
    stale_at: AwareDatetime = Field(
        description="When the count goes stale (as_of + routing's capacity_freshness_s)."
    )
    policy: StaleOutcome = Field(
        description="What routing does once the count is stale: 'ranked_lower' (still offered, "
        "after confirmed sites of similar distance) or 'not_offered' (until confirmed)."
    )
    reference: NoticeReference = Field(
        description="The reminder's reference (not a referral id), stable per (site, service, "
        "as_of); notifications quote it to the centre."
    )


class CapacityConfirmationDue(Envelope):
    """A centre should confirm a count before it goes stale (or since it went stale)."""

    EVENT_TYPE = "directory.capacity_confirmation_due"
    SCHEMA_VERSION = 1

    event_type: Literal["directory.capacity_confirmation_due"] = (
        "directory.capacity_confirmation_due"
    )
    schema_version: Literal[1] = 1
    subject: SiteId
    data: CapacityConfirmationDueData


DIRECTORY_NOTICES: tuple[type[Envelope], ...] = (CapacityConfirmationDue,)
