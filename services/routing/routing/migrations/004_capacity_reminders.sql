-- Reminders sent to centres to confirm a count before it goes stale: one per confirmation
-- (site, service, the as_of reminded about). The row and the outbox event commit together; the
-- primary key is the claim that keeps two routing instances, or a restart, from reminding twice.
-- A newer confirmation has another as_of, so it can be reminded again when it ages.
CREATE TABLE capacity_reminders (
    site_id     text        NOT NULL,
    service     text        NOT NULL,
    as_of       timestamptz NOT NULL,
    centre_id   text        NOT NULL,
    stale_at    timestamptz NOT NULL,
    reference   text        NOT NULL,
    event_id    uuid        NOT NULL,
    reminded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (site_id, service, as_of)
);
