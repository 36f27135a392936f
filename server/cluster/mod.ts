/**
 * Server cluster membership: SWIM gossip with Lifeguard over a {@link Transport}.
 *
 * Public surface: {@link startCluster} (what the server uses: membership plus replicated
 * state over a sealed transport), {@link createMemberlist} and its types, the Transport seam
 * and its implementations (UDP/TCP, sealing, the in-memory network for tests), the message
 * codec, the Lifeguard building blocks, seeds and the replicated state.
 *
 * @module
 */
export {
  DEFAULT_PACKET_LIMIT,
  DEFAULT_STREAM_MESSAGE_LIMIT,
  type Packet,
  type Stream,
  type Transport,
} from "./transport.ts";
export {
  createMemberlist,
  LAN_CONFIG,
  type Member,
  type Memberlist,
  type MemberlistConfig,
  type MemberlistDelegate,
  type MemberlistOptions,
  type MemberlistStats,
  type MemberState,
  pushPullScale,
  suspicionMinTimeout,
} from "./memberlist.ts";
export {
  type AckMessage,
  type AliveMessage,
  type DeadMessage,
  decodeMessage,
  decodePacket,
  decodePushPull,
  encodeCompound,
  encodeMessage,
  encodePushPull,
  type IndirectPingMessage,
  META_LIMIT,
  type NackMessage,
  type PingMessage,
  type PushMember,
  type PushPullMessage,
  type SingleMessage,
  type SuspectMessage,
  type UserMessage,
} from "./messages.ts";
export { Awareness, DEFAULT_AWARENESS_MAX } from "./awareness.ts";
export { Suspicion, type SuspicionOptions, suspicionTimeout } from "./suspicion.ts";
export {
  type Broadcast,
  retransmitLimit,
  TransmitLimitedQueue,
  type TransmitLimitedQueueOptions,
} from "./broadcast.ts";
export {
  type LinkSettings,
  MemNetwork,
  type MemNetworkOptions,
  type MemTransportOptions,
  type NodeCounters,
  PausableClock,
} from "./mem_network.ts";
export {
  createNetTransport,
  type NetTransport,
  type NetTransportOptions,
  type NetTransportStats,
} from "./net_transport.ts";
export { formatHostPort, parseHostPort, resolveSeeds } from "./seeds.ts";
export { createKeyring, generateClusterKey, type Keyring } from "./keyring.ts";
export { type SealedTransport, sealTransport } from "./seal.ts";
export {
  type AgentRecord,
  type CommandRecord,
  compareHlc,
  type Hlc,
  ReplicatedState,
  type ScriptRecord,
  type ServerRecord,
  type StateRecord,
} from "./state.ts";
export { type Cluster, type ClusterOptions, startCluster } from "./cluster.ts";
export { mergeAgents } from "./view.ts";
