"""Who is told what, in French, with no identity, and on which channels. Pure: no I/O.

An event becomes notifications (one per recipient, rendered from a template and facts), each with
one delivery per channel of its recipient. Ids derive from the triggering event, the recipient and
the channel, so a redelivered event plans the very same rows, which the database recognises.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiguillage_schemas.events.directory_notices import CapacityConfirmationDue
from aiguillage_schemas.events.notifications import (
    DeliveryChannel,
    NotificationTopic,
    RecipientKind,
)
from aiguillage_schemas.events.referral_lifecycle import ReferralAccepted, ReferralRejected
from aiguillage_schemas.events.routing_decisions import (
    ROUTING_DECISION_EVENTS,
    HousingOffered,
    HousingUpdated,
    PathReported,
    ReferralEscalated,
    ReferralPlaced,
    ReferralRouted,
    ReferralUnroutable,
    ReferralWaitlisted,
    ReferralWithdrawn,
    RoutingDecisionEvent,
    SiteRef,
)
from notifications.domain.delivery import FallbackReason
from notifications.domain.recipients import Channel, Recipients
from notifications.domain.rejection_reasons import explanation, problems, reason_label
from notifications.domain.templates import Rendered, Templates

_IDS = uuid.UUID("9d3f1c0e-7b2a-4e55-8f61-2a9c3e7d5b14")
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{5,63}$")  # ReferralId of the contracts
PARIS = ZoneInfo("Europe/Paris")

RoutingEvent = RoutingDecisionEvent
InboundEvent = RoutingEvent | ReferralAccepted | ReferralRejected | CapacityConfirmationDue
ROUTING_EVENTS = ROUTING_DECISION_EVENTS

SERVICE_LABELS = {
    "initial_assessment": "évaluation initiale",
    "responsibility_course": "stage de responsabilisation",
    "discussion_group": "groupe de parole",
    "psychological_followup": "suivi psychologique",
    "psychiatric_followup": "suivi psychiatrique",
    "addiction_care": "soins en addictologie",
    "social_support": "accompagnement social",
    "employment_support": "accompagnement vers l'emploi",
    "eviction_housing": "hébergement (éviction du domicile)",
    "probationary_placement": "placement probatoire",
    "helpline_orientation": "écoute et orientation",
}
REPORT_LABELS = {
    "appointment_scheduled": "rendez-vous fixé",
    "attended": "présence constatée",
    "no_show": "absence constatée",
    "module_completed": "module terminé",
    "path_completed": "parcours terminé",
    "path_terminated": "parcours interrompu",
    "breach_suspected": "manquement suspecté à l'obligation de soins ou de stage",
}
TERMINATION_LABELS = {
    "completed_early": "achevé avant le terme prévu",
    "excluded": "exclusion par le centre",
    "moved_away": "déménagement",
    "refused": "refus de la personne",
    "other": "autre motif",
}
ESCALATION_LABELS = {
    "attempts_exhausted": "plusieurs sites ont décliné ou n'ont pas répondu",
    "no_feasible_site": "aucun site ne peut accueillir la personne en l'état",
    "urgent_no_place": "orientation urgente sans place disponible à portée ; elle reste en tête "
    "de file",
}
HOUSING_ESCALATION_LABELS = {
    "declined": "la plateforme nationale d'hébergement a refusé l'hébergement ; un coordinateur "
    "cherche une solution d'hébergement, la prise en charge au centre continue",
    "timed_out": "la plateforme nationale d'hébergement n'a pas répondu dans le délai ; un "
    "coordinateur cherche une solution d'hébergement, la prise en charge au centre continue",
}
# What happens to a count left unconfirmed, per routing's policy (CapacityConfirmationDue.policy).
STALE_OUTCOME_LABELS = {
    "ranked_lower": "votre site reste proposé sur la base de ce nombre, mais passe après les "
    "sites dont les places sont confirmées",
    "not_offered": "plus aucune orientation ne sera proposée à votre site pour ce service tant "
    "que le nombre n'est pas confirmé",
}
UNROUTABLE_LABELS = {
    "no_site_offers_services": "aucun site ne propose les services demandés",
    "all_sites_excluded": "tous les sites possibles sont exclus par les interdictions",
    "territory_not_served": "le territoire n'est couvert par aucun centre",
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification on one channel; ``delivery_id`` is also the idempotency key."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    channel: DeliveryChannel
    target: str
    position: int  # 0 = primary
    fallback_for: uuid.UUID | None = None
    fallback_reason: FallbackReason | None = None  # set with ``fallback_for``


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
    email_text: str = ""
    email_html: str = ""
    facts: Mapping[str, str] = field(default_factory=dict)
    deliveries: tuple[Delivery, ...] = ()


@dataclass(frozen=True, slots=True)
class Reminder:
    """Fires once before the centre's answer deadline unless the offer was settled meanwhile."""

    reminder_id: uuid.UUID
    referral_id: str
    correlation_id: uuid.UUID
    centre_id: str
    centre_name: str
    site_id: str
    answer_by: datetime
    fire_at: datetime


@dataclass(frozen=True, slots=True)
class DigestEntry:
    """A notice told by e-mail in its recipient's digest rather than alone: a sender whose 300
    records are refused in a second gets one e-mail listing them, not 300; a centre whose 27
    counts fall due together gets one reminder listing them, not 27. Each entry is still its own
    notification on the Kafka channel. Digests are per topic: one e-mail never mixes kinds."""

    recipient_kind: RecipientKind
    recipient_id: str
    address: str
    notification_id: uuid.UUID
    facts: Mapping[str, str]
    topic: NotificationTopic = "referral_rejected"


@dataclass(frozen=True, slots=True)
class Plan:
    notifications: tuple[Notification, ...]
    cancel_reminders: bool = False  # the referral's pending reminder no longer applies
    reminder: Reminder | None = None
    unknown_recipients: tuple[str, ...] = ()
    digest: tuple[DigestEntry, ...] = ()


# Topics whose e-mails are grouped per recipient over a short window, and the template of a
# digest of several (a digest of one reads as the topic's own e-mail).
DIGEST_TEMPLATES: Mapping[str, str] = {
    "referral_rejected": "referral_rejected_digest",
    "capacity_confirmation_due": "capacity_confirmation_due_digest",
}
DIGESTED_TOPICS: frozenset[str] = frozenset(DIGEST_TEMPLATES)


def notification_id(event_id: uuid.UUID, recipient_kind: str, recipient_id: str) -> uuid.UUID:
    return uuid.uuid5(_IDS, f"{event_id}:{recipient_kind}:{recipient_id}")


def delivery_id(notification: uuid.UUID, channel: str, position: int) -> uuid.UUID:
    return uuid.uuid5(notification, f"delivery:{position}:{channel}")


def fallback_delivery_id(failed: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(failed, "fallback")


def french_datetime(moment: datetime) -> str:
    local = moment.astimezone(PARIS)
    return local.strftime("%d/%m/%Y à %H:%M") + " (heure de Paris)"


@dataclass(frozen=True)
class _Draft:
    kind: RecipientKind
    recipient_id: str
    topic: NotificationTopic
    site_id: str | None
    facts: dict[str, str]


class Planner:
    def __init__(
        self,
        recipients: Recipients,
        templates: Templates,
        reminder_before: timedelta,
        digest_window: timedelta = timedelta(seconds=30),
        portal_url: str = "",
    ) -> None:
        self._recipients = recipients
        self._templates = templates
        self._reminder_before = reminder_before
        # How long a digest's e-mail waits for more entries after its first one.
        self.digest_window = digest_window
        # The portal's public address: offers and reminders link to the offer's page there.
        self._portal_url = portal_url.rstrip("/")

    def offer_facts(self, referral_id: str) -> dict[str, str]:
        """Where the centre reads and answers the offer: the deep link to its page in the portal
        (the pseudonymous reference only, never anything about the person)."""
        if not self._portal_url:
            return {"offer_url": "", "where": "dans votre espace sécurisé"}
        url = f"{self._portal_url}/centre/offres/{quote(referral_id, safe='')}"
        return {"offer_url": url, "where": f"dans le portail Aiguillage : {url}"}

    def plan(self, event: InboundEvent, now: datetime) -> Plan:
        drafts = self._drafts(event)
        # A rejection's subject is whatever key the sender used; quote it back only when it is a
        # well-formed reference (the outbound contract requires one). A capacity reminder is about
        # no referral: it carries its own reference (``capacite-<16 hex>``), never a site id.
        if isinstance(event, CapacityConfirmationDue):
            reference = event.data.reference
        else:
            reference = event.subject if _REFERENCE.match(event.subject) else "unknown"
        common = {"reference": reference, "correlation_id": str(event.correlation_id)}
        notifications, unknown, digest = [], [], []
        for draft in drafts:
            nid = notification_id(event.event_id, draft.kind, draft.recipient_id)
            digested = draft.topic in DIGESTED_TOPICS
            notification = self._notification(nid, reference, draft, common, digested)
            entries = [
                DigestEntry(
                    draft.kind, draft.recipient_id, c.target, nid, notification.facts, draft.topic
                )
                for c in self._channels(draft)
                if digested and c.type == "email"
            ]
            digest.extend(entries)
            if not notification.deliveries and not entries:
                unknown.append(f"{draft.kind}:{draft.recipient_id}")
            notifications.append(notification)
        settled = isinstance(
            event,
            ReferralRouted
            | ReferralPlaced
            | ReferralWithdrawn
            | ReferralEscalated
            | ReferralWaitlisted
            | ReferralUnroutable,
        )
        return Plan(
            tuple(notifications),
            cancel_reminders=settled,
            reminder=self._reminder(event, now) if isinstance(event, ReferralRouted) else None,
            unknown_recipients=tuple(unknown),
            digest=tuple(digest),
        )

    def digest_email(
        self, digest_id: uuid.UUID, topic: str, items: Sequence[Mapping[str, str]]
    ) -> Rendered:
        """The e-mail of a digest of ``topic`` holding ``items`` (the facts of each entry, in
        order): one entry reads as it always did; several read as one list, each entry written
        by the digest template's ``[item]`` section, the rest from the first entry's facts."""
        if len(items) == 1:
            return self._templates.render(topic, items[0])
        digest = DIGEST_TEMPLATES[topic]
        facts = {
            **items[0],
            "count": str(len(items)),
            "items": self._templates.render_items(digest, items),
            "reference": "plusieurs, voir la liste",
            "correlation_id": str(digest_id),
        }
        return self._templates.render(digest, facts)

    def _channels(self, draft: _Draft) -> tuple[Channel, ...]:
        recipient = self._recipients.find(draft.kind, draft.recipient_id)
        return recipient.channels if recipient else ()

    def reminder_notification(self, reminder: Reminder) -> Notification:
        draft = _Draft(
            "centre",
            reminder.centre_id,
            "answer_reminder",
            reminder.site_id,
            {
                "site_id": reminder.site_id,
                "centre_name": reminder.centre_name,
                "answer_by": french_datetime(reminder.answer_by),
                **self.offer_facts(reminder.referral_id),
            },
        )
        common = {"reference": reminder.referral_id, "correlation_id": str(reminder.correlation_id)}
        nid = notification_id(reminder.reminder_id, "centre", reminder.centre_id)
        return self._notification(nid, reminder.referral_id, draft, common)

    def _notification(
        self,
        nid: uuid.UUID,
        reference: str,
        draft: _Draft,
        common: Mapping[str, str],
        digested: bool = False,
    ) -> Notification:
        facts = {**common, **draft.facts}
        rendered = self._templates.render(draft.topic, facts)
        deliveries = tuple(
            Delivery(
                delivery_id(nid, channel.type, position),
                nid,
                channel.type,
                channel.target,
                position,
            )
            for position, channel in enumerate(self._channels(draft))
            if not (digested and channel.type == "email")  # e-mailed in the digest
        )
        return Notification(
            nid,
            reference,
            draft.kind,
            draft.recipient_id,
            draft.topic,
            draft.site_id,
            rendered.subject,
            rendered.text,
            rendered.email_text,
            rendered.email_html,
            facts,
            deliveries,
        )

    def _reminder(self, event: ReferralRouted, now: datetime) -> Reminder | None:
        answer_by = event.data.answer_by
        if answer_by is None or answer_by <= now:
            return None
        site = event.data.site
        return Reminder(
            reminder_id=uuid.uuid5(event.event_id, "answer-reminder"),
            referral_id=event.subject,
            correlation_id=event.correlation_id,
            centre_id=site.centre_id,
            centre_name=site.centre_name,
            site_id=site.site_id,
            answer_by=answer_by,
            fire_at=reminder_time(now, answer_by, self._reminder_before),
        )

    def _site_facts(self, site: SiteRef) -> dict[str, str]:
        contact = self._recipients.public_contact(site.centre_id)
        return {
            "site_id": site.site_id,
            "centre_name": site.centre_name,
            "public_contact": contact or "communiqué par la coordination du réseau CPCA",
        }

    def _drafts(self, event: InboundEvent) -> list[_Draft]:
        if isinstance(event, ReferralAccepted):
            return [_Draft("prescriber", event.data.prescriber_id, "referral_received", None, {})]
        if isinstance(event, ReferralRejected):
            prescriber = event.data.prescriber_id
            if prescriber is None:
                return []  # the sender could not be identified: nobody to tell
            return [
                _Draft(
                    "prescriber",
                    prescriber,
                    "referral_rejected",
                    None,
                    {
                        # French for the clerk; intake's technical message stays in the event.
                        "reason": reason_label(event.data.reason),
                        "explanation": explanation(event.data.reason),
                        "problems": problems(event.data),
                    },
                )
            ]
        if isinstance(event, ReferralRouted):
            return self._routed(event)
        if isinstance(event, HousingOffered | HousingUpdated):
            return self._housing(event)
        if isinstance(event, CapacityConfirmationDue):
            return [self._confirmation_due(event)]
        if isinstance(event, ReferralUnroutable):
            return [
                _Draft(
                    "prescriber",
                    event.data.prescriber_id,
                    "referral_unroutable",
                    None,
                    {"reason": UNROUTABLE_LABELS.get(event.data.reason, event.data.reason)},
                )
            ]
        if isinstance(event, ReferralWaitlisted):
            facts = self._site_facts(event.data.site)
            facts["position"] = str(event.data.position)
            facts["service"] = SERVICE_LABELS.get(event.data.service, str(event.data.service))
            return [
                _Draft(
                    "prescriber",
                    event.data.prescriber_id,
                    "referral_waitlisted",
                    event.data.site.site_id,
                    facts,
                )
            ]
        if isinstance(event, ReferralEscalated):
            return [
                _Draft(
                    "prescriber",
                    event.data.prescriber_id,
                    "referral_escalated",
                    None,
                    {"reason": ESCALATION_LABELS.get(event.data.reason, event.data.reason)},
                )
            ]
        if isinstance(event, ReferralPlaced):
            site = event.data.site
            return [
                _Draft(
                    "prescriber",
                    event.data.prescriber_id,
                    "referral_placed",
                    site.site_id,
                    self._site_facts(site),
                )
            ]
        if isinstance(event, ReferralWithdrawn):
            withdrawn_site = event.data.site
            if withdrawn_site is None:
                return []  # no centre held an offer or a place: nobody else to tell
            return [
                _Draft(
                    "centre",
                    withdrawn_site.centre_id,
                    "referral_withdrawn",
                    withdrawn_site.site_id,
                    {"site_id": withdrawn_site.site_id, "centre_name": withdrawn_site.centre_name},
                )
            ]
        return [self._path(event)]

    def _routed(self, event: ReferralRouted) -> list[_Draft]:
        data = event.data
        site = data.site
        answer_by = (
            f"avant le {french_datetime(data.answer_by)}" if data.answer_by else "dès que possible"
        )
        centre = _Draft(
            "centre",
            site.centre_id,
            "referral_offered",
            site.site_id,
            {
                "site_id": site.site_id,
                "centre_name": site.centre_name,
                "answer_by": answer_by,
                "services": ", ".join(SERVICE_LABELS.get(s, str(s)) for s in data.services),
                "attempt": str(data.attempt),
                **self.offer_facts(event.subject),
            },
        )
        facts = self._site_facts(site)
        if data.attempt > 1:
            facts["previous_site_id"] = data.previous_site_id or "-"
            facts["attempt"] = str(data.attempt)
            topic: NotificationTopic = "referral_rerouted"
        else:
            topic = "referral_routed"
        return [centre, _Draft("prescriber", data.prescriber_id, topic, site.site_id, facts)]

    def _housing(self, event: HousingOffered | HousingUpdated) -> list[_Draft]:
        """The housing leg of a split referral (care at a local site, eviction housing at the
        national platform), told with the topics of any offer: the platform is offered the
        housing like a centre an offer (its webhook carries the identity: intake holds it as
        the housing holder); the prescriber is told where the housing went, whether the
        platform houses the person, and when a human must find housing (declined, timed out)."""
        data = event.data
        site = data.site
        prescriber = data.prescriber_id
        if isinstance(event, HousingOffered):
            offer = _Draft(
                "centre",
                site.centre_id,
                "referral_offered",
                site.site_id,
                {
                    "site_id": site.site_id,
                    "centre_name": site.centre_name,
                    "answer_by": f"avant le {french_datetime(event.data.answer_by)}",
                    "services": SERVICE_LABELS["eviction_housing"],
                    "attempt": "1",
                    **self.offer_facts(event.subject),
                },
            )
            told = _Draft(
                "prescriber", prescriber, "referral_routed", site.site_id, self._site_facts(site)
            )
            return [offer, told]
        if event.data.outcome == "accepted":
            return [
                _Draft(
                    "prescriber",
                    prescriber,
                    "referral_placed",
                    site.site_id,
                    self._site_facts(site),
                )
            ]
        if event.data.outcome == "ended":  # the platform reported the housing over
            facts = self._site_facts(site)
            facts["report"] = "hébergement terminé"
            facts["occurred_on"] = event.occurred_at.astimezone(PARIS).strftime("%d/%m/%Y")
            facts["details"] = "aucune"
            return [_Draft("prescriber", prescriber, "path_reported", site.site_id, facts)]
        if event.data.outcome == "released":
            return [
                _Draft(
                    "centre",
                    site.centre_id,
                    "referral_withdrawn",
                    site.site_id,
                    {"site_id": site.site_id, "centre_name": site.centre_name},
                )
            ]
        return [
            _Draft(
                "prescriber",
                prescriber,
                "referral_escalated",
                None,
                {"reason": HOUSING_ESCALATION_LABELS[event.data.outcome]},
            )
        ]

    def _confirmation_due(self, event: CapacityConfirmationDue) -> _Draft:
        data = event.data
        stale_at = french_datetime(data.stale_at)
        gone = data.stale_at <= event.occurred_at
        return _Draft(
            "centre",
            data.centre_id,
            "capacity_confirmation_due",
            data.site_id,
            {
                "site_id": data.site_id,
                "centre_name": data.centre_name,
                "service": SERVICE_LABELS.get(data.service, str(data.service)),
                "places_total": str(data.places_total),
                "as_of": french_datetime(data.as_of),
                "stale_at": stale_at,
                "stale_when": f"depuis le {stale_at}" if gone else f"à partir du {stale_at}",
                "is_or_will_be": "est" if gone else "sera",
                "policy": STALE_OUTCOME_LABELS[data.policy],
            },
        )

    def _path(self, event: PathReported) -> _Draft:
        data = event.data
        details: list[str] = []
        if data.report == "no_show" and data.justified is not None:
            details.append("absence justifiée" if data.justified else "absence non justifiée")
        if data.termination_reason is not None:
            label = TERMINATION_LABELS.get(data.termination_reason, data.termination_reason)
            details.append(f"motif : {label}")
        if data.module is not None:
            details.append(f"module : {SERVICE_LABELS.get(data.module, str(data.module))}")
        facts = self._site_facts(data.site)
        facts["report"] = REPORT_LABELS.get(data.report, data.report)
        facts["occurred_on"] = data.occurred_on.strftime("%d/%m/%Y")
        facts["details"] = " ; ".join(details) if details else "aucune"
        return _Draft("prescriber", data.prescriber_id, "path_reported", data.site.site_id, facts)


def reminder_time(now: datetime, answer_by: datetime, lead: timedelta) -> datetime:
    """When to remind a centre of an offer to answer by ``answer_by``: ``lead`` before it, or,
    when the whole window is shorter than that (urgent offers), half-way through it, so that the
    reminder never arrives together with the offer itself."""
    if answer_by - now > lead:
        return answer_by - lead
    return now + (answer_by - now) / 2
