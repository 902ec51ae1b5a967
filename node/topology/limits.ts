// Every bound of the topology in one place (TIGER_STYLE: a limit on everything). The
// per-field bounds are chosen so that the largest possible topology still fits in one
// Raft snapshot, which the last lines check when this module loads.
import { MEMBERSHIP_NODES_MAX, SNAPSHOT_DATA_BYTES_MAX } from '../../consensus/limits.ts'
import { assert } from '../../consensus/assert.ts'

/** Node names, site names, dataset ids and the cluster id: 1 to this many characters. */
export const NAME_LENGTH_MAX = 64
/** A libp2p peer id as text (base58btc or base32): 1 to this many characters. */
export const PEER_ID_LENGTH_MAX = 128
/** Absolute paths (dataset sources and mirrors), in bytes of UTF-8. */
export const PATH_BYTES_MAX = 1024
/** Listen addresses (multiaddrs as text) one node announces, and the length of each. */
export const ADDRESSES_PER_NODE_MAX = 16
export const ADDRESS_LENGTH_MAX = 256
/** Admitted nodes; every one of them is a Raft member, so this cannot pass the membership's bound. */
export const NODES_MAX = 256
export const DATASETS_MAX = 512
export const REPLICAS_PER_DATASET_MAX = 16
/** A retention policy is opaque JSON here: this many bytes in canonical form, this deep at most. */
export const RETENTION_POLICY_BYTES_MAX = 8 * 1024
export const RETENTION_POLICY_DEPTH_MAX = 16
/** A Hypercore key: 32 bytes as lowercase hex. */
export const DATASET_KEY_HEX_LENGTH = 64
/** One encoded command; a decoder refuses anything longer before parsing it. */
export const COMMAND_BYTES_MAX = 64 * 1024
/** Voters in the Raft membership: the primary, the secondary and others up to this many. */
export const VOTERS_MAX = 5
/** Listeners on one topology machine (the daemon registers a handful). */
export const LISTENERS_MAX = 16

/** Generous upper estimates of one node's and one dataset's canonical JSON (paths may double when escaped). */
const NODE_BYTES_MAX =
  1024 +
  NAME_LENGTH_MAX * 2 +
  PEER_ID_LENGTH_MAX +
  ADDRESSES_PER_NODE_MAX * (ADDRESS_LENGTH_MAX + 4)
const DATASET_BYTES_MAX =
  1024 +
  NAME_LENGTH_MAX +
  PEER_ID_LENGTH_MAX +
  PATH_BYTES_MAX * 2 +
  DATASET_KEY_HEX_LENGTH +
  RETENTION_POLICY_BYTES_MAX +
  REPLICAS_PER_DATASET_MAX * (64 + PEER_ID_LENGTH_MAX + PATH_BYTES_MAX * 2)

/** The largest topology snapshot the bounds above allow. */
export const TOPOLOGY_SNAPSHOT_BYTES_MAX =
  1024 + NODES_MAX * NODE_BYTES_MAX + DATASETS_MAX * DATASET_BYTES_MAX

assert(NODES_MAX <= MEMBERSHIP_NODES_MAX, 'every admitted node fits in the Raft membership')
assert(
  TOPOLOGY_SNAPSHOT_BYTES_MAX <= SNAPSHOT_DATA_BYTES_MAX,
  'the largest topology fits in one Raft snapshot',
)
