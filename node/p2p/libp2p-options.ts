// How this program builds its libp2p node: TCP, Noise, Yamux, identify, ping, and mDNS
// only when asked. The Yamux figures are the ones DEPENDENCIES.md measured: a 16 MiB
// stream window and 1 MiB messages took a raw stream from ~159 to ~255 MiB/s on loopback.
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { PrivateKey } from '@libp2p/interface'
import { mdns } from '@libp2p/mdns'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import type { Libp2pOptions } from 'libp2p'

/** Bytes a peer may send on one stream before we grant more (both initial and maximum). */
export const STREAM_WINDOW_BYTES = 16 * 1024 * 1024
/** Largest Yamux data frame this node sends. */
export const MUXER_MESSAGE_BYTES_MAX = 1024 * 1024
/**
 * What a paused stream may hold before libp2p resets it. A paused Yamux stream stops
 * granting window, so the sender can still fill the window it was given: twice the window
 * keeps pause() safe (the 4 MiB default is what made pause() reset streams).
 */
export const STREAM_READ_BUFFER_BYTES_MAX = 2 * STREAM_WINDOW_BYTES
/** A stream with no traffic for this long is closed by libp2p; protocols reopen as needed. */
export const STREAM_INACTIVITY_TIMEOUT_MS = 10 * 60_000
export const CONNECTIONS_MAX = 512
export const DIAL_TIMEOUT_MS = 10_000

export interface Libp2pSettings {
  readonly privateKey: PrivateKey
  readonly listen: readonly string[]
  readonly mdns: boolean
}

export function libp2pOptions(settings: Libp2pSettings): Libp2pOptions<{
  identify: ReturnType<ReturnType<typeof identify>>
  ping: ReturnType<ReturnType<typeof ping>>
}> {
  return {
    privateKey: settings.privateKey,
    addresses: { listen: [...settings.listen] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [
      yamux({
        maxMessageSize: MUXER_MESSAGE_BYTES_MAX,
        streamOptions: {
          initialStreamWindowSize: STREAM_WINDOW_BYTES,
          maxStreamWindowSize: STREAM_WINDOW_BYTES,
          maxReadBufferLength: STREAM_READ_BUFFER_BYTES_MAX,
          inactivityTimeout: STREAM_INACTIVITY_TIMEOUT_MS,
        },
      }),
    ],
    peerDiscovery: settings.mdns ? [mdns()] : [],
    connectionManager: { maxConnections: CONNECTIONS_MAX, dialTimeout: DIAL_TIMEOUT_MS },
    services: { identify: identify(), ping: ping() },
  }
}
