/**
 * The scripts this agent holds, in the `scripts` table of agent.db: the whole signed file per
 * name and version. A script is stored only after its signature verified against the agent's
 * trusted signers, and verified again before every run.
 *
 * @module
 */
import type { DatabaseSync, Migration } from "../../shared/db/mod.ts";
import { JwError } from "../../shared/errors.ts";

/** The migration creating `scripts`; part of the agent's migration list. */
export const scriptsMigration: Migration = {
  name: "scripts",
  up: `
    CREATE TABLE scripts (
      name TEXT NOT NULL,
      version INTEGER NOT NULL,
      sha256 TEXT NOT NULL,
      signer TEXT NOT NULL,
      text TEXT NOT NULL,
      registered_at INTEGER NOT NULL,
      PRIMARY KEY (name, version)
    );
  `,
};

/** One stored script, without its text. */
export interface StoredScriptInfo {
  name: string;
  version: number;
  sha256: string;
  signer: string;
  registeredAt: number;
}

/** A stored script with its text. */
export interface StoredScript extends StoredScriptInfo {
  text: string;
}

/** Scripts by name and version. Synchronous; one agent owns the database. */
export interface ScriptStore {
  /**
   * Stores a script. Storing the same name, version and content again is a no-op.
   * @returns true when it was new.
   * @throws JwError `conflict` when the name and version are stored with other content.
   */
  put(script: StoredScript): boolean;
  /**
   * The script under `name`: `version`, or the highest version held.
   * @throws JwError `not_found`.
   */
  get(name: string, version?: number): StoredScript;
  /** Every stored script, by name then version. */
  list(): StoredScriptInfo[];
  /** Removes `version` of `name`, or every version; returns the versions removed. */
  delete(name: string, version?: number): number[];
}

/** Creates the store over the agent's database. */
export function createScriptStore(db: DatabaseSync): ScriptStore {
  const row = (r: Record<string, unknown>): StoredScript => ({
    name: r.name as string,
    version: r.version as number,
    sha256: r.sha256 as string,
    signer: r.signer as string,
    registeredAt: r.registered_at as number,
    text: r.text as string,
  });
  const describe = (name: string, version?: number) =>
    version === undefined ? `script "${name}"` : `script "${name}" version ${version}`;
  return {
    put(script) {
      const existing = db.prepare("SELECT sha256 FROM scripts WHERE name = ? AND version = ?")
        .get(script.name, script.version) as { sha256: string } | undefined;
      if (existing) {
        if (existing.sha256 === script.sha256) return false;
        throw new JwError(
          "conflict",
          `${describe(script.name, script.version)} is already registered with other content: ` +
            "sign the new content with a higher version",
          { detail: { name: script.name, version: script.version } },
        );
      }
      db.prepare(
        "INSERT INTO scripts (name, version, sha256, signer, text, registered_at) VALUES (?, ?, ?, ?, ?, ?)",
      ).run(
        script.name,
        script.version,
        script.sha256,
        script.signer,
        script.text,
        script.registeredAt,
      );
      return true;
    },
    get(name, version) {
      const r = version === undefined
        ? db.prepare("SELECT * FROM scripts WHERE name = ? ORDER BY version DESC LIMIT 1").get(name)
        : db.prepare("SELECT * FROM scripts WHERE name = ? AND version = ?").get(name, version);
      if (!r) {
        throw new JwError(
          "not_found",
          `${describe(name, version)} is not registered on this agent`,
          { detail: { name, ...(version === undefined ? {} : { version }) } },
        );
      }
      return row(r as Record<string, unknown>);
    },
    list() {
      return db.prepare(
        "SELECT name, version, sha256, signer, registered_at FROM scripts ORDER BY name, version",
      ).all().map((r) => {
        const { text: _text, ...info } = row({ ...r, text: "" });
        return info;
      });
    },
    delete(name, version) {
      const rows =
        (version === undefined
          ? db.prepare("DELETE FROM scripts WHERE name = ? RETURNING version").all(name)
          : db.prepare("DELETE FROM scripts WHERE name = ? AND version = ? RETURNING version")
            .all(name, version)) as { version: number }[];
      return rows.map((r) => r.version).sort((a, b) => a - b);
    },
  };
}
