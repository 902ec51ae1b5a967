import '../../node/polyfill.ts'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createServer } from 'node:net'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { isClusterError } from '../../consensus/cluster-error.ts'
import { createP2pNode, type P2pNode } from '../../node/p2p/p2p-node.ts'
import { startNode, stopNodes, waitFor } from './helpers/nodes.ts'

/** A TCP port that was free a moment ago, for a node that must come back on the same address. */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

test('a node dials its bootstrap address and learns the peer', async () => {
  const a = await startNode()
  const b = await startNode({ bootstrap: [a.listenAddresses()[0]!] })
  try {
    assert.match(a.peerId, /^12D3KooW/)
    assert.match(
      a.listenAddresses()[0]!,
      new RegExp(`^/ip4/127\\.0\\.0\\.1/tcp/\\d+/p2p/${a.peerId}$`),
    )
    await waitFor(
      () => b.isConnected(a.peerId) && a.isConnected(b.peerId),
      'the bootstrap connection',
    )
    assert.equal(b.connectedPeers(), [a.peerId])
    await waitFor(
      async () => (await a.addressesOf(b.peerId)).length > 0,
      'identify to report addresses',
    )
    assert.ok(
      (await a.addressesOf(b.peerId)).some((address) => address.startsWith('/ip4/127.0.0.1/tcp/')),
    )
    assert.equal(
      await a.addressesOf(peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()),
      [],
    )
  } finally {
    await stopNodes([a, b])
  }
})

test('a bootstrap address that is down at start is dialled again until it answers', async () => {
  const port = await freePort()
  const keyA = await generateKeyPair('Ed25519')
  const listen = `/ip4/127.0.0.1/tcp/${port}`
  const probe = await startNode({ privateKey: keyA, listen })
  const address = probe.listenAddresses()[0]!
  await probe.stop()
  const lines: string[] = []
  const b = await startNode({ bootstrap: [address], log: (line) => lines.push(line) })
  let a: P2pNode | null = null
  try {
    await waitFor(() => lines.some((line) => line.startsWith('cannot reach')), 'a failed dial')
    a = await startNode({ privateKey: keyA, listen })
    await waitFor(() => b.isConnected(a!.peerId), 'the late bootstrap peer', 8000)
  } finally {
    await stopNodes(a === null ? [b] : [a, b])
  }
})

test('keepConnected redials a peer after it restarts', async () => {
  const port = await freePort()
  const keyB = await generateKeyPair('Ed25519')
  const listen = `/ip4/127.0.0.1/tcp/${port}`
  const a = await startNode()
  let b = await startNode({ privateKey: keyB, listen })
  try {
    await a.keepConnected([{ peerId: b.peerId, addresses: b.listenAddresses() }])
    await waitFor(() => a.isConnected(b.peerId), 'the first connection')
    await b.stop()
    await waitFor(() => !a.isConnected(b.peerId), 'the disconnect')
    b = await startNode({ privateKey: keyB, listen })
    // b knows nothing of a: only a's redial can bring them together again.
    await waitFor(() => a.isConnected(b.peerId), 'the redial after the restart', 8000)
    await a.keepConnected([])
    assert.ok(a.isConnected(b.peerId), 'dropping a peer from the kept set does not hang up on it')
  } finally {
    await stopNodes([a, b])
  }
})

test('bad addresses and peer ids are BAD_ARGUMENT', async () => {
  const options = {
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    mdns: false,
  }
  const badBootstrap = await createP2pNode({ ...options, bootstrap: ['not-a-multiaddr'] }).then(
    () => null,
    (error: unknown) => error,
  )
  assert.ok(isClusterError(badBootstrap, 'BAD_ARGUMENT'), String(badBootstrap))
  const node = await startNode()
  try {
    const badDial = await node.dial('12D3KooWnotapeerid').then(
      () => null,
      (error: unknown) => error,
    )
    assert.ok(isClusterError(badDial, 'BAD_ARGUMENT'), String(badDial))
    await node.keepConnected([{ peerId: 'junk', addresses: ['also junk'] }])
  } finally {
    await node.stop()
  }
})

test.run()
