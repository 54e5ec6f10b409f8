-- aise::auth (include/aise/auth_store.hpp, docs/auth.md): users, project
-- roles, refresh tokens and the audit trail. Only the SHA-256 of a refresh
-- token is stored. role: 1 viewer, 2 maintainer, 3 admin (aise::project_role;
-- no row: no role). Audit ids come from the one row of auth_audit_counter,
-- bumped in the inserting transaction (its row lock orders concurrent
-- writers on PostgreSQL; SQLite serializes writers anyway). Times are
-- nanoseconds since the epoch; details is JSON text. Portable SQL.
CREATE TABLE auth_users (
  id TEXT PRIMARY KEY,
  username TEXT NOT NULL UNIQUE,
  password_hash TEXT NOT NULL,
  global_admin INTEGER NOT NULL,
  disabled INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);

CREATE TABLE auth_roles (
  user_id TEXT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
  project TEXT NOT NULL,
  role INTEGER NOT NULL,
  PRIMARY KEY (user_id, project)
);
CREATE INDEX auth_roles_by_project ON auth_roles (project, user_id);

CREATE TABLE auth_refresh_tokens (
  token_hash TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  revoked INTEGER NOT NULL,
  replaced_by TEXT NOT NULL
);
CREATE INDEX auth_refresh_tokens_by_user ON auth_refresh_tokens (user_id);

CREATE TABLE auth_audit_counter (
  id INTEGER PRIMARY KEY,
  last BIGINT NOT NULL
);
INSERT INTO auth_audit_counter (id, last) VALUES (1, 0);

CREATE TABLE auth_audit (
  id BIGINT PRIMARY KEY,
  at BIGINT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  subject TEXT NOT NULL,
  ip TEXT NOT NULL,
  details TEXT NOT NULL
);
