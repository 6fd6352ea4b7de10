-- Rejections told to one prescriber by e-mail are grouped into a digest: one e-mail listing them
-- (300 bad records in a second once made 252 e-mails). A digest is a notification of its own
-- with one e-mail delivery, due when its window ends; entries join it while no worker has
-- started its e-mail (then a new digest opens).
CREATE TABLE digests (
    notification_id uuid        PRIMARY KEY REFERENCES notifications (notification_id),
    delivery_id     uuid        NOT NULL REFERENCES deliveries (delivery_id),
    recipient_kind  text        NOT NULL,
    recipient_id    text        NOT NULL,
    address         text        NOT NULL,
    opened_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX digests_open ON digests (recipient_kind, recipient_id, address, opened_at DESC);

CREATE TABLE digest_items (
    digest_id       uuid  NOT NULL REFERENCES digests (notification_id),
    position        int   NOT NULL,
    -- The rejection's own notification (its row is written when the unit of work closes).
    notification_id uuid  NOT NULL,
    facts           jsonb NOT NULL,
    PRIMARY KEY (digest_id, position),
    UNIQUE (digest_id, notification_id)
);
