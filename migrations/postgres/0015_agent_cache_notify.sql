-- Notifies the agent listener caches of every server (channel certkeep_agent_cache) when a
-- write may change an agent's identity or manifest. PostgreSQL delivers the notification when
-- the writing transaction commits, and folds identical payloads of one transaction into one.
-- Payloads: 'a:<agent id>' (that agent), '*' (every agent).

-- TG_ARGV[0]: the column holding the agent id, or '*' to notify every agent.
CREATE FUNCTION certkeep_agent_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_ARGV[0] = '*' THEN
        PERFORM pg_notify('certkeep_agent_cache', '*');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('certkeep_agent_cache', 'a:' || (to_jsonb(OLD) ->> TG_ARGV[0]));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('certkeep_agent_cache', 'a:' || (to_jsonb(NEW) ->> TG_ARGV[0]));
    END IF;
    RETURN NULL;
END
$$;

-- A certificate's name or current version: every agent it is assigned to.
CREATE FUNCTION certkeep_agent_cache_notify_certificate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('certkeep_agent_cache', 'a:' || a.agent_id)
        FROM agent_assignments a
        WHERE a.certificate_id = OLD.id;
    RETURN NULL;
END
$$;

-- Only the columns of an identity (state, serials, name, PFX mode, CCS password): reports
-- (last_seen_at, os_*) and join tokens do not notify.
CREATE TRIGGER agents_agent_cache
    AFTER UPDATE OF state, name, cert_serial, previous_cert_serial, pfx_encryption, ccs_password_enc OR DELETE
    ON agents FOR EACH ROW EXECUTE FUNCTION certkeep_agent_cache_notify('id');

CREATE TRIGGER agent_assignments_agent_cache
    AFTER INSERT OR UPDATE OR DELETE
    ON agent_assignments FOR EACH ROW EXECUTE FUNCTION certkeep_agent_cache_notify('agent_id');

CREATE TRIGGER agent_targets_agent_cache
    AFTER INSERT OR UPDATE OR DELETE
    ON agent_targets FOR EACH ROW EXECUTE FUNCTION certkeep_agent_cache_notify('agent_id');

CREATE TRIGGER assignment_targets_agent_cache
    AFTER INSERT OR UPDATE OR DELETE
    ON assignment_targets FOR EACH ROW EXECUTE FUNCTION certkeep_agent_cache_notify('agent_id');

-- Whether any agent is a canary decides the holds of every other agent.
CREATE TRIGGER agent_rollout_agent_cache
    AFTER INSERT OR UPDATE OR DELETE
    ON agent_rollout FOR EACH STATEMENT EXECUTE FUNCTION certkeep_agent_cache_notify('*');

CREATE TRIGGER certificates_agent_cache
    AFTER UPDATE OF name, current_version_id OR DELETE
    ON certificates FOR EACH ROW EXECUTE FUNCTION certkeep_agent_cache_notify_certificate();
