"""E-mail channel over SMTP: French plain text and HTML, never identity or judicial details.

The Message-ID derives from the delivery id, so a message re-sent after a lost answer carries the
same id and mail systems (and people) can tell it is the same message.
"""

from __future__ import annotations

import time
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from notifications.domain.delivery import AttemptResult, DeliveryJob, smtp_result

FALLBACK_NOTICE = (
    "Ce message vous parvient par courriel parce que votre système d'information n'a pas pu "
    "être joint. Merci d'en informer votre service informatique."
)
# The centre's system is fine: the offer waits for the person's identity, which intake cannot
# give right now. The centre learns of the offer now and gets the identity on its system later.
IDENTITY_WAIT_SUBJECT = "[Identité à suivre]"
IDENTITY_WAIT_NOTICE = (
    "Ce message vous parvient par courriel parce que l'identité de la personne ne peut pas être "
    "transmise pour le moment. Votre système d'information recevra cette proposition avec "
    "l'identité dès qu'elle sera disponible ; aucune action n'est requise de votre part."
)


def message_id(job: DeliveryJob, domain: str) -> str:
    return f"<{job.delivery_id}@{domain}>"


def build_message(job: DeliveryJob, sender: str, domain: str) -> EmailMessage:
    message = EmailMessage()
    subject = job.title
    text, html = job.email_text, job.email_html
    if job.fallback_for is not None:
        if job.fallback_reason == "identity_wait":
            prefix, notice = IDENTITY_WAIT_SUBJECT, IDENTITY_WAIT_NOTICE
        else:
            prefix, notice = "[Action requise]", FALLBACK_NOTICE
        subject = f"{prefix} {subject}"
        text = f"{notice}\n\n{text}"
        html = html.replace("</h1>", f"</h1>\n<p><strong>{notice}</strong></p>", 1)
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = job.target
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id(job, domain)
    message["X-Aiguillage-Reference"] = job.referral_id
    message["X-Correlation-Id"] = str(job.correlation_id)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class EmailSender:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        message_domain: str,
        timeout_s: float,
        username: str | None = None,
        password: str | None = None,
        start_tls: bool = False,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._domain = message_domain
        self._timeout_s = timeout_s
        self._username = username
        self._password = password
        self._start_tls = start_tls

    async def send(self, job: DeliveryJob) -> AttemptResult:
        message = build_message(job, self._sender, self._domain)
        started = time.monotonic()
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                timeout=self._timeout_s,
                username=self._username,
                password=self._password,
                start_tls=self._start_tls,
            )
        except aiosmtplib.SMTPRecipientsRefused as refused:
            codes = [r.code for r in refused.recipients] or [550]
            # One recipient per message: its code decides (4xx retry, 5xx give up).
            return smtp_result(min(codes), _ms(started))
        except aiosmtplib.SMTPResponseException as error:
            return smtp_result(error.code, _ms(started))
        except (aiosmtplib.SMTPTimeoutError, TimeoutError):
            return AttemptResult("transient", _ms(started), "timeout")
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError):
            return AttemptResult("transient", _ms(started), "connect")
        return AttemptResult("delivered", _ms(started), smtp_code=250)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
