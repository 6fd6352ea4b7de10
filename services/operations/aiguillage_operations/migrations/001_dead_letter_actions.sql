-- What operators did with each dead letter: replayed it, or discarded it, by whom, when and why.
-- The dead letters themselves stay on their Kafka topics; only decisions are stored here.
-- Append-only: the latest action gives a dead letter's status, earlier ones remain as history.
CREATE TABLE dead_letter_actions (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The dead letter's event id (derived from its source record's coordinates, so a dead letter
    -- published twice for the same record is one dead letter).
    dead_letter_id    uuid        NOT NULL,
    dead_letter_topic text        NOT NULL,
    action            text        NOT NULL CHECK (action IN ('replayed', 'discarded')),
    operator          text        NOT NULL CHECK (length(operator) BETWEEN 1 AND 128),
    -- The operator's reason for a discard (required then); free text typed by the operator.
    reason            text        CHECK (action <> 'discarded' OR length(reason) > 0),
    -- For a replay: where the copy went ("topic:partition:offset") and whether it carried the
    -- signed replay headers (intake measures its replay window against the original time then).
    replayed_to       text        CHECK (action <> 'replayed' OR replayed_to IS NOT NULL),
    signed            boolean,
    acted_at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX dead_letter_actions_by_dead_letter ON dead_letter_actions (dead_letter_id, id);
