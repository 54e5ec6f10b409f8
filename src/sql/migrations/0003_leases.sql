-- Leases of task attempts run by worker processes (store::acquire_lease and
-- the rest of the store's lease section; docs/sql.md, "Leases"). One row per
-- (task, attempt); every decision about an attempt is one conditional
-- UPDATE or INSERT ... ON CONFLICT DO NOTHING on its row. state: 0 held,
-- 1 done, 2 lost, 3 revoked (aise::lease_state). worker is '' and
-- acquired_at, expires_at are 0 for a row ended before any worker took it;
-- ended_at is NULL while held; outcome (JSON text) is set when done. The
-- primary key serves the per-task reads (get_leases) and the cascade when
-- retention drops a task; no other index, so that a heartbeat (which moves
-- expires_at) stays a cheap in-place update. Portable SQL (SQLite and
-- PostgreSQL).
CREATE TABLE task_leases (
  task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL,
  worker TEXT NOT NULL,
  state INTEGER NOT NULL,
  acquired_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  ended_at BIGINT,
  outcome TEXT,
  PRIMARY KEY (task_id, attempt)
);
