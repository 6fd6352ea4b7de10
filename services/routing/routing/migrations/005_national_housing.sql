-- Care locally, housing by the national platform (docs/routing.md): a national provider's site
-- is flagged (never a candidate of the ordinary decision, only the housing leg of a split), and
-- a referral gains a housing leg with its own site, status and answer deadline.
ALTER TABLE sites ADD COLUMN national boolean NOT NULL DEFAULT false;

ALTER TABLE referrals
    ADD COLUMN housing_site_id   text,
    ADD COLUMN housing_status    text CHECK (housing_status IN (
        'offered', 'placed', 'declined', 'timed_out', 'released', 'ended')),
    ADD COLUMN housing_answer_by timestamptz;
-- The timer looks only at open housing offers, earliest deadline first.
CREATE INDEX referrals_due_housing ON referrals (housing_answer_by)
    WHERE housing_status = 'offered';
