/**
 * The outbox: replies made while the agent is disconnected wait here, bounded, and are sent
 * after the next welcome.
 *
 * @module
 */
import type { Logger } from "../shared/log.ts";
import type { Reply } from "../shared/protocol/mod.ts";

/** Default capacity in frames. */
export const DEFAULT_OUTBOX_FRAMES = 10_000;

/** A bounded FIFO of frames. Synchronous; used from one event loop. */
export interface Outbox {
  /** Adds a frame; when full, the oldest frame is dropped (a warning is logged once per fill). */
  push(frame: Reply): void;
  /**
   * Sends frames oldest first through `send` until it returns false (that frame is kept) or
   * the outbox is empty. Returns how many were sent. Logs how many were dropped since the
   * last drain, if any.
   */
  drain(send: (frame: Reply) => boolean): number;
  /** Frames waiting. */
  readonly size: number;
  /** Frames dropped since the last drain. */
  readonly dropped: number;
}

/** Creates an outbox holding at most `capacity` frames. */
export function createOutbox(logger: Logger, capacity: number = DEFAULT_OUTBOX_FRAMES): Outbox {
  let frames: Reply[] = [];
  let head = 0;
  let dropped = 0;
  const size = () => frames.length - head;
  return {
    push(frame) {
      if (capacity <= 0) return void dropped++;
      if (size() >= capacity) {
        if (dropped === 0) {
          logger.warn("outbox full while disconnected: dropping the oldest replies", { capacity });
        }
        head++;
        dropped++;
      }
      frames.push(frame);
      if (head > 1024 && head * 2 > frames.length) {
        frames = frames.slice(head);
        head = 0;
      }
    },
    drain(send) {
      let sent = 0;
      while (head < frames.length) {
        if (!send(frames[head])) break;
        head++;
        sent++;
      }
      frames = frames.slice(head);
      head = 0;
      if (dropped > 0) {
        logger.warn("replies were dropped while disconnected", { dropped });
        dropped = 0;
      }
      return sent;
    },
    get size() {
      return size();
    },
    get dropped() {
      return dropped;
    },
  };
}
