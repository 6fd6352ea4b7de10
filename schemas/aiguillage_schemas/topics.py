"""Every Kafka topic Aiguillage uses, with its partition count: the one list that provisioning,
the services and the tests read. FastStream never creates publisher topics and gives subscriber
topics a single partition, so nothing here is left to auto-creation."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    purpose: str
    # Topic-level broker configs that provisioning creates the topic with and restores on an
    # existing topic; pairs rather than a dict so a Topic stays immutable and hashable.
    configs: tuple[tuple[str, str], ...] = ()


REFERRAL_PARTITIONS = 6

# The broker, not the producer, stamps each record with the time it was appended: intake (and
# routing, on the centres' topics) measures a signed timestamp against when the record reached
# the broker, which a sender must not choose.
LOG_APPEND_TIME = ("message.timestamp.type", "LogAppendTime")

# Prescribers (courts, prosecutors, SPIP) publish here: submissions, amendments, cancellations.
INTAKE = Topic(
    "referrals.intake",
    REFERRAL_PARTITIONS,
    "prescribers -> referral-intake",
    configs=(LOG_APPEND_TIME,),
)
# Intake's answer to input it could not accept; also intake's dead-letter topic.
REJECTED = Topic(
    "referrals.rejected", REFERRAL_PARTITIONS, "referral-intake -> prescribers, operators"
)
# Pseudonymous, identity-free referrals ready to route.
ACCEPTED = Topic("referrals.accepted", REFERRAL_PARTITIONS, "referral-intake -> routing")
# Routing decisions (routed, waitlisted, unroutable).
ROUTED = Topic("referrals.routed", REFERRAL_PARTITIONS, "routing -> notifications")
# Notifications for systems that integrate by events (centres, prescribers).
NOTIFICATIONS_OUTBOUND = Topic(
    "notifications.outbound", REFERRAL_PARTITIONS, "notifications -> centres, prescribers"
)
# Each recipient that integrates by events reads its own notices on a topic of its own, that a
# broker ACL grants to it alone (notifications.outbound carries everybody's: operators only). One
# partition: a recipient's volume is small and one partition keeps all its notices in order.
NOTICE_TOPIC_PREFIX = "notifications."


_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def is_topic_name(name: str) -> bool:
    """What Kafka accepts as a topic name (a registry id may hold other characters)."""
    return bool(_TOPIC_NAME.match(name))


def notice_topic(recipient_kind: str, recipient_id: str) -> Topic:
    """``notifications.<kind>.<id>``, e.g. ``notifications.prescriber.spip-69``."""
    return Topic(
        f"{NOTICE_TOPIC_PREFIX}{recipient_kind}.{recipient_id}",
        1,
        f"notifications -> {recipient_kind} {recipient_id} only",
    )


# Dead letters of the internal consumers: a poison message lands here with a reason.
ROUTING_DEAD_LETTER = Topic("routing.dead-letter", REFERRAL_PARTITIONS, "routing -> operators")
# Centres answer offers and report paths (key: referral id, so they follow the offer's order).
# Signed like referrals.intake, hence stamped by the broker too.
CENTRE_RESPONSES = Topic(
    "centres.responses",
    REFERRAL_PARTITIONS,
    "centres, portal -> routing",
    configs=(LOG_APPEND_TIME,),
)
# Centres and operators change the directory (key: site id, so one site's changes stay ordered).
DIRECTORY_UPDATES = Topic(
    "directory.updates", 3, "centres, portal -> routing", configs=(LOG_APPEND_TIME,)
)
# Routing's notices about the directory for centres (key: site id): a count to confirm before it
# goes stale. Notifications relays them on the centre's channels.
DIRECTORY_NOTICES = Topic("directory.notices", 3, "routing -> notifications")
NOTIFICATIONS_DEAD_LETTER = Topic(
    "notifications.dead-letter", REFERRAL_PARTITIONS, "notifications -> operators"
)
# Dead letters of intake's own internal consumers (routing events it follows to know which
# centre may receive an identity); refused prescriber input stays on referrals.rejected.
INTAKE_DEAD_LETTER = Topic(
    "intake.dead-letter", REFERRAL_PARTITIONS, "referral-intake -> operators"
)

# Dead letters of the portal's projection consumers (what it could not read of routing, intake
# or the directory).
PORTAL_DEAD_LETTER = Topic("portal.dead-letter", REFERRAL_PARTITIONS, "portal -> operators")

# Prescriber registry updates (administrators -> intake, notifications), keyed by prescriber id.
PRESCRIBERS_REGISTRY = Topic("prescribers.registry", 3, "registry administrators -> services")

ALL_TOPICS: tuple[Topic, ...] = (
    INTAKE,
    REJECTED,
    ACCEPTED,
    ROUTED,
    NOTIFICATIONS_OUTBOUND,
    ROUTING_DEAD_LETTER,
    NOTIFICATIONS_DEAD_LETTER,
    INTAKE_DEAD_LETTER,
    PRESCRIBERS_REGISTRY,
    CENTRE_RESPONSES,
    DIRECTORY_UPDATES,
    DIRECTORY_NOTICES,
    PORTAL_DEAD_LETTER,
)
