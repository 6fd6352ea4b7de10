-- Rendered content for each channel, so the delivery worker sends exactly what was decided.
ALTER TABLE notifications
    ADD COLUMN email_text text NOT NULL DEFAULT '',
    ADD COLUMN email_html text NOT NULL DEFAULT '',
    ADD COLUMN facts      jsonb NOT NULL DEFAULT '{}'::jsonb;

-- One row per (notification, channel): recorded once, delivered at least once.
CREATE TABLE deliveries (
    delivery_id     uuid        PRIMARY KEY,  -- also the idempotency key seen by receivers
    notification_id uuid        NOT NULL REFERENCES notifications (notification_id),
    channel         text        NOT NULL CHECK (channel IN ('kafka', 'webhook', 'email')),
    target          text        NOT NULL,
    position        int         NOT NULL,     -- 0 = the recipient's primary channel
    fallback_for    uuid        REFERENCES deliveries (delivery_id),
    state           text        NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_notification ON deliveries (notification_id);

-- Every attempt, for the delivery log: what happened, how long it took, what the peer said.
CREATE TABLE delivery_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  uuid        NOT NULL REFERENCES deliveries (delivery_id),
    attempt      int         NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('delivered', 'transient', 'permanent', 'queued')),
    latency_ms   int         NOT NULL,
    error_class  text,
    http_status  int,
    smtp_code    int,
    attempted_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);

-- Wake the delivery worker as soon as a transaction that planned deliveries commits.
CREATE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_deliveries', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify();

-- Answer-deadline reminders: persisted timers that fire once unless cancelled first.
CREATE TABLE reminders (
    reminder_id    uuid        PRIMARY KEY,
    referral_id    text        NOT NULL,
    correlation_id uuid        NOT NULL,
    centre_id      text        NOT NULL,
    centre_name    text        NOT NULL,
    site_id        text        NOT NULL,
    answer_by      timestamptz NOT NULL,
    fire_at        timestamptz NOT NULL,
    state          text        NOT NULL DEFAULT 'pending'
                               CHECK (state IN ('pending', 'fired', 'cancelled')),
    settled_at     timestamptz
);
CREATE INDEX reminders_due ON reminders (fire_at) WHERE state = 'pending';
CREATE INDEX reminders_referral ON reminders (referral_id) WHERE state = 'pending';
