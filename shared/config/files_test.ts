import assert from "node:assert/strict";
import { z } from "zod";
import { isJwError } from "../errors.ts";
import { filesCacheDir, FilesConfig } from "./files.ts";
import { loadConfig } from "./load.ts";

/** The section as the server config holds it. */
const Section = z.object({ files: FilesConfig.prefault({}) }).strict();

function configError(files: Record<string, unknown>): string {
  try {
    loadConfig(Section, { file: { files } });
  } catch (err) {
    assert.ok(isJwError(err, "config"), String(err));
    return err.message;
  }
  throw new Error("expected a config error");
}

Deno.test("FilesConfig defaults: off, no listing, no upstreams, 1GiB, 30s", () => {
  const { files } = loadConfig(Section, {});
  assert.deepEqual(files, {
    listing: false,
    upstreams: [],
    maxBytes: 1024 ** 3,
    upstreamTimeout: 30_000,
  });
  assert.equal(filesCacheDir(files, "/var/lib/jw"), "/var/lib/jw/files-cache");
});

Deno.test("FilesConfig takes a root, listing, upstreams, a cache, sizes and durations", () => {
  const { files } = loadConfig(Section, {
    file: {
      files: {
        root: "/srv/jw/files/",
        listing: true,
        upstreams: ["https://mirror.example.test/jw/", "http://10.0.0.5:8080"],
        cache: "/var/cache/jw/../jw-files",
        maxBytes: "2GiB",
        upstreamTimeout: "1m",
      },
    },
  });
  assert.deepEqual(files, {
    root: "/srv/jw/files",
    listing: true,
    upstreams: ["https://mirror.example.test/jw", "http://10.0.0.5:8080"],
    cache: "/var/cache/jw-files",
    maxBytes: 2 * 1024 ** 3,
    upstreamTimeout: 60_000,
  });
  assert.equal(filesCacheDir(files, "/var/lib/jw"), "/var/cache/jw-files");
});

Deno.test("FilesConfig refuses bad values by path", async (t) => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["relative root", { root: "files" }, /^config files\.root: expected an absolute directory/],
    ["relative cache", { cache: "./c" }, /^config files\.cache: expected an absolute directory/],
    ["listing not a boolean", { listing: "yes" }, /^config files\.listing: /],
    [
      "upstream of another scheme",
      { upstreams: ["ftp://x.test"] },
      /^config files\.upstreams\.0: expected an http:\/\/ or https:\/\/ base URL/,
    ],
    [
      "upstream not a URL",
      { upstreams: ["https://ok.test", "mirror"] },
      /^config files\.upstreams\.1: expected an http/,
    ],
    [
      "upstream with credentials",
      { upstreams: ["https://u:p@x.test"] },
      /^config files\.upstreams\.0: credentials in an upstream URL are not supported/,
    ],
    [
      "upstream with a query",
      { upstreams: ["https://x.test/?a=1"] },
      /^config files\.upstreams\.0: an upstream base URL takes no \?query/,
    ],
    ["bad size", { maxBytes: "lots" }, /^config files\.maxBytes: expected a size/],
    [
      "bad duration",
      { upstreamTimeout: "soon" },
      /^config files\.upstreamTimeout: expected a duration/,
    ],
    ["unknown key", { roots: "/x" }, /^config files: unknown key "roots"/],
  ];
  for (const [name, files, message] of cases) {
    await t.step(name, () => assert.match(configError(files), message));
  }
});
