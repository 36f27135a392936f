/**
 * `tags.set`: sets or deletes the agent's tags. The runner sends one `setTag` frame (so the
 * server updates the connection's tags) and the agent keeps the new tags for its next
 * `hello`.
 *
 * @module
 */
import { z } from "zod";
import { TagName } from "../../shared/protocol/mod.ts";
import { type Command, defineCommand } from "./commands.ts";

/** Arguments of `tags.set`: tag → value, or `null` to delete. Unknown keys are rejected. */
export const TagsArgs = z.object({
  tags: z.record(TagName, z.string().max(256).nullable()),
}).strict();
export type TagsArgs = z.output<typeof TagsArgs>;

/** Creates `tags.set`. It never fails once its args pass; the done output has no exitCode. */
export function createTagsCommand(): Command<TagsArgs> {
  return defineCommand({
    key: "tags.set",
    description: "sets or deletes the agent's tags (kept for its next hello)",
    args: TagsArgs,
    run(ctx, args) {
      ctx.setTags(args.tags);
      return Promise.resolve({ error: null });
    },
  });
}
