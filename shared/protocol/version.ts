/** The agent protocol version carried in every envelope's `v`. */
export const PROTOCOL_VERSION = 1;

/** The product version reported by `jw --version` and in `hello`. */
export const JW_VERSION = "0.1.0";
