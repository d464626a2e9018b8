-- Dashboard sessions (server/src/ui/session.rs). The cookie holds an opaque 256-bit id; only
-- its SHA-256 is stored. A session belongs either to an API token (and dies with it: deleted
-- with the token, refused once the token is revoked or expired) or to an OIDC identity.
CREATE TABLE ui_sessions (
    id_hash       BLOB PRIMARY KEY,
    csrf_token    TEXT NOT NULL,                  -- bound to this session, in every form
    token_id      BLOB REFERENCES api_tokens(id) ON DELETE CASCADE,
    oidc_subject  TEXT,
    oidc_display  TEXT,
    oidc_scopes   TEXT,                           -- JSON array of scopes
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,           -- idle expiry counts from here
    expires_at    TEXT NOT NULL,           -- absolute expiry
    CHECK ((token_id IS NULL) <> (oidc_subject IS NULL)),
    CHECK ((oidc_subject IS NULL) = (oidc_scopes IS NULL))
);
CREATE INDEX ui_sessions_token ON ui_sessions (token_id);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
