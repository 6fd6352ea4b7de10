"""What a fault-injection run (``bench/chaos.py``) observed, and the table it prints. Pure.

``chaos.py`` drives the processes and collects facts from the topics, the databases and the local
peers into an ``Observations``; ``rows`` turns them into the report's rows. Keeping the counting
here lets unit tests feed it synthetic observations with a known loss, double or gap
(``tests/unit/test_chaos_table.py``), so the instrument is checked before it is trusted.

Vocabulary: an *input* is one record the script meant to publish on ``referrals.intake`` (valid
referral or deliberately invalid message); it may sit on the topic more than once when the
producer re-sent it after a broker error (each copy is a *record*, with its own offset).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Routing events that settle where a referral stands (its decision), as opposed to later news.
DECISION_EVENTS = frozenset(
    {"referral.routed", "referral.waitlisted", "referral.unroutable", "referral.escalated"}
)
DECISION_OUTCOMES = frozenset({"routed", "waitlisted", "unroutable", "escalated"})
# Who is told what for each event (notifications' own rules, restated so that a planning bug
# shows up as a gap instead of being copied into the expectation).
PRESCRIBER_TOPICS = {
    "referral.accepted": "referral_received",
    "referral.rejected": "referral_rejected",
    "referral.waitlisted": "referral_waitlisted",
    "referral.unroutable": "referral_unroutable",
    "referral.escalated": "referral_escalated",
}


# ------------------------------------------------------------------------------------ facts

# What one recipient is told about one journey: the unit in which doubles are counted.
Effect = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class Input:
    index: int
    variant: str  # "valid", or the kind of invalid input ("bad_signature", "not_json", ...)
    referral_id: str | None  # the subject, when the input has one
    expected_reason: str | None = None  # for invalid inputs: the rejection reason we expect
    published: bool = True  # the broker acknowledged it at least once


@dataclass(frozen=True, slots=True)
class IntakeRecord:
    """A record read back from ``referrals.intake``; ``index`` comes from the script's header."""

    partition: int
    offset: int
    index: int | None


@dataclass(frozen=True, slots=True)
class Rejection:
    event_id: str
    subject: str
    partition: int  # coordinates of the refused record on referrals.intake
    offset: int
    reason: str
    prescriber_id: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    event_id: str
    referral_id: str
    prescriber_id: str


@dataclass(frozen=True, slots=True)
class RoutingEvent:
    """One record of ``referrals.routed``."""

    event_id: str
    event_type: str
    referral_id: str
    prescriber_id: str
    decision_id: str | None = None
    attempt: int | None = None
    centre_id: str | None = None
    site_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """A row of routing's ``decisions`` table."""

    referral_id: str
    decision_id: str
    outcome: str
    cause: str
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Hold:
    referral_id: str
    site_id: str
    service: str
    # At a national provider (the housing platform): the housing leg of a split referral, held
    # beside its care place at a local site by design (docs/routing.md).
    national: bool = False


@dataclass(frozen=True, slots=True)
class Overbooked:
    """A site's service seen holding more places than it has (sampled during and after the run)."""

    site_id: str
    service: str
    places_total: int
    places_held: int  # routing's counter
    holds: int  # rows in the holds table


@dataclass(frozen=True, slots=True)
class NotificationRow:
    notification_id: str
    referral_id: str
    recipient_kind: str
    recipient_id: str
    topic: str
    site_id: str | None
    cause: str  # caused_by_event_id
    correlation_id: str = ""
    said: str = ""  # digest of what the notification says (title and text)

    @property
    def effect(self) -> Effect:
        kind, recipient, topic = self.recipient_kind, self.recipient_id, self.topic
        return (self.referral_id, self.correlation_id, kind, recipient, topic, self.said)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery_id: str
    notification_id: str
    channel: str  # kafka, webhook, email
    state: str  # pending, delivered, dead
    fallback_for: str | None = None


@dataclass(frozen=True, slots=True)
class Outbound:
    """One record of ``notifications.outbound``."""

    event_id: str
    notification_id: str
    referral_id: str
    recipient_kind: str
    recipient_id: str
    topic: str
    site_id: str | None
    correlation_id: str = ""
    said: str = ""  # digest of title and body

    @property
    def effect(self) -> Effect:
        kind, recipient, topic = self.recipient_kind, self.recipient_id, self.topic
        return (self.referral_id, self.correlation_id, kind, recipient, topic, self.said)


@dataclass(frozen=True, slots=True)
class WebhookReceipt:
    key: str  # Idempotency-Key
    status: int
    reference: str
    path: str
    topic: str
    site_id: str | None
    correlation_id: str = ""
    said: str = ""  # digest of the body's title and text


@dataclass(frozen=True, slots=True)
class MailReceipt:
    message_id: str  # "<delivery-id@domain>"
    reference: str
    recipients: tuple[str, ...]
    subject: str
    correlation_id: str = ""  # X-Correlation-Id
    said: str = ""  # digest of the subject and the plain text

    @property
    def delivery_id(self) -> str:
        return self.message_id.strip("<>").split("@", 1)[0]


@dataclass(frozen=True, slots=True)
class Exit:
    """A process that ended although the script did not kill or stop it."""

    process: str
    returncode: int
    at_s: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    reason: str
    subject: str


@dataclass(frozen=True, slots=True)
class Quiescence:
    reached: bool
    seconds: float  # from the end of the faults (and of publishing) to the last change seen
    # "idle": nothing pending, nothing changing; "stalled": no change but work pending; "cap"
    how: str
    waited_s: float = 0.0  # how long the script waited in all
    pending: str = ""  # what was still pending when it stopped waiting


@dataclass
class Observations:
    inputs: list[Input]
    intake_records: list[IntakeRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)
    intake_stored: set[str] = field(default_factory=set)  # referral ids in intake's table
    routing_events: list[RoutingEvent] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    overbooked: list[Overbooked] = field(default_factory=list)
    notifications: list[NotificationRow] = field(default_factory=list)
    deliveries: list[DeliveryRow] = field(default_factory=list)
    outbound: list[Outbound] = field(default_factory=list)
    webhooks: list[WebhookReceipt] = field(default_factory=list)
    mails: list[MailReceipt] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    lags: dict[str, int | None] = field(default_factory=dict)  # group -> lag (None: unknown)
    quiescence: Quiescence = field(default_factory=lambda: Quiescence(False, 0.0, "cap"))
    resent_inputs: int = 0  # inputs the producer had to send again after an error


# -------------------------------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    value: str
    ok: bool
    must_be_zero: bool
    detail: str = ""


def _zero_row(name: str, count: int, detail: str = "") -> Row:
    return Row(name, str(count), count == 0, True, detail)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _sample(items: Iterable[str], limit: int = 3) -> str:
    listed = sorted(items)
    if not listed:
        return ""
    more = f", +{len(listed) - limit}" if len(listed) > limit else ""
    return "e.g. " + ", ".join(listed[:limit]) + more


@dataclass
class _Index:
    """Lookups shared by the rows."""

    valid: dict[str, Input]  # referral id -> valid input that reached the broker
    invalid: list[Input]
    records_of: dict[int, list[IntakeRecord]]
    input_at: dict[tuple[int, int], int]  # (partition, offset) -> input index
    rejections_at: dict[tuple[int, int], list[Rejection]]
    decided: set[str]

    @classmethod
    def build(cls, obs: Observations) -> _Index:
        valid = {
            i.referral_id: i
            for i in obs.inputs
            if i.variant == "valid" and i.published and i.referral_id is not None
        }
        invalid = [i for i in obs.inputs if i.variant != "valid" and i.published]
        records_of: dict[int, list[IntakeRecord]] = defaultdict(list)
        input_at: dict[tuple[int, int], int] = {}
        for record in obs.intake_records:
            if record.index is not None:
                records_of[record.index].append(record)
                input_at[(record.partition, record.offset)] = record.index
        rejections_at: dict[tuple[int, int], list[Rejection]] = defaultdict(list)
        for rejection in obs.rejections:
            rejections_at[(rejection.partition, rejection.offset)].append(rejection)
        decided = {d.referral_id for d in obs.decisions if d.outcome in DECISION_OUTCOMES} | {
            e.referral_id for e in obs.routing_events if e.event_type in DECISION_EVENTS
        }
        return cls(valid, invalid, records_of, input_at, rejections_at, decided)

    def rejections_of(self, item: Input) -> list[Rejection]:
        found: dict[str, Rejection] = {}
        for record in self.records_of.get(item.index, []):
            for rejection in self.rejections_at.get((record.partition, record.offset), []):
                found[rejection.event_id] = rejection
        return list(found.values())


def rows(obs: Observations) -> list[Row]:
    index = _Index.build(obs)
    return [
        _inputs_row(obs, index),
        _outcomes_row(obs, index),
        *_loss_rows(obs, index),
        _valid_rejected_row(index),
        _double_decisions_row(obs),
        _oversubscribed_row(obs),
        _missing_notifications_row(obs, index),
        _doubled_effects_row(obs),
        _invalid_answered_row(index),
        _dead_letters_row(obs),
        _exits_row(obs),
        *_lag_rows(obs),
        _quiescence_row(obs),
    ]


def failed(report: Sequence[Row]) -> list[Row]:
    """The must-be-0 rows that are not 0."""
    return [row for row in report if row.must_be_zero and not row.ok]


def _inputs_row(obs: Observations, index: _Index) -> Row:
    unpublished = sum(1 for i in obs.inputs if not i.published)
    detail = (
        f"{len(index.valid)} valid, {len(index.invalid)} invalid "
        f"({len({i.variant for i in index.invalid})} kinds)"
    )
    if obs.resent_inputs:
        detail += f"; {obs.resent_inputs} re-sent after a producer error"
    if unpublished:
        detail += f"; {unpublished} NEVER acknowledged by the broker (not counted)"
    return Row(
        "inputs published", str(len(obs.inputs) - unpublished), unpublished == 0, False, detail
    )


def _outcomes_row(obs: Observations, index: _Index) -> Row:
    """Where the valid referrals stand (latest decision): shows the capacity path was exercised
    (places taken, then waiting lists), so that 0 oversubscribed places means something."""
    latest: dict[str, Decision] = {}
    for decision in obs.decisions:
        if decision.referral_id in index.valid and decision.outcome in DECISION_OUTCOMES:
            current = latest.get(decision.referral_id)
            if current is None or decision.attempt >= current.attempt:
                latest[decision.referral_id] = decision
    counts = Counter(d.outcome for d in latest.values())
    detail = ", ".join(f"{outcome} {n}" for outcome, n in counts.most_common())
    return Row("routing outcomes (valid referrals)", str(len(latest)), True, False, detail)


def _loss_rows(obs: Observations, index: _Index) -> list[Row]:
    rejected = {rid for rid, item in index.valid.items() if index.rejections_of(item)}
    lost = set(index.valid) - index.decided - rejected
    accepted = obs.intake_stored | {a.referral_id for a in obs.accepted}
    undecided = lost & accepted
    published = {a.referral_id for a in obs.accepted}
    vanished = lost - accepted
    return [
        _zero_row(
            "lost (valid, no routing decision, no rejection)",
            len(lost),
            (
                f"{len(vanished)} never stored by intake, {len(undecided)} stored but not decided; "
                + _sample(lost)
            )
            if lost
            else "",
        ),
        _zero_row(
            "  of which undecided (accepted by intake, never decided)",
            len(undecided),
            (
                f"{len(undecided - published)} whose referral.accepted never reached the topic, "
                f"{len(undecided & published)} on the topic but not decided by routing; "
                + _sample(undecided)
            )
            if undecided
            else "",
        ),
    ]


def _valid_rejected_row(index: _Index) -> Row:
    reasons: Counter[str] = Counter()
    count = 0
    for item in index.valid.values():
        found = index.rejections_of(item)
        if found:
            count += 1
            reasons.update({r.reason for r in found})
    detail = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common())
    return _zero_row("valid referrals rejected", count, detail)


def _double_decisions_row(obs: Observations) -> Row:
    per_cause: dict[tuple[str, str], set[str]] = defaultdict(set)
    for decision in obs.decisions:
        per_cause[(decision.referral_id, decision.cause)].add(decision.decision_id)
    same_cause = {rid for (rid, _), ids in per_cause.items() if len(ids) > 1}
    sites: dict[str, set[str]] = defaultdict(set)
    housing_legs: dict[str, set[str]] = defaultdict(set)
    for hold in obs.holds:
        (housing_legs if hold.national else sites)[hold.referral_id].add(hold.site_id)
    # One local site per referral, and at most one national housing leg beside it.
    two_places = {rid for rid, held in sites.items() if len(held) > 1} | {
        rid for rid, held in housing_legs.items() if len(held) > 1
    }
    offers: dict[tuple[str, int | None], set[str]] = defaultdict(set)
    for event in obs.routing_events:
        if event.event_type == "referral.routed" and event.decision_id is not None:
            offers[(event.referral_id, event.attempt)].add(event.decision_id)
    two_offers = {rid for (rid, _), ids in offers.items() if len(ids) > 1}
    affected = same_cause | two_places | two_offers
    detail = ""
    if affected:
        detail = (
            f"{len(same_cause)} with two decisions for one event, {len(two_places)} holding "
            f"places at two sites (a split's housing leg aside), {len(two_offers)} offered "
            "twice for one attempt; " + _sample(affected)
        )
    return _zero_row("double decisions (referrals)", len(affected), detail)


def _oversubscribed_row(obs: Observations) -> Row:
    worst: dict[tuple[str, str], Overbooked] = {}
    for seen in obs.overbooked:
        key = (seen.site_id, seen.service)
        current = worst.get(key)
        if current is None or max(seen.places_held, seen.holds) > max(
            current.places_held, current.holds
        ):
            worst[key] = seen
    detail = "; ".join(
        f"{o.site_id}/{o.service} held {max(o.places_held, o.holds)} of {o.places_total}"
        for o in list(worst.values())[:3]
    )
    return _zero_row("oversubscribed places (site/service)", len(worst), detail)


@dataclass(frozen=True, slots=True)
class _Expected:
    cause: str
    kind: str
    recipient: str
    topic: str
    referral_id: str


def _expected_notifications(obs: Observations, index: _Index) -> tuple[list[_Expected], int]:
    """What the recipients must have been told; and how many expectations could not even be
    formed because a stored fact never reached its topic (a decision or an acceptance that
    stayed in a database)."""
    ours = set(index.valid)
    expected: dict[tuple[str, str, str], _Expected] = {}

    def expect(cause: str, kind: str, recipient: str, topic: str, referral_id: str) -> None:
        expected.setdefault(
            (cause, kind, recipient), _Expected(cause, kind, recipient, topic, referral_id)
        )

    accepted_ids = set()
    for accepted in obs.accepted:
        if accepted.referral_id in ours:
            accepted_ids.add(accepted.referral_id)
            expect(
                accepted.event_id,
                "prescriber",
                accepted.prescriber_id,
                "referral_received",
                accepted.referral_id,
            )
    published_decisions = set()
    for event in obs.routing_events:
        if event.referral_id not in ours:
            continue
        if event.decision_id is not None:
            published_decisions.add(event.decision_id)
        if event.event_type == "referral.routed":
            if event.centre_id is not None:
                expect(
                    event.event_id, "centre", event.centre_id, "referral_offered", event.referral_id
                )
            topic = "referral_rerouted" if (event.attempt or 1) > 1 else "referral_routed"
            expect(event.event_id, "prescriber", event.prescriber_id, topic, event.referral_id)
        elif event.event_type in PRESCRIBER_TOPICS:
            expect(
                event.event_id,
                "prescriber",
                event.prescriber_id,
                PRESCRIBER_TOPICS[event.event_type],
                event.referral_id,
            )
    invalid_records = {
        (r.partition, r.offset)
        for item in index.invalid
        for r in index.records_of.get(item.index, [])
    }
    for rejection in obs.rejections:
        if rejection.prescriber_id and (
            (rejection.partition, rejection.offset) in invalid_records or rejection.subject in ours
        ):
            expect(
                rejection.event_id,
                "prescriber",
                rejection.prescriber_id,
                "referral_rejected",
                rejection.subject,
            )
    # Facts stored but never published: nobody downstream could tell anyone.
    unpublished = sum(
        (2 if d.outcome == "routed" else 1)
        for d in obs.decisions
        if d.referral_id in ours
        and d.outcome in DECISION_OUTCOMES
        and d.decision_id not in published_decisions
        and d.outcome != "escalated"  # escalations carry no decision id on the topic
    )
    unpublished += len((obs.intake_stored & ours) - accepted_ids)
    return list(expected.values()), unpublished


def _missing_notifications_row(obs: Observations, index: _Index) -> Row:
    expected, unpublished = _expected_notifications(obs, index)
    by_key = {(n.cause, n.recipient_kind, n.recipient_id): n for n in obs.notifications}
    deliveries: dict[str, list[DeliveryRow]] = defaultdict(list)
    for delivery in obs.deliveries:
        deliveries[delivery.notification_id].append(delivery)
    hooks = {w.key for w in obs.webhooks if 200 <= w.status < 300}
    mails = {m.delivery_id for m in obs.mails}
    outbound = {o.notification_id for o in obs.outbound}
    no_row: list[str] = []
    undelivered: list[str] = []
    unreceived: list[str] = []
    off_topic: list[str] = []
    for item in expected:
        row = by_key.get((item.cause, item.kind, item.recipient))
        label = f"{item.referral_id}:{item.topic}"
        if row is None:
            no_row.append(label)
            continue
        if row.notification_id not in outbound:
            off_topic.append(label)
        planned = deliveries.get(row.notification_id, [])
        delivered_ids = {d.delivery_id for d in planned if d.state == "delivered"}
        settled = bool(planned) and all(
            d.state == "delivered"
            or (
                d.state == "dead"
                and any(
                    f.fallback_for == d.delivery_id
                    for f in planned
                    if f.delivery_id in delivered_ids
                )
            )
            for d in planned
        )
        if not settled:
            undelivered.append(label)
            continue
        for delivery in planned:
            if delivery.state != "delivered":
                continue
            if (delivery.channel == "webhook" and delivery.delivery_id not in hooks) or (
                delivery.channel == "email" and delivery.delivery_id not in mails
            ):
                unreceived.append(label)
                break
    missing = set(no_row) | set(undelivered) | set(unreceived) | set(off_topic)
    count = len(missing) + unpublished
    parts = [
        f"{len(expected)} expected",
        f"{len(no_row)} never recorded",
        f"{len(undelivered)} not delivered (pending/dead)",
        f"{len(unreceived)} delivered but not received by the peer",
        f"{len(off_topic)} not on notifications.outbound",
    ]
    if unpublished:
        parts.append(f"{unpublished} for facts never published (decision or acceptance)")
    detail = ", ".join(parts)
    if missing:
        detail += "; " + _sample(missing)
    return _zero_row("missing notifications", count, detail)


def _doubled_effects_row(obs: Observations) -> Row:
    """Real doubles: the same effect under two idempotency keys (a deduplicating receiver applies
    it twice). Repeats: the same key again (at-least-once after a crash; a receiver dedupes).
    An effect is one message told to one recipient about one journey: reference, correlation
    id, recipient, topic and a digest of the words (rejections of unreadable inputs all share
    the reference "unknown" but each has its own correlation id; a waiting referral told its new
    position is told something new)."""
    doubled: set[str] = set()
    repeats: Counter[str] = Counter()
    counts: Counter[str] = Counter()

    def scan(
        channel: str, items: Iterable[tuple[tuple[object, ...], str, str]]
    ) -> None:  # (effect key, idempotency key, referral id)
        keys: dict[tuple[object, ...], set[str]] = defaultdict(set)
        seen: Counter[str] = Counter()
        owner: dict[tuple[object, ...], str] = {}
        for effect, key, referral in items:
            keys[effect].add(key)
            seen[key] += 1
            owner[effect] = referral
        for effect, distinct in keys.items():
            if len(distinct) > 1:
                doubled.add(owner[effect])
                counts[channel] += len(distinct) - 1
        repeats[channel] += sum(n - 1 for n in seen.values() if n > 1)

    scan(
        "webhook",
        (
            ((w.reference, w.correlation_id, w.path, w.topic, w.said), w.key, w.reference)
            for w in obs.webhooks
            if 200 <= w.status < 300
        ),
    )
    scan(
        "e-mail",
        (
            ((m.reference, m.correlation_id, m.recipients, m.said), m.message_id, m.reference)
            for m in obs.mails
        ),
    )
    scan(
        "outbound",
        (
            (
                o.effect,
                o.notification_id,
                o.referral_id,
            )
            for o in obs.outbound
        ),
    )
    scan(
        "recorded",
        (
            (
                n.effect,
                n.notification_id,
                n.referral_id,
            )
            for n in obs.notifications
        ),
    )
    # Outbound records repeated with one event id are relay re-sends; count them as repeats.
    event_ids = Counter(o.event_id for o in obs.outbound)
    repeats["outbound"] = sum(n - 1 for n in event_ids.values() if n > 1)
    detail_doubles = ", ".join(f"{ch} {n}" for ch, n in counts.items() if n)
    detail = "repeats after crash, same key (receiver dedupes): " + ", ".join(
        f"{ch} {repeats[ch]}" for ch in ("webhook", "e-mail", "outbound")
    )
    if doubled:
        detail = f"doubles: {detail_doubles}; {_sample(doubled)}; {detail}"
    return _zero_row("doubled effects (referrals)", len(doubled), detail)


def _invalid_answered_row(index: _Index) -> Row:
    unanswered: list[str] = []
    doubled: list[str] = []
    repeats = 0
    mismatched: Counter[str] = Counter()
    missing_records = 0
    for item in index.invalid:
        records = index.records_of.get(item.index, [])
        if not records:
            missing_records += 1
            unanswered.append(f"#{item.index}:{item.variant}")
            continue
        for record in records:
            found = index.rejections_at.get((record.partition, record.offset), [])
            distinct = {r.event_id for r in found}
            repeats += len(found) - len(distinct)
            label = f"#{item.index}:{item.variant}@{record.partition}/{record.offset}"
            if not distinct:
                unanswered.append(label)
            elif len(distinct) > 1:
                doubled.append(label)
            reasons = {r.reason for r in found}
            if item.expected_reason and reasons and item.expected_reason not in reasons:
                mismatched[f"{item.variant}->{'/'.join(sorted(reasons))}"] += 1
    records_total = sum(len(index.records_of.get(i.index, [])) for i in index.invalid)
    count = len(unanswered) + len(doubled)
    detail = (
        f"{len(index.invalid)} invalid inputs on {records_total} records: "
        f"{len(unanswered)} unanswered, {len(doubled)} answered twice (distinct ids), "
        f"{repeats} repeats with one event id"
    )
    if missing_records:
        detail += f", {missing_records} not found on the topic"
    if mismatched:
        detail += "; other reason than expected: " + ", ".join(
            f"{k} ({n})" for k, n in mismatched.most_common(4)
        )
    if unanswered or doubled:
        detail += "; " + _sample(unanswered + doubled)
    return _zero_row("invalid inputs not answered exactly once", count, detail)


def _dead_letters_row(obs: Observations) -> Row:
    reasons = Counter(f"{d.topic.rsplit('.', 2)[-2]}:{d.reason}" for d in obs.dead_letters)
    return _zero_row(
        "dead letters (internal topics)",
        len(obs.dead_letters),
        ", ".join(f"{k} {n}" for k, n in reasons.most_common(5)),
    )


def _exits_row(obs: Observations) -> Row:
    per: Counter[str] = Counter()
    codes: dict[str, set[int]] = defaultdict(set)
    for item in obs.exits:
        name = item.process.split("#", 1)[0]
        per[name] += 1
        codes[name].add(item.returncode)
    detail = ", ".join(
        f"{name} {n}x (exit {'/'.join(str(c) for c in sorted(codes[name]))})"
        for name, n in per.most_common()
    )
    return _zero_row("services that exited on their own", len(obs.exits), detail)


def _lag_rows(obs: Observations) -> list[Row]:
    result = []
    for group in sorted(obs.lags):
        lag = obs.lags[group]
        if lag is None:
            result.append(Row(f"consumer lag {group}", "?", False, True, "offsets unreadable"))
        else:
            result.append(_zero_row(f"consumer lag {group}", lag))
    if not result:
        result.append(Row("consumer lag", "?", False, True, "no consumer group found"))
    return result


def _quiescence_row(obs: Observations) -> Row:
    q = obs.quiescence
    if q.how == "idle":
        return Row(
            "time to quiescence",
            f"{q.seconds:.0f} s",
            True,
            False,
            "after the last fault; nothing pending, nothing changing",
        )
    if q.how == "stalled":
        detail = (
            f"NOT REACHED: last change {q.seconds:.0f} s after the last fault, then nothing for "
            f"{q.waited_s - q.seconds:.0f} s while work was pending ({q.pending})"
        )
    else:
        detail = f"NOT REACHED: still changing at the cap ({q.pending})"
    return Row("time to quiescence", f">{q.waited_s:.0f} s", False, False, detail)


# ------------------------------------------------------------------------------------ table


def render(report: Sequence[Row], title: str = "") -> str:
    """One plain-text table: row, value, OK / FAIL (must be 0) or info, and the detail."""
    name_w = max(len(r.name) for r in report)
    value_w = max(len(r.value) for r in report)
    lines = []
    if title:
        lines.append(title)
    header = f"{'':<{name_w}}  {'value':>{value_w}}  {'status':<6}  detail"
    lines.append(header)
    lines.append("-" * min(160, len(header) + 60))
    for row in report:
        status = ("OK" if row.ok else "FAIL") if row.must_be_zero else ("ok" if row.ok else "warn")
        lines.append(f"{row.name:<{name_w}}  {row.value:>{value_w}}  {status:<6}  {row.detail}")
    return "\n".join(lines)
