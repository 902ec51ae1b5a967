// Real libp2p nodes for the wire tests: on 127.0.0.1, mDNS off, each stopped by the test.
import '../../../node/polyfill.ts'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { createP2pNode, type P2pNode } from '../../../node/p2p/p2p-node.ts'

export const LOOPBACK_ANY_PORT = '/ip4/127.0.0.1/tcp/0'

export interface TestNodeOptions {
  readonly privateKey?: PrivateKey
  readonly listen?: string
  readonly bootstrap?: readonly string[]
  readonly log?: (line: string) => void
}

export async function startNode(options: TestNodeOptions = {}): Promise<P2pNode> {
  return createP2pNode({
    privateKey: options.privateKey ?? (await generateKeyPair('Ed25519')),
    listen: [options.listen ?? LOOPBACK_ANY_PORT],
    bootstrap: options.bootstrap ?? [],
    mdns: false,
    log: options.log ?? (() => undefined),
  })
}

/** Starts `count` nodes, every one connected to every other, so peer ids resolve to addresses. */
export async function startConnectedNodes(count: number): Promise<P2pNode[]> {
  const nodes = await Promise.all(Array.from({ length: count }, () => startNode()))
  for (const [index, node] of nodes.entries())
    for (const other of nodes.slice(index + 1)) await node.dial(other.listenAddresses()[0]!)
  return nodes
}

export async function stopNodes(nodes: readonly P2pNode[]): Promise<void> {
  await Promise.all(nodes.map((node) => node.stop()))
}

/** Polls `condition` until it holds, failing after `timeoutMs`. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
