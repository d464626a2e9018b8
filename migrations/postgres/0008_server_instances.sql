-- Serving processes, one row each, heartbeat written every `liveness.heartbeat_secs` and
-- deleted on clean shutdown. `certkeep rekey` refuses while any row is fresh.
CREATE TABLE server_instances (
    id            UUID PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    heartbeat_at  TIMESTAMPTZ NOT NULL
);
