// Raft messages over libp2p: one long-lived outbound stream per peer, fed from a bounded
// queue by one sender loop, reopened with backoff when it fails. send() never blocks and
// never throws: Raft tolerates loss, so a full queue drops its OLDEST message — newer
// messages carry the newer term, commit index and log position, an old vote request or
// heartbeat is worth nothing once a newer one exists, and the leader re-sends whatever
// appends were lost.
//
// Inbound streams are accepted only from authorised peers; every frame must decode, come
// from the stream's own peer and be addressed to this node, or the stream is reset and
// the reason counted and logged in one line.
import { ClusterError, isClusterError } from '../../consensus/cluster-error.ts'
import { decodeMessage, encodeMessage, MESSAGE_BYTES_MAX } from '../../consensus/codec.ts'
import type { Message } from '../../consensus/types.ts'
import type { Stream } from '@libp2p/interface'
import type { P2pNode } from '../p2p/p2p-node.ts'
import type { RaftTransport } from '../raft-driver.ts'
import { sleep } from './sleep.ts'
import { FrameReader, writeFrame } from './framing.ts'
import { handlerOptions, RAFT_PROTOCOL } from './protocol-ids.ts'

/** Messages waiting per peer; beyond this the oldest is dropped. */
export const RAFT_QUEUE_MESSAGES_MAX = 1024
/** Encoded bytes waiting per peer: room for one largest message and the traffic around it. */
export const RAFT_QUEUE_BYTES_MAX = MESSAGE_BYTES_MAX + 16 * 1024 * 1024
/** Peers with a sender at once (voters and learners are far fewer). */
export const RAFT_PEERS_MAX = 1024
export const RAFT_OPEN_TIMEOUT_MS = 5_000
/** A frame the peer does not take within this long means a dead stream. */
export const RAFT_WRITE_TIMEOUT_MS = 10_000
export const RAFT_RECONNECT_BACKOFF_MS_MIN = 100
export const RAFT_RECONNECT_BACKOFF_MS_MAX = 5_000

export interface RaftTransportOptions {
  readonly node: P2pNode
  /** Whether a peer may speak Raft to this node (admitted into the topology). */
  readonly authorize: (peer: string) => boolean
  readonly onMessage: (message: Message) => void
  readonly log?: (line: string) => void
}

export interface RaftTransportCounters {
  messagesSent: number
  messagesReceived: number
  /** Dropped because a peer's queue was full. */
  messagesDroppedQueueFull: number
  /** Lost with a stream that failed, or never encodable. */
  messagesDroppedSendFailed: number
  /** Inbound streams refused because the peer is not authorised. */
  streamsRefused: number
  /** Inbound frames dropped (and their streams reset): bad bytes, forged sender, wrong address. */
  framesDropped: number
}

interface PeerSender {
  readonly peer: string
  readonly queue: Uint8Array[]
  queuedBytes: number
  stream: Stream | null
  running: boolean
  backoffMs: number
}

export class Libp2pRaftTransport implements RaftTransport {
  readonly counters: RaftTransportCounters = {
    messagesSent: 0,
    messagesReceived: 0,
    messagesDroppedQueueFull: 0,
    messagesDroppedSendFailed: 0,
    streamsRefused: 0,
    framesDropped: 0,
  }
  readonly #options: RaftTransportOptions
  readonly #log: (line: string) => void
  readonly #senders = new Map<string, PeerSender>()
  readonly #inbound = new Set<Stream>()
  readonly #stop = new AbortController()

  constructor(options: RaftTransportOptions) {
    this.#options = options
    this.#log = options.log ?? (() => undefined)
  }

  async start(): Promise<void> {
    await this.#options.node.handle(
      RAFT_PROTOCOL.id,
      (stream, peer) => this.#accept(stream, peer),
      handlerOptions(RAFT_PROTOCOL),
    )
  }

  async stop(): Promise<void> {
    this.#stop.abort()
    await this.#options.node.unhandle(RAFT_PROTOCOL.id)
    for (const sender of this.#senders.values()) {
      sender.queue.length = 0
      sender.stream?.abort(ClusterError.closed('raft transport stopped'))
    }
    this.#senders.clear()
    for (const stream of this.#inbound) stream.abort(ClusterError.closed('raft transport stopped'))
    this.#inbound.clear()
  }

  send(message: Message): void {
    if (this.#stop.signal.aborted) return
    let bytes: Uint8Array
    try {
      bytes = encodeMessage(message)
    } catch (error) {
      this.counters.messagesDroppedSendFailed++
      this.#log(
        `cannot encode a raft ${message.type} to ${message.to}: ${(error as Error).message}`,
      )
      return
    }
    const sender = this.#senderFor(message.to)
    if (sender === null) {
      this.counters.messagesDroppedQueueFull++
      return
    }
    sender.queue.push(bytes)
    sender.queuedBytes += bytes.byteLength
    while (
      sender.queue.length > RAFT_QUEUE_MESSAGES_MAX ||
      sender.queuedBytes > RAFT_QUEUE_BYTES_MAX
    ) {
      sender.queuedBytes -= sender.queue.shift()!.byteLength
      this.counters.messagesDroppedQueueFull++
    }
    if (!sender.running) void this.#run(sender)
  }

  #senderFor(peer: string): PeerSender | null {
    const existing = this.#senders.get(peer)
    if (existing !== undefined) return existing
    if (this.#senders.size >= RAFT_PEERS_MAX) return null
    const sender: PeerSender = {
      peer,
      queue: [],
      queuedBytes: 0,
      stream: null,
      running: false,
      backoffMs: RAFT_RECONNECT_BACKOFF_MS_MIN,
    }
    this.#senders.set(peer, sender)
    return sender
  }

  /** Drains a peer's queue into its stream, reopening the stream with backoff as needed. */
  async #run(sender: PeerSender): Promise<void> {
    sender.running = true
    try {
      while (sender.queue.length > 0 && !this.#stop.signal.aborted) {
        const stream = sender.stream ?? (await this.#open(sender))
        if (stream === null) continue
        const bytes = sender.queue.shift()!
        sender.queuedBytes -= bytes.byteLength
        try {
          await writeFrame(stream, RAFT_PROTOCOL, bytes, { timeoutMs: RAFT_WRITE_TIMEOUT_MS })
          this.counters.messagesSent++
        } catch (error) {
          this.counters.messagesDroppedSendFailed++
          this.#log(`raft stream to ${sender.peer} failed: ${(error as Error).message}`)
          stream.abort(ClusterError.closed('raft stream failed'))
          if (sender.stream === stream) sender.stream = null
        }
      }
    } finally {
      sender.running = false
    }
  }

  /** A new stream to the peer, or null after waiting out the backoff when it cannot be opened. */
  async #open(sender: PeerSender): Promise<Stream | null> {
    const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(RAFT_OPEN_TIMEOUT_MS)])
    try {
      const stream = await this.#options.node.openStream(sender.peer, RAFT_PROTOCOL.id, signal)
      stream.addEventListener('close', () => {
        if (sender.stream === stream) sender.stream = null
      })
      if (this.#stop.signal.aborted) {
        stream.abort(ClusterError.closed('raft transport stopped'))
        return null
      }
      sender.stream = stream
      sender.backoffMs = RAFT_RECONNECT_BACKOFF_MS_MIN
      return stream
    } catch (error) {
      if (this.#stop.signal.aborted) return null
      this.#log(
        `cannot open raft stream to ${sender.peer} (retry in ${sender.backoffMs} ms): ${(error as Error).message}`,
      )
      await sleep(sender.backoffMs, this.#stop.signal)
      sender.backoffMs = Math.min(sender.backoffMs * 2, RAFT_RECONNECT_BACKOFF_MS_MAX)
      return null
    }
  }

  #accept(stream: Stream, peer: string): void {
    if (!this.#options.authorize(peer)) {
      this.counters.streamsRefused++
      this.#log(`refused a raft stream from ${peer}: not admitted`)
      stream.abort(ClusterError.refused(`${peer} may not speak raft here`))
      return
    }
    this.#inbound.add(stream)
    this.#receive(stream, peer)
      .catch((error: unknown) => {
        // Only the stream's own failures are expected here; anything else came from
        // onMessage, a programmer error, and must crash loudly.
        if (!isClusterError(error)) throw error
        if (error.code === 'BAD_MESSAGE') this.#dropped(stream, peer, error.message)
      })
      .finally(() => this.#inbound.delete(stream))
  }

  async #receive(stream: Stream, peer: string): Promise<void> {
    const reader = new FrameReader(stream, RAFT_PROTOCOL)
    for (;;) {
      const frame = await reader.read()
      if (frame === null) return void (await stream.close().catch(() => undefined))
      const problem = this.#problemWith(frame, peer)
      if (problem !== null) return this.#dropped(stream, peer, problem)
    }
  }

  /** Delivers a frame, or says why it must be dropped. */
  #problemWith(frame: Uint8Array, peer: string): string | null {
    if (!this.#options.authorize(peer)) return 'the peer is no longer admitted'
    const decoded = decodeMessage(frame)
    if (!decoded.ok) return `undecodable message (${decoded.error})`
    const message = decoded.value
    if (message.from !== peer) return `message claims to be from ${message.from}`
    if (message.to !== this.#options.node.peerId) return `message is addressed to ${message.to}`
    this.counters.messagesReceived++
    this.#options.onMessage(message)
    return null
  }

  #dropped(stream: Stream, peer: string, reason: string): void {
    this.counters.framesDropped++
    this.#log(`dropped a raft frame from ${peer} and reset its stream: ${reason}`)
    stream.abort(ClusterError.badMessage(reason))
  }
}
