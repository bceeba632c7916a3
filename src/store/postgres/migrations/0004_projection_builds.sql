-- The system projections move onto the head, which every batch locks: a
-- batch learns with the lock which projections to link, so every node
-- adds the same links to every append whatever it was started with, and
-- a change reaches every node at its next batch.
--   `projections`: the ones maintained live by every append (`none`, or
--   names such as `by-category,streams`); NULL until a server records
--   the ones it was started with.
--   `building`: the ones turned on after events were written, being built
--   from the log (`none` when no build runs), and where that build is:
--   clearing their old streams, then linking from `build_next`. Any
--   node's writer takes the steps; the step that reaches the head moves
--   them to `projections`.
ALTER TABLE log_head
    ADD COLUMN projections text,
    ADD COLUMN building text NOT NULL DEFAULT 'none',
    ADD COLUMN build_cleared boolean NOT NULL DEFAULT false,
    ADD COLUMN build_next bigint NOT NULL DEFAULT 0;
UPDATE log_head SET projections = (SELECT value FROM settings WHERE key = 'projections');
DELETE FROM settings WHERE key = 'projections';
