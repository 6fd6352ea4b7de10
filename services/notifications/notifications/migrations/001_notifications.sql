-- Every notification decided, once per (triggering event, recipient).
CREATE TABLE notifications (
    notification_id    uuid        PRIMARY KEY,
    referral_id        text        NOT NULL,
    recipient_kind     text        NOT NULL CHECK (recipient_kind IN ('centre', 'prescriber')),
    recipient_id       text        NOT NULL,
    topic              text        NOT NULL,
    site_id            text,
    title              text        NOT NULL,
    body               text        NOT NULL,
    caused_by_event_id uuid        NOT NULL,
    correlation_id     uuid        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX notifications_referral ON notifications (referral_id);
