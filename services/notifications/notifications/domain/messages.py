"""Who is told what after a routing decision, in French, with no identity or judicial detail.

Notification ids derive from the triggering event and the recipient, so a redelivered decision
yields the same notifications, which the database and consumers recognise.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from aiguillage_schemas.events.notifications import NotificationTopic, RecipientKind
from aiguillage_schemas.events.routing_decisions import ReferralRouted, ReferralUnroutable

_IDS = uuid.UUID("9d3f1c0e-7b2a-4e55-8f61-2a9c3e7d5b14")


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: uuid.UUID
    referral_id: str
    recipient_kind: RecipientKind
    recipient_id: str
    topic: NotificationTopic
    site_id: str | None
    title: str
    body: str


def _id(event_id: uuid.UUID, recipient_kind: str, recipient_id: str) -> uuid.UUID:
    return uuid.uuid5(_IDS, f"{event_id}:{recipient_kind}:{recipient_id}")


def notifications_for(event: ReferralRouted | ReferralUnroutable) -> list[Notification]:
    reference = event.subject
    if isinstance(event, ReferralUnroutable):
        prescriber = event.data.prescriber_id
        return [
            Notification(
                _id(event.event_id, "prescriber", prescriber),
                reference,
                "prescriber",
                prescriber,
                "referral_unroutable",
                None,
                f"Orientation {reference} : aucun site disponible",
                (
                    f"Aucun site du réseau CPCA ne peut accueillir l'orientation {reference} "
                    f"({event.data.explanation}). Un coordinateur reprend le dossier et vous "
                    "recontactera."
                ),
            )
        ]
    site = event.data.site
    prescriber = event.data.prescriber_id
    return [
        Notification(
            _id(event.event_id, "centre", site.centre_id),
            reference,
            "centre",
            site.centre_id,
            "referral_offered",
            site.site_id,
            f"Nouvelle orientation {reference} proposée au site {site.site_id}",
            (
                f"Une nouvelle orientation ({reference}) est proposée à votre site {site.site_id}. "
                "Merci d'indiquer si vous l'acceptez; les coordonnées de la personne sont "
                "accessibles par votre canal sécurisé."
            ),
        ),
        Notification(
            _id(event.event_id, "prescriber", prescriber),
            reference,
            "prescriber",
            prescriber,
            "referral_routed",
            site.site_id,
            f"Orientation {reference} : adressée à {site.centre_name}",
            (
                f"L'orientation {reference} a été adressée à {site.centre_name} "
                f"(site {site.site_id}). Le centre prendra contact avec la personne; vous serez "
                "informé de chaque étape du parcours."
            ),
        ),
    ]
