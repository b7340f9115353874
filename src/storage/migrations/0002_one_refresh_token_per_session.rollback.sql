-- The schema of 0001_baseline again. The rows of the earlier format deleted on the way up stay deleted: they
-- matched no token.

ALTER TABLE refresh_tokens ADD COLUMN spent boolean NOT NULL DEFAULT false;

DROP INDEX refresh_tokens_session_id;

CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);
