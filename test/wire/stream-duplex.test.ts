import '../../node/polyfill.ts'
import { createHash, randomBytes } from 'node:crypto'
import { pipeline } from 'node:stream/promises'
import { Readable, Writable } from 'node:stream'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Stream } from '@libp2p/interface'
import { StreamDuplex } from '../../node/wire/stream-duplex.ts'
import { startConnectedNodes, stopNodes } from './helpers/nodes.ts'
import type { P2pNode } from '../../node/p2p/p2p-node.ts'

const PROTOCOL = '/clusterreplica-test/duplex/1.0.0'
const TRANSFER_BYTES = 64 * 1024 * 1024
const BLOCK_BYTES = 256 * 1024

/** Opens a stream from `from` to `to` and returns both ends. */
async function streamPair(
  from: P2pNode,
  to: P2pNode,
): Promise<{ outbound: Stream; inbound: Stream }> {
  const inbound = new Promise<Stream>((resolve) => {
    void to.handle(PROTOCOL, (stream) => resolve(stream), { maxInboundStreams: 4 })
  })
  const outbound = await from.openStream(to.peerId, PROTOCOL, AbortSignal.timeout(5000))
  return { outbound, inbound: await inbound }
}

function blocks(seed: Buffer, count: number): Readable {
  let sent = 0
  return new Readable({
    read() {
      if (sent === count) return void this.push(null)
      const block = Buffer.from(seed)
      block.writeUInt32BE(sent++, 0)
      this.push(block)
    },
  })
}

/** A consumer slower than the network, so that back-pressure must hold the sender. */
function slowHashingSink(
  hash: ReturnType<typeof createHash>,
  counter: { bytes: number },
): Writable {
  let calls = 0
  return new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _encoding, callback) {
      hash.update(chunk)
      counter.bytes += chunk.byteLength
      if (++calls % 4 === 0) setTimeout(callback, 1)
      else callback()
    },
  })
}

test('64 MiB through the duplex both ways, with a slow reader, arrive intact', async () => {
  const nodes = await startConnectedNodes(2)
  try {
    const [a, b] = nodes as [P2pNode, P2pNode]
    const { outbound, inbound } = await streamPair(a, b)
    // Counts the real pause() calls: a slow reader must have paused the stream.
    let pauses = 0
    const pause = inbound.pause.bind(inbound)
    inbound.pause = () => {
      pauses++
      pause()
    }
    const left = new StreamDuplex(outbound)
    const right = new StreamDuplex(inbound)
    const seed = randomBytes(BLOCK_BYTES)
    const count = TRANSFER_BYTES / BLOCK_BYTES
    const expected = createHash('sha256')
    for (let index = 0; index < count; index++) {
      const block = Buffer.from(seed)
      block.writeUInt32BE(index, 0)
      expected.update(block)
    }
    const expectedDigest = expected.digest('hex')
    const rightGot = { bytes: 0 }
    const leftGot = { bytes: 0 }
    const rightHash = createHash('sha256')
    const leftHash = createHash('sha256')
    await Promise.all([
      pipeline(blocks(seed, count), left),
      pipeline(right, slowHashingSink(rightHash, rightGot)),
      pipeline(blocks(seed, count), right),
      pipeline(left, slowHashingSink(leftHash, leftGot)),
    ])
    assert.is(rightGot.bytes, TRANSFER_BYTES)
    assert.is(leftGot.bytes, TRANSFER_BYTES)
    assert.is(rightHash.digest('hex'), expectedDigest)
    assert.is(leftHash.digest('hex'), expectedDigest)
    assert.ok(pauses > 0, 'the slow reader paused the stream')
  } finally {
    await stopNodes(nodes)
  }
})

test('a reset stream destroys the duplex with CLOSED', async () => {
  const nodes = await startConnectedNodes(2)
  try {
    const [a, b] = nodes as [P2pNode, P2pNode]
    const { outbound, inbound } = await streamPair(a, b)
    const right = new StreamDuplex(inbound)
    const failed = new Promise<Error>((resolve) => right.on('error', resolve))
    right.resume()
    outbound.abort(new Error('test reset'))
    const error = (await failed) as Error & { code?: string }
    assert.is(error.code, 'CLOSED')
  } finally {
    await stopNodes(nodes)
  }
})

test.run()
