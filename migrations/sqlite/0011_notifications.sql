-- Notifications (issue 14): channels, subscriptions, mutes, and the durable outbox.
--
-- An event row is written in the same transaction as the state change that causes it. The
-- delivery worker fans each event out to one delivery per matching channel (the unique key makes
-- that once per channel however many servers fan out), then claims deliveries with a lease and
-- records every attempt. Channel secrets (SMTP password, webhook signing secret) are age
-- ciphertexts bound to notification_channels.secret_enc:<id>.
CREATE TABLE notification_channels (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,                 -- smtp | webhook
    settings    TEXT NOT NULL,                 -- JSON: the kind's settings, no secret
    secret_enc  BLOB,
    created_at  TEXT NOT NULL
);

CREATE TABLE notification_subscriptions (
    id               BLOB PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    channel_id       BLOB NOT NULL REFERENCES notification_channels(id) ON DELETE CASCADE,
    events           TEXT NOT NULL,            -- JSON list of event kinds
    scope            TEXT NOT NULL,            -- all | account | domains | agent
    account_id       BLOB REFERENCES acme_accounts(id) ON DELETE CASCADE,
    domain_patterns  TEXT NOT NULL,            -- JSON list
    agent_id         BLOB REFERENCES agents(id) ON DELETE CASCADE,
    digest           INTEGER NOT NULL,
    digest_when_empty INTEGER NOT NULL,
    digest_last_on   TEXT,                     -- local date (YYYY-MM-DD) of the last digest
    created_at       TEXT NOT NULL
);

CREATE TABLE notification_mutes (
    id              BLOB PRIMARY KEY,
    certificate_id  BLOB NOT NULL REFERENCES certificates(id) ON DELETE CASCADE,
    events          TEXT NOT NULL,             -- JSON list; empty: every kind
    until           TEXT NOT NULL,
    reason          TEXT NOT NULL,
    created_by      TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX notification_mutes_certificate ON notification_mutes(certificate_id);

CREATE TABLE notification_events (
    id               BLOB PRIMARY KEY,
    kind             TEXT NOT NULL,
    certificate_id   BLOB,
    account_id       BLOB,
    agent_id         BLOB,
    dns_names        TEXT NOT NULL,            -- JSON list, for domain-pattern routing
    subscription_id  BLOB REFERENCES notification_subscriptions(id) ON DELETE CASCADE, -- digests
    dedupe_key       TEXT UNIQUE,              -- e.g. expiring:<version>:<days>; once per key
    payload          TEXT NOT NULL,            -- JSON NotificationPayload
    created_at       TEXT NOT NULL,
    fanned_out_at    TEXT
);
CREATE INDEX notification_events_unrouted ON notification_events(created_at) WHERE fanned_out_at IS NULL;

CREATE TABLE notification_deliveries (
    id                BLOB PRIMARY KEY,
    event_id          BLOB NOT NULL REFERENCES notification_events(id) ON DELETE CASCADE,
    channel_id        BLOB NOT NULL REFERENCES notification_channels(id) ON DELETE CASCADE,
    state             TEXT NOT NULL,           -- pending | retrying | delivered | failed
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  TEXT,
    last_code         INTEGER,                 -- HTTP status or SMTP reply code
    last_reply        TEXT,
    delivered_at      TEXT,
    created_at        TEXT NOT NULL,
    UNIQUE (event_id, channel_id)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries(next_attempt_at) WHERE state IN ('pending', 'retrying');

CREATE TABLE notification_attempts (
    delivery_id      BLOB NOT NULL REFERENCES notification_deliveries(id) ON DELETE CASCADE,
    attempt          INTEGER NOT NULL,
    at               TEXT NOT NULL,
    delivered        INTEGER NOT NULL,
    code             INTEGER,
    reply            TEXT NOT NULL,
    next_attempt_at  TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
