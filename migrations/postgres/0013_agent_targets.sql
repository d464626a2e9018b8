-- Deployment targets defined on the server, per agent (the agent keeps only its identity and
-- the server address). `settings` is the JSON of the kind's settings, `probe` a JSON array of
-- `host:port` addresses.
CREATE TABLE agent_targets (
    id          UUID PRIMARY KEY,
    agent_id    UUID NOT NULL REFERENCES agents(id),
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,                   -- ccs | directory | windows-store
    settings    TEXT NOT NULL,
    probe       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (agent_id, name)
);

-- The targets an assignment goes to. An assignment without rows here goes to every target of
-- its agent.
CREATE TABLE assignment_targets (
    agent_id        UUID NOT NULL,
    certificate_id  UUID NOT NULL,
    target_id       UUID NOT NULL REFERENCES agent_targets(id) ON DELETE CASCADE,
    PRIMARY KEY (agent_id, certificate_id, target_id),
    FOREIGN KEY (agent_id, certificate_id)
        REFERENCES agent_assignments(agent_id, certificate_id) ON DELETE CASCADE
);

-- A reported file belongs to one target; '' for reports of agents without targets.
ALTER TABLE deployments ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments DROP CONSTRAINT deployments_pkey;
ALTER TABLE deployments ADD PRIMARY KEY (agent_id, certificate_id, target, file_name);

-- What each agent's probes saw served, per target, probe address and DNS name. `expected` is
-- the current thumbprint when probed; `pending_since` the first probe that did not see it
-- (NULL while serving); `lagging_at` when that lasted past deployment.lagging_minutes.
CREATE TABLE served_names (
    agent_id        UUID NOT NULL REFERENCES agents(id),
    certificate_id  UUID NOT NULL REFERENCES certificates(id),
    target          TEXT NOT NULL,
    address         TEXT NOT NULL,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,                   -- serving | stale | wrong | unreachable
    thumbprint      TEXT,
    error           TEXT,
    expected        TEXT NOT NULL,
    pending_since   TIMESTAMPTZ,
    lagging_at      TIMESTAMPTZ,
    probed_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, certificate_id, target, address, name)
);

-- Rollout guard per agent: a change window (`Sat 02:00-04:00 +01:00`) outside which a renewed
-- certificate waits (unless the replaced version expires within deployment.window_margin_days),
-- and canaries, which install first; the others wait until the canaries serve the new version.
CREATE TABLE agent_rollout (
    agent_id       UUID PRIMARY KEY REFERENCES agents(id),
    change_window  TEXT,
    canary         BOOLEAN NOT NULL DEFAULT FALSE
);
