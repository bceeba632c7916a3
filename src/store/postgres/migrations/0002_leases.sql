-- Leases: which server of several on this database does a job only one
-- may do at a time (the persistent subscriptions' owner), until when,
-- and where the others reach it. Times are the database's clock, so the
-- servers' clocks never need to agree.
CREATE TABLE leases (
    name       text        PRIMARY KEY,
    holder     uuid        NOT NULL,
    address    text        NOT NULL,
    expires_at timestamptz NOT NULL
);
