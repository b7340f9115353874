-- The schema of the release before versioned migrations, statement for statement (src/storage/postgres.py,
-- SCHEMA_SQL). Idempotent on purpose: it also completes a database made by an older release. A database
-- holding the whole of it already is marked as at this version without running it (src/storage/schema.py).
-- No rollback: undoing the baseline would drop every user.

CREATE TABLE IF NOT EXISTS users (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        username text NOT NULL UNIQUE,
        password_hash text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );

-- A disabled user cannot start a session (create_session); added to a users table made before it.
ALTER TABLE users ADD COLUMN IF NOT EXISTS disabled boolean NOT NULL DEFAULT false;

CREATE TABLE IF NOT EXISTS login_failures (
        key text NOT NULL,
        at double precision NOT NULL
    );

CREATE INDEX IF NOT EXISTS login_failures_key_at ON login_failures (key, at);

CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures (at);

-- One row: the random id of this database's user store, carried by every token it issues, so that a
-- database created afresh (ids handed out again from 1) never accepts an older database's tokens.
CREATE TABLE IF NOT EXISTS store_identity (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        store_id text NOT NULL DEFAULT md5(gen_random_uuid()::text)
    );

INSERT INTO store_identity DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Tells every process's user cache which user changed ('*': all of them).
CREATE OR REPLACE FUNCTION flask_api_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('flask_api_users', CASE WHEN TG_OP = 'TRUNCATE' THEN '*' ELSE OLD.id::text END);
        RETURN NULL;
    END
    $$;

CREATE OR REPLACE TRIGGER users_changed AFTER UPDATE OR DELETE ON users FOR EACH ROW EXECUTE FUNCTION flask_api_users_changed();

CREATE OR REPLACE TRIGGER users_truncated AFTER TRUNCATE ON users FOR EACH STATEMENT EXECUTE FUNCTION flask_api_users_changed();

-- One row per login. No foreign key to users, so that users can still be truncated or dropped by hand:
-- a session whose user is gone names no user, and the token check looks the user up as well.
CREATE TABLE IF NOT EXISTS sessions (
        id text PRIMARY KEY,
        user_id bigint NOT NULL,
        created_at double precision NOT NULL,
        expires_at double precision NOT NULL
    );

CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id);

CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);

-- The current refresh token of each session, as ``<session id>.<generation>`` in ``hash`` (rows of the
-- earlier format, SHA-256 hashes of every token, match no token and leave with their session).
CREATE TABLE IF NOT EXISTS refresh_tokens (
        hash text PRIMARY KEY,
        session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        spent boolean NOT NULL DEFAULT false
    );

CREATE INDEX IF NOT EXISTS refresh_tokens_session_id ON refresh_tokens (session_id);

-- Tells every process which session ended ('*': all of them). A session only ever ends by deletion.
CREATE OR REPLACE FUNCTION flask_api_sessions_ended() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('flask_api_sessions', CASE WHEN TG_OP = 'TRUNCATE' THEN '*' ELSE OLD.id END);
        RETURN NULL;
    END
    $$;

CREATE OR REPLACE TRIGGER sessions_ended AFTER DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION flask_api_sessions_ended();

CREATE OR REPLACE TRIGGER sessions_truncated AFTER TRUNCATE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION flask_api_sessions_ended();
