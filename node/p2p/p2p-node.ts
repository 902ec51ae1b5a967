// The node's libp2p host: started with this program's transports and tunings, it dials
// its bootstrap addresses and every discovered peer (libp2p 3 does not dial discovered
// peers itself), keeps connections to the peers the daemon names, and gives the wire
// protocols a small surface: handle a protocol, open a stream to a peer by id.
import '../polyfill.ts'
import type {
  Connection,
  Libp2p,
  PeerId,
  PeerInfo,
  PrivateKey,
  Stream,
  StreamHandlerOptions,
} from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { ClusterError } from '../../consensus/cluster-error.ts'
import { DIAL_TIMEOUT_MS, libp2pOptions } from './libp2p-options.ts'
import { Redialer, type RedialTarget } from './redialer.ts'

/** Addresses kept per peer when the daemon names them; more is a sign of bad input. */
export const ADDRESSES_PER_PEER_MAX = 32
export const BOOTSTRAP_ADDRESSES_MAX = 64
/** Discovered peers dialled at once; a LAN full of strangers must not flood the dialler. */
export const DISCOVERY_DIALS_IN_FLIGHT_MAX = 8
/** The multiaddr protocol code of `/p2p/<peer id>`. */
const P2P_PROTOCOL_CODE = 421

export interface P2pNodeOptions {
  readonly privateKey: PrivateKey
  /** Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/4001`. */
  readonly listen: readonly string[]
  /** Multiaddrs dialled at start, and again with backoff while unreachable. */
  readonly bootstrap: readonly string[]
  /** LAN discovery by multicast: only where multicast may not leave the machine's network. */
  readonly mdns: boolean
  readonly onPeerDiscovered?: (peerId: string, addresses: readonly string[]) => void
  readonly log?: (line: string) => void
}

export interface KeptPeer {
  readonly peerId: string
  readonly addresses: readonly string[]
}

/** Called for each inbound stream of a protocol, with the remote peer's id. */
export type ProtocolHandler = (stream: Stream, peer: string, connection: Connection) => void

export async function createP2pNode(options: P2pNodeOptions): Promise<P2pNode> {
  if (options.bootstrap.length > BOOTSTRAP_ADDRESSES_MAX)
    throw ClusterError.badArgument(`at most ${BOOTSTRAP_ADDRESSES_MAX} bootstrap addresses`)
  const bootstrap = options.bootstrap.map((address) => parseMultiaddr(address))
  for (const address of options.listen) parseMultiaddr(address)
  let libp2p: Libp2p
  try {
    libp2p = await createLibp2p(libp2pOptions(options))
  } catch (error) {
    throw ClusterError.io(`cannot start the libp2p node: ${(error as Error).message}`, error)
  }
  return new P2pNode(libp2p, options, bootstrap)
}

export class P2pNode {
  readonly libp2p: Libp2p
  readonly peerId: string
  readonly #log: (line: string) => void
  readonly #redialer: Redialer
  readonly #onPeerDiscovered: ((peerId: string, addresses: readonly string[]) => void) | undefined
  #discoveryDials = 0
  #stopped = false

  /** Use createP2pNode(), which validates the options and starts libp2p. */
  constructor(libp2p: Libp2p, options: P2pNodeOptions, bootstrap: readonly Multiaddr[]) {
    this.libp2p = libp2p
    this.peerId = libp2p.peerId.toString()
    this.#log = options.log ?? (() => undefined)
    this.#onPeerDiscovered = options.onPeerDiscovered
    this.#redialer = new Redialer({
      isConnected: (peerId) => this.isConnected(peerId),
      dial: (target, signal) => this.dial(target.key, signal),
      log: this.#log,
    })
    libp2p.addEventListener('peer:disconnect', (event) =>
      this.#redialer.peerDisconnected(event.detail.toString()),
    )
    libp2p.addEventListener('peer:discovery', (event) => this.#discovered(event.detail))
    this.#redialer.start()
    // A shared bootstrap list may name this node too: dialling itself would only fail.
    const others = bootstrap
      .map((address) => ({ key: address.toString(), peerId: peerIdIn(address) }))
      .filter((target) => target.peerId !== this.peerId)
    this.#redialer.setGroup('bootstrap', others)
  }

  /** Where peers can reach this node, each ending in `/p2p/<peer id>`. */
  listenAddresses(): string[] {
    return this.libp2p.getMultiaddrs().map((address) => address.toString())
  }

  /** Dials a multiaddr (`/ip4/…`) or a peer id whose addresses are known; resolves with the peer id. */
  async dial(target: string, signal?: AbortSignal): Promise<string> {
    const address = target.startsWith('/') ? parseMultiaddr(target) : parsePeerId(target)
    const timeout = AbortSignal.timeout(DIAL_TIMEOUT_MS)
    try {
      const connection = await this.libp2p.dial(address, {
        signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
      })
      return connection.remotePeer.toString()
    } catch (error) {
      throw ClusterError.io(`cannot reach ${target}: ${(error as Error).message}`, error)
    }
  }

  connectedPeers(): string[] {
    return this.libp2p.getPeers().map((peer) => peer.toString())
  }

  isConnected(peerId: string): boolean {
    return this.connectedPeers().includes(peerId)
  }

  /** Addresses this node knows for a peer (from the daemon, identify or discovery). */
  async addressesOf(peerId: string): Promise<string[]> {
    try {
      const peer = await this.libp2p.peerStore.get(parsePeerId(peerId))
      return peer.addresses.map((address) => address.multiaddr.toString())
    } catch (error) {
      if ((error as Error).name === 'NotFoundError') return []
      throw error
    }
  }

  /**
   * Keeps connections to exactly these peers (besides the bootstrap addresses): their
   * addresses are remembered, and each is redialled with backoff whenever it is not connected.
   */
  async keepConnected(peers: readonly KeptPeer[]): Promise<void> {
    const targets: RedialTarget[] = []
    for (const peer of peers) {
      if (peer.peerId === this.peerId) continue
      let peerId: PeerId
      try {
        peerId = parsePeerId(peer.peerId)
      } catch (error) {
        this.#log(`not keeping a connection to ${peer.peerId}: ${(error as Error).message}`)
        continue
      }
      const addresses = this.#usableAddresses(peer)
      if (addresses.length > 0) await this.libp2p.peerStore.merge(peerId, { multiaddrs: addresses })
      targets.push({ key: peer.peerId, peerId: peer.peerId })
    }
    this.#redialer.setGroup('peer', targets)
  }

  /** Registers the handler for inbound streams of a protocol. */
  async handle(
    protocol: string,
    handler: ProtocolHandler,
    options: StreamHandlerOptions,
  ): Promise<void> {
    await this.libp2p.handle(
      protocol,
      (stream, connection) => handler(stream, connection.remotePeer.toString(), connection),
      options,
    )
  }

  async unhandle(protocol: string): Promise<void> {
    if (this.#stopped) return
    await this.libp2p.unhandle(protocol)
  }

  /** Opens a stream to a peer (dialling it if needed): IO_ERROR when it cannot. */
  async openStream(peer: string, protocol: string, signal: AbortSignal): Promise<Stream> {
    try {
      return await this.libp2p.dialProtocol(parsePeerId(peer), protocol, { signal })
    } catch (error) {
      if (error instanceof ClusterError) throw error
      if (signal.aborted) throw ClusterError.timeout(`opening ${protocol} to ${peer} timed out`)
      throw ClusterError.io(
        `cannot open ${protocol} to ${peer}: ${(error as Error).message}`,
        error,
      )
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    this.#redialer.stop()
    await this.libp2p.stop()
  }

  #usableAddresses(peer: KeptPeer): Multiaddr[] {
    const addresses: Multiaddr[] = []
    for (const text of peer.addresses.slice(0, ADDRESSES_PER_PEER_MAX)) {
      try {
        addresses.push(parseMultiaddr(text).decapsulateCode(P2P_PROTOCOL_CODE))
      } catch {
        this.#log(`ignoring the bad address ${JSON.stringify(text)} of ${peer.peerId}`)
      }
    }
    return addresses
  }

  #discovered(peer: PeerInfo): void {
    const peerId = peer.id.toString()
    if (peerId === this.peerId) return
    const addresses = peer.multiaddrs.map((address) => address.toString())
    this.#onPeerDiscovered?.(peerId, addresses)
    if (this.isConnected(peerId) || this.#discoveryDials >= DISCOVERY_DIALS_IN_FLIGHT_MAX) return
    this.#discoveryDials++
    this.libp2p
      .dial(peer.id, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
      .catch((error: unknown) =>
        this.#log(`cannot dial discovered peer ${peerId}: ${(error as Error).message}`),
      )
      .finally(() => this.#discoveryDials--)
  }
}

function parseMultiaddr(text: string): Multiaddr {
  try {
    return multiaddr(text)
  } catch (error) {
    throw ClusterError.badArgument(
      `not a multiaddr: ${JSON.stringify(text)} (${(error as Error).message})`,
    )
  }
}

function parsePeerId(text: string): PeerId {
  try {
    return peerIdFromString(text)
  } catch {
    throw ClusterError.badArgument(`not a peer id: ${JSON.stringify(text)}`)
  }
}

function peerIdIn(address: Multiaddr): string | null {
  return (
    address.getComponents().find((component) => component.code === P2P_PROTOCOL_CODE)?.value ?? null
  )
}
