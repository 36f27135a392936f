/**
 * Directory listings of the file service: JSON for `Accept: application/json`, else a plain
 * HTML page with every name escaped.
 *
 * @module
 */
import { isInside } from "./_path.ts";

/** Most entries listed; a bigger directory is cut (JSON says `truncated: true`). */
export const MAX_LISTING_ENTRIES = 10_000;

/** One entry of a listing. */
export interface ListingEntry {
  name: string;
  type: "file" | "directory" | "other";
  /** Bytes, for files; null for the rest. */
  size: number | null;
  /** Last modification, ISO 8601, when the platform reports it. */
  mtime: string | null;
}

/** The JSON listing. */
export interface Listing {
  /** The directory as requested, from the service's root: "/" or "/a/b/". */
  path: string;
  entries: ListingEntry[];
  /** Present (true) when the directory had more than {@link MAX_LISTING_ENTRIES}. */
  truncated?: true;
}

/**
 * Reads the entries of directory `real` (inside `rootReal`), sorted by name. Symlinks are
 * described by what they point at; one leading outside the root, or that cannot be followed,
 * is left out, as is anything that cannot be measured.
 */
export async function readListing(
  real: string,
  rootReal: string,
  path: string,
): Promise<Listing> {
  const entries: ListingEntry[] = [];
  let truncated = false;
  for await (const entry of Deno.readDir(real)) {
    if (entries.length >= MAX_LISTING_ENTRIES) {
      truncated = true;
      break;
    }
    let full = `${real}/${entry.name}`;
    try {
      if (entry.isSymlink) {
        full = await Deno.realPath(full);
        if (!isInside(full, rootReal)) continue;
      }
      const info = await Deno.stat(full);
      entries.push({
        name: entry.name,
        type: info.isFile ? "file" : info.isDirectory ? "directory" : "other",
        size: info.isFile ? info.size : null,
        mtime: info.mtime?.toISOString() ?? null,
      });
    } catch {
      // gone meanwhile, dangling or unreadable: not listed
    }
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return truncated ? { path, entries, truncated: true } : { path, entries };
}

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The HTML page of a listing; links are relative (the request path ends with `/`). */
export function listingHtml(listing: Listing): string {
  const title = escapeHtml(`Index of ${listing.path}`);
  const rows: string[] = [];
  if (listing.path !== "/") rows.push(`<li><a href="../">../</a></li>`);
  for (const e of listing.entries) {
    const slash = e.type === "directory" ? "/" : "";
    const href = escapeHtml(encodeURIComponent(e.name) + slash);
    const size = e.size === null ? "" : ` <span>${e.size} bytes</span>`;
    rows.push(`<li><a href="${href}">${escapeHtml(e.name + slash)}</a>${size}</li>`);
  }
  if (listing.truncated) rows.push(`<li>… (more entries not shown)</li>`);
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${title}</title></head>
<body><h1>${title}</h1>
<ul>
${rows.join("\n")}
</ul>
</body></html>
`;
}

/** Answers a listing request as JSON or HTML, by the request's `Accept`. */
export function listingResponse(req: Request, listing: Listing): Response {
  const json = (req.headers.get("accept") ?? "").toLowerCase().includes("application/json");
  const headers = new Headers({
    "content-type": json ? "application/json" : "text/html; charset=utf-8",
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'",
    "vary": "accept",
  });
  const body = json ? JSON.stringify(listing) : listingHtml(listing);
  return new Response(req.method === "HEAD" ? null : body, { headers });
}
