/**
 * Routing key and topic templates: `{type}`, `{agent}`, `{key}`, `{server}` and
 * `{tag.NAME}` are replaced by the message's values; a missing or empty value becomes `_`.
 * Characters a destination does not allow are replaced by `_` (see `safe`).
 *
 * @module
 */
import { JwError } from "../../shared/errors.ts";
import type { OutboxItem } from "./backend.ts";

const FIELD = /\{(type|agent|key|server|tag\.[A-Za-z0-9._/-]+)\}/g;

/**
 * Checks a template: every `{…}` must be a known field.
 * @throws JwError `config` naming the unknown field.
 */
export function checkTemplate(template: string, what: string): void {
  const unknown = template.replace(FIELD, "").match(/\{[^}]*\}/);
  if (unknown) {
    throw new JwError(
      "config",
      `${what}: unknown field ${unknown[0]} in "${template}" ` +
        "(use {type}, {agent}, {key}, {server}, {tag.NAME})",
    );
  }
}

/**
 * Fills `template` for `item`. `safe` lists the characters a value may keep (others become
 * `_`): e.g. /[A-Za-z0-9_.-]/ for NSQ topics; the template's own text is kept as written.
 */
export function renderTemplate(
  template: string,
  item: Pick<OutboxItem, "type" | "agent" | "key" | "tags">,
  serverId: string,
  safe: RegExp = /[^\s#+/*]/,
): string {
  return template.replace(FIELD, (_, field: string) => {
    let value: string | null | undefined;
    if (field === "type") value = item.type;
    else if (field === "agent") value = item.agent;
    else if (field === "key") value = item.key;
    else if (field === "server") value = serverId;
    else value = item.tags[field.slice(4)];
    if (!value) return "_";
    let out = "";
    for (const ch of value) out += safe.test(ch) ? ch : "_";
    return out;
  });
}
