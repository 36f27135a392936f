/**
 * A thin wrapper over `node:sqlite`: opens a database in WAL mode and applies numbered
 * migrations once each (tracked in `PRAGMA user_version`).
 *
 * Concurrency: `DatabaseSync` is synchronous; one process owns one database file.
 *
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { JwError } from "../errors.ts";

export type { DatabaseSync };

/** A schema change; `up` runs inside a transaction. */
export interface Migration {
  /** Human name, for errors. */
  name: string;
  /** SQL to apply. */
  up: string;
}

/**
 * Opens (creating if needed) the database at `path` — or in memory for ":memory:" — and
 * brings it up to date with `migrations` (index i is version i+1).
 * @throws JwError `config` when the file cannot be opened or a migration fails.
 */
export function openDatabase(path: string, migrations: readonly Migration[]): DatabaseSync {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path);
  } catch (err) {
    throw new JwError("config", `cannot open database ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;");
  const row = db.prepare("PRAGMA user_version").get() as { user_version: number };
  for (let v = row.user_version; v < migrations.length; v++) {
    const m = migrations[v];
    try {
      db.exec("BEGIN");
      db.exec(m.up);
      db.exec(`PRAGMA user_version = ${v + 1}`);
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      db.close();
      throw new JwError(
        "config",
        `migration ${v + 1} (${m.name}) failed on ${path}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }
  return db;
}
