-- depends: 0001_baseline
-- A session keeps exactly one refresh_tokens row, its current generation (<session id>.<generation>): the
-- refresh takes the session's row FOR UPDATE and moves that one row on. The database now holds that rule
-- (a unique index instead of a plain one, under the same name), the rows of the earlier format (a SHA-256
-- hash per token ever issued, no '.': they match no token) go, and so does their unused "spent" column.
-- The previous release reads and writes these rows the same way, so both run side by side during a rollout.

DELETE FROM refresh_tokens WHERE position('.' in hash) = 0;

DROP INDEX refresh_tokens_session_id;

CREATE UNIQUE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

ALTER TABLE refresh_tokens DROP COLUMN spent;
