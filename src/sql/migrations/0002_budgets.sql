-- Budget counters shared by every process using the database (aise::llm's
-- token budgets). limit_value 0: no limit. Portable SQL (SQLite and
-- PostgreSQL).
CREATE TABLE budgets (
  name TEXT PRIMARY KEY,
  limit_value BIGINT NOT NULL,
  spent BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
