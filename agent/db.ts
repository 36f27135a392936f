/**
 * The agent's sqlite database, DATA/agent.db: the audit log, persistent jobs and their run
 * history (`jobs`, `runs`), the outbox of replies made while disconnected, registered
 * scripts (`scripts`), the cluster's server list from the last `servers` frame (`servers`), and
 * persistent jobs' own state (`job_state`).
 *
 * @module
 */
import { mkdirSync } from "node:fs";
import { posix } from "node:path";
import {
  auditMigration,
  type DatabaseSync,
  type Migration,
  openDatabase,
} from "../shared/db/mod.ts";
import { jobsMigration, jobStateMigration } from "./jobs/store.ts";
import { outboxMigration } from "./outbox.ts";
import { scriptsMigration } from "./scripts/store.ts";
import { serversMigration } from "./servers.ts";

/** The agent's migrations, in order. Append only. */
export const agentMigrations: readonly Migration[] = [
  auditMigration,
  jobsMigration,
  outboxMigration,
  scriptsMigration,
  serversMigration,
  jobStateMigration,
];

/** The database file name inside the data directory. */
export const AGENT_DB_FILE = "agent.db";

/**
 * Opens (creating if needed) `dataDir/agent.db` on the real disk, creating `dataDir` too,
 * and applies {@link agentMigrations}. Pass ":memory:" for an in-memory database.
 * The caller owns the handle and must close it.
 * @throws JwError `config` when the directory or database cannot be opened.
 */
export function openAgentDatabase(dataDir: string): DatabaseSync {
  if (dataDir === ":memory:") return openDatabase(":memory:", agentMigrations);
  try {
    mkdirSync(dataDir, { recursive: true });
  } catch {
    // openDatabase reports the failure with the path
  }
  return openDatabase(posix.join(dataDir, AGENT_DB_FILE), agentMigrations);
}
