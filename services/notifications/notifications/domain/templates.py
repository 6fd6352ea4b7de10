"""French message templates, rendered from facts. Pure: the template texts are read by an adapter.

Each topic has three sections: the subject, the full text (for authenticated channels: Kafka and
signed webhooks) and the e-mail text. E-mail is not an authenticated channel, so its section only
carries the reference and what to do next, never identity, judicial or health details. The HTML
part of an e-mail is the e-mail text, escaped, in one shared layout. A topic about no referral (a
capacity reminder) may replace the shared footer, which names the referral, with a ``[footer]``
section of its own. A digest's template has an ``[item]`` section: one entry of its list, from
that entry's facts and its number ``$n``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Template as StringTemplate

SECTIONS = ("subject", "text", "email")
OPTIONAL_SECTIONS = ("footer", "item")


class TemplateError(ValueError):
    pass


class Template:
    """A ``string.Template`` text (``$name``, ``${name}``, ``$$``) compiled once to a format
    string: substituting it is one C call, about 4x cheaper than ``string.Template``'s regex
    callback per placeholder, and notifications renders five per message."""

    __slots__ = ("_format", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        parts: list[str] = []
        end = 0
        for found in _PLACEHOLDER.finditer(template):
            parts.append(_literal(template[end : found.start()]))
            name = found.group("named") or found.group("braced")
            if found.group("escaped") is not None:
                parts.append("$")
            elif name:
                parts.append(f"{{{name}}}")
            else:
                raise TemplateError(f"invalid placeholder at {found.start()}: {template[:40]!r}")
            end = found.end()
        parts.append(_literal(template[end:]))
        self._format = "".join(parts)

    def substitute(self, facts: Mapping[str, str]) -> str:
        """Raises KeyError for a missing fact, as ``string.Template.substitute`` does."""
        return self._format.format_map(facts)


_PLACEHOLDER = StringTemplate.pattern


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    subject: Template
    text: Template
    email: Template
    footer: Template | None = None  # replaces the shared footer when given
    item: Template | None = None  # a digest's entry

    @classmethod
    def parse(cls, name: str, source: str) -> TopicTemplate:
        """Sections start with a ``[subject]``, ``[text]`` or ``[email]`` line."""
        found: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in source.splitlines():
            header = line.strip()
            known = (*SECTIONS, *OPTIONAL_SECTIONS)
            if header.startswith("[") and header.endswith("]") and header[1:-1] in known:
                current = found.setdefault(header[1:-1], [])
            elif current is not None:
                current.append(line)
        missing = [section for section in SECTIONS if section not in found]
        if missing:
            raise TemplateError(f"template {name} lacks section(s) {missing}")
        subject, text, email = (Template("\n".join(found[s]).strip()) for s in SECTIONS)
        footer, item = (
            Template("\n".join(found[s]).strip()) if s in found else None for s in OPTIONAL_SECTIONS
        )
        return cls(subject, text, email, footer, item)


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    email_text: str
    email_html: str


@dataclass(frozen=True)
class Templates:
    topics: Mapping[str, TopicTemplate]
    footer: Template  # appended to every text: the reference and the correlation id
    layout_html: Template  # $subject, $paragraphs (already escaped HTML)

    def render_items(self, topic: str, items: Sequence[Mapping[str, str]]) -> str:
        """A digest's list: its ``[item]`` section for each entry, numbered from 1."""
        template = self.topics.get(topic)
        if template is None or template.item is None:
            raise TemplateError(f"no [item] section for topic {topic}")
        try:
            return "\n\n".join(
                template.item.substitute({**facts, "n": str(n)}) for n, facts in enumerate(items, 1)
            )
        except (KeyError, ValueError) as error:
            raise TemplateError(f"template {topic} lacks a fact: {error}") from None

    def render(self, topic: str, facts: Mapping[str, str]) -> Rendered:
        template = self.topics.get(topic)
        if template is None:
            raise TemplateError(f"no template for topic {topic}")
        try:
            subject = template.subject.substitute(facts).replace("\n", " ")
            footer = (template.footer or self.footer).substitute(facts)
            text = f"{template.text.substitute(facts)}\n\n{footer}"
            email_text = f"{template.email.substitute(facts)}\n\n{footer}"
        except (KeyError, ValueError) as error:
            raise TemplateError(f"template {topic} lacks a fact: {error}") from None
        paragraphs = "\n".join(
            "<p>" + html.escape(block).replace("\n", "<br>\n") + "</p>"
            for block in email_text.split("\n\n")
            if block.strip()
        )
        email_html = self.layout_html.substitute(
            {"subject": html.escape(subject), "paragraphs": paragraphs}
        )
        return Rendered(subject, text, email_text, email_html)
