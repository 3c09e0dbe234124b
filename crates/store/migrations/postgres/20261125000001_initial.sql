-- Switchboard schema, version 1 (PostgreSQL). Keep in step with ../sqlite.
-- Timestamps are milliseconds since the Unix epoch, UTC. Ids are UUID v7 text.

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    language TEXT NOT NULL,
    greeting TEXT NOT NULL,
    instructions TEXT NOT NULL,
    voice TEXT NOT NULL,
    stt_provider TEXT NOT NULL,
    tts_provider TEXT NOT NULL,
    brain TEXT NOT NULL,
    handoff_mode TEXT NOT NULL CHECK (handoff_mode IN ('live_transfer', 'logged_escalation')),
    handoff_number TEXT,
    handoff_phrases TEXT NOT NULL,
    attr_session_id TEXT NOT NULL,
    attr_caller_phone TEXT NOT NULL,
    attr_handoff_reason TEXT NOT NULL,
    attr_handoff_mode TEXT NOT NULL,
    attr_preferred_channel TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    max_concurrent_calls BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE phone_numbers (
    id TEXT PRIMARY KEY,
    e164 TEXT NOT NULL UNIQUE,
    agent_id TEXT REFERENCES agents(id) ON DELETE SET NULL,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX phone_numbers_agent ON phone_numbers(agent_id);

CREATE TABLE trunks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    transport TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
    allowed_cidrs TEXT NOT NULL,
    inbound_username TEXT,
    inbound_password_enc TEXT,
    outbound_username TEXT,
    outbound_password_enc TEXT,
    register BIGINT NOT NULL,
    outbound_caller_id TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    phone TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    email TEXT,
    external_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    agent_id TEXT REFERENCES agents(id) ON DELETE SET NULL,
    direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_addr TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    contact_id TEXT REFERENCES contacts(id) ON DELETE SET NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    end_reason TEXT,
    started_at BIGINT NOT NULL,
    answered_at BIGINT,
    ended_at BIGINT
);
CREATE INDEX sessions_started ON sessions(started_at);
CREATE INDEX sessions_agent ON sessions(agent_id, started_at);

CREATE TABLE turns (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    speaker TEXT NOT NULL,
    text TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE TABLE trace_steps (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn_seq BIGINT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    latency_ms BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX trace_steps_session ON trace_steps(session_id, created_at);

-- A decision to hand a caller to a human. The row is also the delivery
-- state: `turn_count` freezes which turns the transcript holds, and
-- `messages_acked` is how many of the rendered messages Salesforce has
-- acknowledged, so a retry resumes where the last attempt stopped.
CREATE TABLE handoffs (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE REFERENCES sessions(id) ON DELETE CASCADE,
    mode TEXT NOT NULL,
    reason TEXT NOT NULL,
    summary TEXT NOT NULL,
    preferred_channel TEXT,
    channel_details TEXT,
    status TEXT NOT NULL,
    turn_count BIGINT NOT NULL,
    conversation_id TEXT,
    conversation_created BIGINT NOT NULL DEFAULT 0,
    messages_acked BIGINT NOT NULL DEFAULT 0,
    messages_total BIGINT,
    identity TEXT,
    -- The Messaging access token (sealed) this handoff posts with: an
    -- unauthenticated conversation belongs to the token's subject, so a retry,
    -- even after a restart, must post with the same one.
    access_token_enc TEXT,
    routing_attributes TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    routed_at BIGINT,
    estimated_wait_seconds BIGINT,
    rep_name TEXT,
    rep_joined_at BIGINT,
    closed_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX handoffs_status ON handoffs(status, created_at);

-- Every delivery attempt and its result, for the Inbox and Troubleshooting.
CREATE TABLE handoff_attempts (
    id TEXT PRIMARY KEY,
    handoff_id TEXT NOT NULL REFERENCES handoffs(id) ON DELETE CASCADE,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    messages_sent BIGINT NOT NULL,
    error TEXT
);
CREATE INDEX handoff_attempts_handoff ON handoff_attempts(handoff_id, started_at);

-- Work to do outside the request path, written in the same transaction as
-- the change that asks for it. Workers claim a due job with a lease; on
-- PostgreSQL with FOR UPDATE SKIP LOCKED.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'parked', 'done', 'dead')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    first_failed_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (kind, ref_id)
);
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE logins (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log(at);
