-- One waiting list across services: a freed place goes to the first referral of the site's queue
-- (urgency, home département, arrival) that the site can take, wherever it was named. The
-- position last told to the prescriber is kept, so a change is told again; the waiting decision
-- is kept so a re-told position refers to it.
ALTER TABLE waitlist ADD COLUMN told_position integer;
ALTER TABLE waitlist ADD COLUMN decision_id uuid;
DROP INDEX IF EXISTS waitlist_reach;
CREATE INDEX waitlist_home ON waitlist (residence_departement);
