-- Fencing for the control loop (issue #15): every time a replica takes the leader lock it bumps the epoch here, on
-- the connection that holds the lock; every actuation carries that epoch and is refused when it is no longer the
-- current one or its holder no longer holds the lock. One row (a reference table on Citus).
CREATE TABLE leader_epoch (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch       bigint NOT NULL,
    holder_pid  integer NOT NULL,
    holder      text NOT NULL,
    since       timestamptz NOT NULL DEFAULT now()
);

-- The epoch of the leader that queued a command (NULL: an operator's action or a command from before fencing).
ALTER TABLE commands ADD COLUMN leader_epoch bigint;
