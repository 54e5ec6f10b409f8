-- libaise schema, version 1. Shipped inside the library (src/sql/migrations):
-- never edit a released migration; add the next one instead. Runs on SQLite
-- and PostgreSQL alike: statements end with ";" at the end of a line.
-- Times are nanoseconds since the Unix epoch (UTC); JSON is stored as text.

CREATE TABLE projects (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  description TEXT NOT NULL,
  metadata TEXT NOT NULL,
  archived INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);

CREATE TABLE agents (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  kind TEXT NOT NULL,
  capabilities TEXT NOT NULL,
  status TEXT NOT NULL,
  restarts INTEGER NOT NULL,
  last_heartbeat BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX agents_by_project ON agents (project, id);

CREATE TABLE agent_snapshots (
  agent_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  taken_at BIGINT NOT NULL,
  state TEXT NOT NULL,
  PRIMARY KEY (agent_id, version)
);

CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  kind TEXT NOT NULL,
  capability TEXT NOT NULL,
  effective_capability TEXT NOT NULL,
  description TEXT NOT NULL,
  priority INTEGER NOT NULL,
  payload TEXT NOT NULL,
  depends_on TEXT NOT NULL,
  max_attempts INTEGER NOT NULL,
  timeout_ns BIGINT,
  deadline BIGINT,
  requires_approval INTEGER NOT NULL,
  on_dependency_failure INTEGER NOT NULL,
  parent TEXT NOT NULL,
  state TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  agent TEXT NOT NULL,
  result TEXT,
  error TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  not_before BIGINT NOT NULL,
  version BIGINT NOT NULL
);
CREATE INDEX tasks_by_project_state ON tasks (project, state, id);
CREATE INDEX tasks_by_state ON tasks (state, id);
CREATE INDEX tasks_by_capability ON tasks (effective_capability, state, id);
CREATE INDEX tasks_by_parent ON tasks (parent, id);
CREATE INDEX tasks_finished ON tasks (state, updated_at);

CREATE TABLE task_dependencies (
  task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  depends_on TEXT NOT NULL,
  PRIMARY KEY (task_id, position)
);
CREATE INDEX task_dependencies_reverse ON task_dependencies (depends_on);

CREATE TABLE task_attempts (
  task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  number INTEGER NOT NULL,
  agent TEXT NOT NULL,
  started_at BIGINT NOT NULL,
  finished_at BIGINT,
  outcome TEXT NOT NULL,
  error TEXT,
  PRIMARY KEY (task_id, number)
);

CREATE TABLE event_counters (
  project TEXT PRIMARY KEY,
  last_sequence BIGINT NOT NULL
);

CREATE TABLE events (
  project TEXT NOT NULL,
  sequence BIGINT NOT NULL,
  type TEXT NOT NULL,
  subject TEXT NOT NULL,
  at BIGINT NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (project, sequence)
);

CREATE TABLE artifacts (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  task TEXT NOT NULL,
  name TEXT NOT NULL,
  media_type TEXT NOT NULL,
  size BIGINT NOT NULL,
  sha256 TEXT NOT NULL,
  version INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  UNIQUE (project, name, version)
);
CREATE INDEX artifacts_by_digest ON artifacts (sha256);
