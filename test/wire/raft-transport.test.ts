import '../../node/polyfill.ts'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { randomBytes } from 'node:crypto'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { encodeMessage } from '../../consensus/codec.ts'
import { logIndex, nodeId, term, type Message } from '../../consensus/types.ts'
import type { P2pNode } from '../../node/p2p/p2p-node.ts'
import { encodeFrame } from '../../node/wire/framing.ts'
import { RAFT_PROTOCOL } from '../../node/wire/protocol-ids.ts'
import { Libp2pRaftTransport } from '../../node/wire/raft-transport.ts'
import { startConnectedNodes, startNode, stopNodes, waitFor } from './helpers/nodes.ts'

function heartbeat(from: string, to: string, commit: number): Message {
  return {
    type: 'heartbeat',
    from: nodeId(from),
    to: nodeId(to),
    term: term(1),
    commit: logIndex(commit),
    sentTick: 0,
  }
}

interface Endpoint {
  readonly transport: Libp2pRaftTransport
  readonly received: Message[]
  readonly log: string[]
}

async function startTransport(
  node: P2pNode,
  authorize: (peer: string) => boolean,
): Promise<Endpoint> {
  const received: Message[] = []
  const log: string[] = []
  const transport = new Libp2pRaftTransport({
    node,
    authorize,
    onMessage: (message) => received.push(message),
    log: (line) => log.push(line),
  })
  await transport.start()
  return { transport, received, log }
}

/** Waits for a stream's reset by the remote, which is how the receiver refuses or drops. */
function closedWithError(stream: Stream): Promise<boolean> {
  return new Promise((resolve) => {
    if (stream.status === 'reset' || stream.status === 'aborted') return resolve(true)
    stream.addEventListener('close', (event) => resolve(event.error !== undefined), { once: true })
  })
}

test('delivers messages both ways in order', async () => {
  const nodes = await startConnectedNodes(2)
  const [a, b] = nodes as [P2pNode, P2pNode]
  const endA = await startTransport(a, () => true)
  const endB = await startTransport(b, () => true)
  try {
    for (let index = 1; index <= 50; index++) {
      endA.transport.send(heartbeat(a.peerId, b.peerId, index))
      endB.transport.send(heartbeat(b.peerId, a.peerId, index))
    }
    await waitFor(
      () => endA.received.length === 50 && endB.received.length === 50,
      '50 messages each way',
    )
    assert.equal(
      endB.received.map((message) => (message.type === 'heartbeat' ? message.commit : -1)),
      Array.from({ length: 50 }, (_, index) => index + 1),
    )
    assert.is(endB.received[0]!.from, a.peerId)
    assert.is(endA.transport.counters.messagesSent, 50)
  } finally {
    await endA.transport.stop()
    await endB.transport.stop()
    await stopNodes(nodes)
  }
})

test('keeps delivering after the peer restarts', async () => {
  const keyB = await generateKeyPair('Ed25519')
  const a = await startNode()
  let b = await startNode({ privateKey: keyB })
  const addressB = b.listenAddresses()[0]!
  await a.keepConnected([{ peerId: b.peerId, addresses: [addressB] }])
  const endA = await startTransport(a, () => true)
  let endB = await startTransport(b, () => true)
  try {
    endA.transport.send(heartbeat(a.peerId, b.peerId, 1))
    await waitFor(() => endB.received.length === 1, 'the first message')
    await endB.transport.stop()
    await b.stop()
    b = await startNode({ privateKey: keyB, listen: addressB.replace(/\/p2p\/.*$/, '') })
    endB = await startTransport(b, () => true)
    // Messages sent while the peer was away or its old stream was dying may be lost; keep sending.
    await waitFor(
      async () => {
        endA.transport.send(heartbeat(a.peerId, b.peerId, 2))
        await new Promise((resolve) => setTimeout(resolve, 50))
        return endB.received.length > 0
      },
      'a message to the restarted peer',
      10_000,
    )
    assert.is(endB.received[0]!.from, a.peerId)
  } finally {
    await endA.transport.stop()
    await endB.transport.stop()
    await stopNodes([a, b])
  }
})

test('refuses streams from a peer that is not admitted', async () => {
  const nodes = await startConnectedNodes(2)
  const [a, stranger] = nodes as [P2pNode, P2pNode]
  const endA = await startTransport(a, (peer) => peer !== stranger.peerId)
  const endStranger = await startTransport(stranger, () => true)
  try {
    endStranger.transport.send(heartbeat(stranger.peerId, a.peerId, 1))
    await waitFor(() => endA.transport.counters.streamsRefused > 0, 'a refusal')
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.is(endA.received.length, 0)
    assert.ok(endA.log.some((line) => line.includes('refused a raft stream')))
  } finally {
    await endA.transport.stop()
    await endStranger.transport.stop()
    await stopNodes(nodes)
  }
})

test('bad frames reset their stream, are counted, and the receiver keeps working', async () => {
  const nodes = await startConnectedNodes(3)
  const [a, b, c] = nodes as [P2pNode, P2pNode, P2pNode]
  const endA = await startTransport(a, () => true)
  const endB = await startTransport(b, () => true)
  try {
    const oversizedPrefix = new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3])
    const truncated = encodeFrame(encodeMessage(heartbeat(c.peerId, a.peerId, 1))).subarray(0, 12)
    const cases: { name: string; bytes: Uint8Array; closeWrite: boolean }[] = [
      { name: 'garbage', bytes: encodeFrame(randomBytes(200)), closeWrite: false },
      {
        name: 'forged sender',
        bytes: encodeFrame(encodeMessage(heartbeat(b.peerId, a.peerId, 1))),
        closeWrite: false,
      },
      {
        name: 'wrong addressee',
        bytes: encodeFrame(encodeMessage(heartbeat(c.peerId, b.peerId, 1))),
        closeWrite: false,
      },
      { name: 'oversized length prefix', bytes: oversizedPrefix, closeWrite: false },
      { name: 'truncated frame', bytes: truncated, closeWrite: true },
    ]
    for (const [index, { name, bytes, closeWrite }] of cases.entries()) {
      const stream = await c.openStream(a.peerId, RAFT_PROTOCOL.id, AbortSignal.timeout(5000))
      const reset = closedWithError(stream)
      stream.send(bytes)
      if (closeWrite) await stream.close()
      assert.ok(await reset, `${name}: the stream was reset`)
      await waitFor(() => endA.transport.counters.framesDropped === index + 1, `${name} counted`)
    }
    assert.is(endA.received.length, 0)
    assert.is(
      endA.log.filter((line) => line.startsWith('dropped a raft frame')).length,
      cases.length,
    )
    endB.transport.send(heartbeat(b.peerId, a.peerId, 7))
    await waitFor(() => endA.received.length === 1, 'a good message after the bad ones')
  } finally {
    await endA.transport.stop()
    await endB.transport.stop()
    await stopNodes(nodes)
  }
})

test('a full queue drops its oldest messages and never blocks the caller', async () => {
  const a = await startNode()
  const absent = await startNode()
  const absentId = absent.peerId
  await absent.stop()
  const endA = await startTransport(a, () => true)
  try {
    for (let index = 0; index < 3000; index++)
      endA.transport.send(heartbeat(a.peerId, absentId, index))
    assert.is(endA.transport.counters.messagesDroppedQueueFull, 3000 - 1024)
  } finally {
    await endA.transport.stop()
    await stopNodes([a])
  }
})

test.run()
