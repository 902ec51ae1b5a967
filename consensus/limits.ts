// Every bound of the Raft core and its codec, in one place (TIGER_STYLE: a limit on
// everything). Per-node tunables live in RaftOptions; these are the hard ceilings.

/** Largest encoded message; a decoder refuses anything longer before reading it. */
export const MESSAGE_BYTES_MAX = 64 * 1024 * 1024

/** Entries one append message may carry (RaftOptions.maxEntriesPerAppend may be lower). */
export const ENTRIES_PER_MESSAGE_MAX = 4096

/** A node id is 1 to this many bytes of UTF-8. */
export const NODE_ID_BYTES_MAX = 256

/** Voters and learners together. */
export const MEMBERSHIP_NODES_MAX = 256

/** Snapshot data must fit in one message, with room left for its metadata. */
export const SNAPSHOT_DATA_BYTES_MAX = MESSAGE_BYTES_MAX - 1024 * 1024

/** Messages waiting for the next Ready; beyond this they are dropped (Raft tolerates loss). */
export const OUTBOX_MESSAGES_MAX = 8192

/** Committed entries handed out for applying in one Ready. */
export const COMMITTED_ENTRIES_PER_READY_MAX = 1024
/** ... and their data bytes (at least one entry is always handed out). */
export const COMMITTED_BYTES_PER_READY_MAX = 16 * 1024 * 1024

/** Ceiling for RaftOptions.maxInflightAppends. */
export const INFLIGHT_APPENDS_MAX = 1024
