// Live replication of one dataset's log core (a Hypercore) per libp2p stream. The
// initiator names the dataset in one frame; the responder checks that the peer is
// entitled to it and answers in one frame (accepted, or an error with a code); then both
// pipe their core's replicate() stream through the stream duplex. Hypercore verifies the
// master's signature on every block, so any holder of a core may serve it: replicas also
// replicate among themselves.
import type { Stream } from '@libp2p/interface'
import type Hypercore from 'hypercore'
import * as z from 'zod'
import { ClusterError } from '../../consensus/cluster-error.ts'
import type { P2pNode } from '../p2p/p2p-node.ts'
import { FrameReader, streamError, writeFrame } from './framing.ts'
import { decodeJson, encodeJson, errorBody, errorBodySchema } from './json-frames.ts'
import { handlerOptions, LOG_PROTOCOL } from './protocol-ids.ts'
import { StreamDuplex } from './stream-duplex.ts'

/** Opening the stream and both handshake frames must be done within this long. */
export const LOG_HANDSHAKE_TIMEOUT_MS = 10_000
/** Replication sessions at once on this node, both directions. */
export const LOG_SESSIONS_MAX = 4096

const DATASET_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/
const openingFrame = z.object({ datasetId: z.string().regex(DATASET_ID_PATTERN) }).strict()
const answerFrame = z.union([
  z.object({ accepted: z.literal(true) }).strict(),
  z.object({ error: errorBodySchema }).strict(),
])

export interface LogReplicationOptions {
  readonly node: P2pNode
  /** Whether `peer` may replicate `datasetId`'s log (its master and its replicas). */
  readonly authorize: (peer: string, datasetId: string) => boolean
  /** This node's copy of the dataset's log core, ready; null when it has none. */
  readonly openCore: (datasetId: string) => Promise<Hypercore | null>
  readonly log?: (line: string) => void
}

export interface ReplicationSession {
  /** Ends the session (both directions); `closed` then resolves with null. */
  close(): void
  /**
   * Resolves when the session ends: null after close() or stop(), else the reason
   * (REFUSED, NOT_FOUND, TIMEOUT, CLOSED when the peer or the connection went away).
   * Never rejects, so the caller may await it to reconnect.
   */
  readonly closed: Promise<ClusterError | null>
}

class Session implements ReplicationSession {
  readonly closed: Promise<ClusterError | null>
  readonly #resolve: (reason: ClusterError | null) => void
  readonly abort = new AbortController()
  #ended = false

  constructor(private readonly onEnd: (session: Session) => void) {
    const { promise, resolve } = Promise.withResolvers<ClusterError | null>()
    this.closed = promise
    this.#resolve = resolve
  }

  get ended(): boolean {
    return this.#ended
  }

  close(): void {
    this.end(null)
  }

  end(reason: ClusterError | null): void {
    if (this.#ended) return
    this.#ended = true
    this.abort.abort()
    this.onEnd(this)
    this.#resolve(reason)
  }
}

export class LogReplication {
  readonly #options: LogReplicationOptions
  readonly #log: (line: string) => void
  readonly #sessions = new Set<Session>()
  #stopped = false

  constructor(options: LogReplicationOptions) {
    this.#options = options
    this.#log = options.log ?? (() => undefined)
  }

  async start(): Promise<void> {
    await this.#options.node.handle(
      LOG_PROTOCOL.id,
      (stream, peer) => void this.#respond(stream, peer),
      handlerOptions(LOG_PROTOCOL),
    )
  }

  async stop(): Promise<void> {
    this.#stopped = true
    await this.#options.node.unhandle(LOG_PROTOCOL.id)
    for (const session of [...this.#sessions]) session.close()
  }

  get sessionCount(): number {
    return this.#sessions.size
  }

  /** Starts following (and serving) `datasetId`'s log with `peer`, live until closed. */
  replicate(peer: string, datasetId: string): ReplicationSession {
    const session = this.#newSession()
    if (session !== null) {
      void this.#initiate(session, peer, datasetId)
      return session
    }
    return finished(
      this.#stopped
        ? ClusterError.closed('log replication is stopped')
        : ClusterError.refused(`at most ${LOG_SESSIONS_MAX} replication sessions`),
    )
  }

  #newSession(): Session | null {
    if (this.#stopped || this.#sessions.size >= LOG_SESSIONS_MAX) return null
    const session = new Session((ended) => this.#sessions.delete(ended))
    this.#sessions.add(session)
    return session
  }

  async #initiate(session: Session, peer: string, datasetId: string): Promise<void> {
    const signal = handshakeSignal(session)
    let stream: Stream | null = null
    try {
      const core = await this.#options.openCore(datasetId)
      if (core === null) throw ClusterError.notFound(`no log core for dataset ${datasetId} here`)
      stream = await this.#options.node.openStream(peer, LOG_PROTOCOL.id, signal)
      const reader = new FrameReader(stream, LOG_PROTOCOL)
      await writeFrame(stream, LOG_PROTOCOL, encodeJson({ datasetId }), { signal })
      const answer = answerFrame.safeParse(decodeJson(await reader.read({ signal })))
      if (!answer.success)
        throw ClusterError.badMessage(`${peer} answered the log handshake with a malformed frame`)
      if ('error' in answer.data)
        throw new ClusterError(answer.data.error.code, answer.data.error.message)
      this.#pipe(session, core, true, stream, reader.detach())
    } catch (error) {
      const reason = streamError(LOG_PROTOCOL, error, signal)
      stream?.abort(reason)
      if (!session.ended)
        this.#log(`log replication of ${datasetId} with ${peer} failed: ${reason.message}`)
      session.end(reason)
    }
  }

  async #respond(stream: Stream, peer: string): Promise<void> {
    const session = this.#newSession()
    if (session === null)
      return void stream.abort(ClusterError.refused('too many replication sessions'))
    const signal = handshakeSignal(session)
    try {
      const reader = new FrameReader(stream, LOG_PROTOCOL)
      const opening = openingFrame.safeParse(decodeJson(await reader.read({ signal })))
      if (!opening.success) throw ClusterError.badMessage('malformed log handshake')
      const { datasetId } = opening.data
      if (!this.#options.authorize(peer, datasetId))
        throw ClusterError.refused(`${peer} is not entitled to dataset ${datasetId}`)
      const core = await this.#options.openCore(datasetId)
      if (core === null) throw ClusterError.notFound(`no log core for dataset ${datasetId} here`)
      await writeFrame(stream, LOG_PROTOCOL, encodeJson({ accepted: true }), { signal })
      this.#pipe(session, core, false, stream, reader.detach())
    } catch (error) {
      const reason = streamError(LOG_PROTOCOL, error, signal)
      if (reason.code === 'CLOSED' || reason.code === 'TIMEOUT') stream.abort(reason)
      else {
        // A refusal is an answer: the initiator learns why, then the stream closes.
        this.#log(`refused log replication to ${peer}: ${reason.message}`)
        await writeFrame(stream, LOG_PROTOCOL, encodeJson({ error: errorBody(reason) }), { signal })
          .then(() => stream.close({ signal }))
          .catch(() => stream.abort(reason))
      }
      session.end(reason)
    }
  }

  /** Joins the core's replication stream and the libp2p stream until either ends. */
  #pipe(
    session: Session,
    core: Hypercore,
    isInitiator: boolean,
    stream: Stream,
    rest: Uint8Array,
  ): void {
    const duplex = new StreamDuplex(stream, rest)
    const replication = core.replicate(isInitiator)
    const end = (reason: ClusterError | null): void => {
      replication.destroy()
      duplex.destroy()
      session.end(reason)
    }
    const failed = (error: Error): void => end(streamError(LOG_PROTOCOL, error))
    replication.on('error', failed)
    duplex.on('error', failed)
    const ended = (): void => end(ClusterError.closed('log replication ended'))
    replication.on('close', ended)
    duplex.on('close', ended)
    if (session.abort.signal.aborted) return end(null)
    session.abort.signal.addEventListener('abort', () => end(null), { once: true })
    replication.pipe(duplex).pipe(replication)
  }
}

function handshakeSignal(session: Session): AbortSignal {
  return AbortSignal.any([session.abort.signal, AbortSignal.timeout(LOG_HANDSHAKE_TIMEOUT_MS)])
}

function finished(reason: ClusterError): ReplicationSession {
  return { close: () => undefined, closed: Promise.resolve(reason) }
}
