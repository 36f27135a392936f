/**
 * Signed scripts stored on the server: the `scripts` table, one row per name and version.
 * Only scripts whose signature verified go in ({@link ScriptStore.put} takes a
 * `VerifiedScript`); agents check them again against their own trusted keys.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import type { VerifiedScript } from "../../shared/crypto/script.ts";
import type { DatabaseSync, Migration } from "../../shared/db/mod.ts";
import { JwError } from "../../shared/errors.ts";
import type { ScriptInfo, ScriptUploaded } from "../../shared/protocol/operator.ts";

/**
 * Creates `scripts`: one row per uploaded script version. `text` is the whole signed file,
 * `sha256` its digest (`sha256:` + hex), `permissions` the header's permissions as JSON with
 * defaults applied. Rows are written once and never updated; a new version is a new row.
 */
export const scriptsMigration: Migration = {
  name: "scripts",
  up: `
    CREATE TABLE scripts (
      name TEXT NOT NULL,
      version INTEGER NOT NULL,
      sha256 TEXT NOT NULL,
      signer TEXT NOT NULL,
      signed_at TEXT,
      description TEXT,
      permissions TEXT NOT NULL,
      text TEXT NOT NULL,
      size INTEGER NOT NULL,
      uploaded_by TEXT NOT NULL,
      uploaded_at INTEGER NOT NULL,
      PRIMARY KEY (name, version)
    );
  `,
};

/** A stored script version with its file text. */
export interface StoredScript {
  script: ScriptInfo;
  /** The whole signed file, byte for byte as uploaded. */
  text: string;
}

/**
 * Reads and writes the `scripts` table. Synchronous (node:sqlite) and single-threaded, so a
 * check followed by a write in one method cannot interleave with another call.
 */
export interface ScriptStore {
  /**
   * Stores a verified script uploaded by `uploadedBy`. Storing the same name, version and
   * content again changes nothing and answers `created: false` with the stored info.
   * @throws JwError `conflict` when that name and version is stored with other content.
   */
  put(script: VerifiedScript, uploadedBy: string): ScriptUploaded;
  /** Every stored version, by name then version. */
  list(): ScriptInfo[];
  /**
   * One version (the highest when `version` is omitted) with its text.
   * @throws JwError `not_found`.
   */
  get(name: string, version?: number): StoredScript;
  /**
   * Removes one version, or every version when `version` is omitted; returns the versions
   * removed, ascending.
   * @throws JwError `not_found` when nothing matched.
   */
  delete(name: string, version?: number): number[];
}

interface Row {
  name: string;
  version: number;
  sha256: string;
  signer: string;
  signed_at: string | null;
  description: string | null;
  permissions: string;
  size: number;
  uploaded_by: string;
  uploaded_at: number;
  text?: string;
}

const INFO_COLUMNS =
  "name, version, sha256, signer, signed_at, description, permissions, size, uploaded_by, uploaded_at";

function toInfo(row: Row): ScriptInfo {
  const info: ScriptInfo = {
    name: row.name,
    version: Number(row.version),
    sha256: row.sha256,
    signer: row.signer,
    permissions: JSON.parse(row.permissions),
    size: Number(row.size),
    uploadedBy: row.uploaded_by,
    uploadedAt: Number(row.uploaded_at),
  };
  if (row.description !== null) info.description = row.description;
  if (row.signed_at !== null) info.signedAt = row.signed_at;
  return info;
}

/** `"NAME"` or `"NAME" version N`, for messages. */
function describe(name: string, version?: number): string {
  return version === undefined
    ? `script ${JSON.stringify(name)}`
    : `script ${JSON.stringify(name)} version ${version}`;
}

/** Creates a {@link ScriptStore} over a database migrated with `serverMigrations`. */
export function createScriptStore(db: DatabaseSync, clock: Clock): ScriptStore {
  const selectOne = db.prepare(`SELECT ${INFO_COLUMNS}, text FROM scripts
    WHERE name = ? AND version = ?`);
  const selectNewest = db.prepare(`SELECT ${INFO_COLUMNS}, text FROM scripts
    WHERE name = ? ORDER BY version DESC LIMIT 1`);
  const selectAll = db.prepare(`SELECT ${INFO_COLUMNS} FROM scripts ORDER BY name, version`);
  const insert = db.prepare(`INSERT INTO scripts (${INFO_COLUMNS}, text)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  const deleteOne = db.prepare(
    "DELETE FROM scripts WHERE name = ? AND version = ? RETURNING version",
  );
  const deleteAll = db.prepare("DELETE FROM scripts WHERE name = ? RETURNING version");

  return {
    put(script, uploadedBy) {
      const { name, version } = script.header;
      const existing = selectOne.get(name, version) as Row | undefined;
      if (existing) {
        if (existing.sha256 === script.sha256) return { script: toInfo(existing), created: false };
        throw new JwError(
          "conflict",
          `${describe(name, version)} is already stored with other content ` +
            `(${existing.sha256}); bump the version to upload a changed script`,
          { detail: { name, version, sha256: existing.sha256 } },
        );
      }
      const { permissions } = script.header;
      insert.run(
        name,
        version,
        script.sha256,
        script.signer,
        script.header.signedAt ?? null,
        script.header.description ?? null,
        JSON.stringify({
          run: permissions.run,
          read: permissions.read,
          write: permissions.write,
          net: permissions.net,
        }),
        new TextEncoder().encode(script.text).length,
        uploadedBy,
        clock.now(),
        script.text,
      );
      return { script: toInfo(selectOne.get(name, version) as unknown as Row), created: true };
    },

    list() {
      return (selectAll.all() as unknown as Row[]).map(toInfo);
    },

    get(name, version) {
      const row = (version === undefined ? selectNewest.get(name) : selectOne.get(name, version)) as
        | Row
        | undefined;
      if (!row) throw new JwError("not_found", `no ${describe(name, version)} on this server`);
      return { script: toInfo(row), text: row.text! };
    },

    delete(name, version) {
      const rows =
        (version === undefined ? deleteAll.all(name) : deleteOne.all(name, version)) as unknown as {
          version: number;
        }[];
      if (rows.length === 0) {
        throw new JwError("not_found", `no ${describe(name, version)} on this server`);
      }
      return rows.map((r) => Number(r.version)).sort((a, b) => a - b);
    },
  };
}
