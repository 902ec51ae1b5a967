// Every wire protocol of the node, versioned in its id, with its bounds in one place.
// A peer that speaks another major version is simply not matched by libp2p's protocol
// negotiation; a new incompatible format gets a new id, served beside the old one.
import { MESSAGE_BYTES_MAX } from '../../consensus/limits.ts'
import { CHUNK_SIZE_MAX_BYTES } from '../../storage/chunk-types.ts'

export interface ProtocolSpec {
  readonly id: string
  /** For messages and logs. */
  readonly name: string
  /** The largest frame a peer may send on it. */
  readonly frameBytesMax: number
  /** Bytes a peer may have sent beyond the frame being read (a bound on our read buffer). */
  readonly readAheadBytesMax: number
  /** Streams of this protocol at once, per connection. */
  readonly maxInboundStreams: number
  readonly maxOutboundStreams: number
}

/** Raft messages, one long-lived stream per direction and peer. */
export const RAFT_PROTOCOL: ProtocolSpec = {
  id: '/clusterreplica/raft/1.0.0',
  name: 'raft',
  frameBytesMax: MESSAGE_BYTES_MAX,
  readAheadBytesMax: 16 * 1024 * 1024,
  maxInboundStreams: 4,
  maxOutboundStreams: 4,
}

/** One dataset's Hypercore replication per stream; the frames are only its opening handshake. */
export const LOG_PROTOCOL: ProtocolSpec = {
  id: '/clusterreplica/log/1.0.0',
  name: 'log',
  frameBytesMax: 4096,
  // Replication bytes may follow the handshake frame before the reader hands over.
  readAheadBytesMax: 1024 * 1024,
  maxInboundStreams: 1024,
  maxOutboundStreams: 1024,
}

/** The fetched chunk rides in one frame with a small header. */
export const CHUNK_RESPONSE_HEADER_BYTES_MAX = 1024

/** Chunks by hash: requests of hashes, answered by one frame per chunk. */
export const CHUNKS_PROTOCOL: ProtocolSpec = {
  id: '/clusterreplica/chunks/1.0.0',
  name: 'chunks',
  frameBytesMax: CHUNK_SIZE_MAX_BYTES + CHUNK_RESPONSE_HEADER_BYTES_MAX,
  // The fetcher's window (chunk-protocol.ts) bounds what the server sends ahead.
  readAheadBytesMax: 16 * 1024 * 1024,
  maxInboundStreams: 16,
  maxOutboundStreams: 16,
}

/** Request/response with JSON bodies: admin forwarding, joining, status. One call per stream. */
export const RPC_PROTOCOL: ProtocolSpec = {
  id: '/clusterreplica/rpc/1.0.0',
  name: 'rpc',
  frameBytesMax: 1024 * 1024,
  readAheadBytesMax: 0,
  maxInboundStreams: 64,
  maxOutboundStreams: 64,
}

export function handlerOptions(spec: ProtocolSpec): {
  maxInboundStreams: number
  maxOutboundStreams: number
} {
  return { maxInboundStreams: spec.maxInboundStreams, maxOutboundStreams: spec.maxOutboundStreams }
}
