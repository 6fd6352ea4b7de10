"""French message templates, rendered from facts. Pure: the template texts are read by an adapter.

Each topic has three sections: the subject, the full text (for authenticated channels: Kafka and
signed webhooks) and the e-mail text. E-mail is not an authenticated channel, so its section only
carries the reference and what to do next, never identity, judicial or health details. The HTML
part of an e-mail is the e-mail text, escaped, in one shared layout. A topic about no referral (a
capacity reminder) may replace the shared footer, which names the referral, with a ``[footer]``
section of its own.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from string import Template

SECTIONS = ("subject", "text", "email")
OPTIONAL_SECTIONS = ("footer",)


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    subject: Template
    text: Template
    email: Template
    footer: Template | None = None  # replaces the shared footer when given

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
        footer = found.get("footer")
        return cls(
            subject,
            text,
            email,
            Template("\n".join(footer).strip()) if footer is not None else None,
        )


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
            subject=html.escape(subject), paragraphs=paragraphs
        )
        return Rendered(subject, text, email_text, email_html)
