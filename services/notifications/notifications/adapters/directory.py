"""Recipients and templates from files: data/centre_contacts.json, data/prescribers.json and
the package's templates/ folder.

Read once at start. A recipient's webhook channel is kept only when the settings give it a URL, and
e-mail only when an SMTP relay is configured, so a deployment without them delivers on the other
channels instead of retrying against a peer that does not exist.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from aiguillage_common.geography import default_data_dir
from aiguillage_common.logging import get_logger
from aiguillage_schemas.events.notifications import RecipientKind
from aiguillage_schemas.topics import Topic, is_topic_name, notice_topic
from notifications.domain.recipients import Channel, Recipient, Recipients, recipient_key
from notifications.domain.templates import Template, Templates, TopicTemplate
from notifications.settings import NotificationsSettings

log = get_logger("aiguillage.notifications.directory")


def load_recipients(settings: NotificationsSettings, data_dir: Path | None = None) -> Recipients:
    folder = data_dir or default_data_dir()
    found: dict[str, Recipient] = {}
    centres = json.loads((folder / "centre_contacts.json").read_text("utf-8"))["centres"]
    for entry in centres:
        recipient = _recipient("centre", entry["centre_id"], entry, settings)
        found[recipient.key] = recipient
    prescribers = json.loads((folder / "prescribers.json").read_text("utf-8"))["prescribers"]
    for entry in prescribers:
        recipient = _recipient("prescriber", entry["prescriber_id"], entry, settings)
        found[recipient.key] = recipient
    return Recipients(found)


def _recipient(
    kind: RecipientKind,
    recipient_id: str,
    entry: dict[str, Any],
    settings: NotificationsSettings,
) -> Recipient:
    channels: list[Channel] = []
    for channel in entry.get("channels", []):
        kind_of = channel["type"]
        if kind_of == "kafka":
            topic = settings.topic(notice_topic(kind, recipient_id).name)
            if is_topic_name(topic):
                channels.append(Channel("kafka", topic))
            else:  # an id Kafka cannot name a topic after: its notices stay on e-mail
                log.warning(
                    "recipient.no_notice_topic", recipient_kind=kind, recipient_id=recipient_id
                )
        elif kind_of == "email" and channel.get("address") and settings.smtp_host:
            channels.append(Channel("email", channel["address"]))
        elif kind_of == "webhook":
            url = webhook_url(settings, kind, recipient_id)
            if url:
                channels.append(Channel("webhook", url))
    return Recipient(kind, recipient_id, tuple(channels), entry.get("public_contact"))


def webhook_url(settings: NotificationsSettings, kind: str, recipient_id: str) -> str | None:
    explicit = settings.webhook_urls.get(recipient_key(kind, recipient_id))
    if explicit:
        return explicit
    if settings.webhook_url_template:
        return settings.webhook_url_template.format(kind=kind, id=recipient_id)
    return None


def webhook_secret(settings: NotificationsSettings, kind: str, recipient_id: str) -> bytes | None:
    key = recipient_key(kind, recipient_id)
    secret = settings.webhook_secrets.get(key, settings.webhook_secret)
    value = secret.get_secret_value()
    return value.encode("utf-8") if value else None


def load_templates() -> Templates:
    folder = resources.files("notifications").joinpath("templates")
    topics = {
        entry.name.removesuffix(".txt"): TopicTemplate.parse(entry.name, entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".txt") and not entry.name.startswith("_")
    }
    return Templates(
        topics,
        Template(folder.joinpath("_footer.txt").read_text("utf-8").strip()),
        Template(folder.joinpath("_layout.html").read_text("utf-8")),
    )


def notice_topics(recipients: Recipients) -> list[Topic]:
    """The topics of the recipients that integrate by events (names already prefixed)."""
    targets = {
        channel.target
        for recipient in recipients.by_key.values()
        for channel in recipient.channels
        if channel.type == "kafka"
    }
    return [Topic(name, 1, "notifications -> one recipient only") for name in sorted(targets)]
