import '../../node/polyfill.ts'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { P2pNode } from '../../node/p2p/p2p-node.ts'
import { ChunkFetcher, ChunkServer, type WantedChunk } from '../../node/wire/chunk-protocol.ts'
import { CHUNK_REQUEST_HASHES_MAX, encodeRequest } from '../../node/wire/chunk-messages.ts'
import { CHUNK_STREAM_PENDING_HASHES_MAX } from '../../node/wire/chunk-server.ts'
import { encodeFrame } from '../../node/wire/framing.ts'
import { CHUNKS_PROTOCOL } from '../../node/wire/protocol-ids.ts'
import { ChunkStore } from '../../storage/chunk-store.ts'
import type { Chunk, ChunkHash } from '../../storage/chunk-types.ts'
import { chunkBytes } from '../../storage/chunker.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { startConnectedNodes, stopNodes } from './helpers/nodes.ts'
import { serveRogueChunks } from './helpers/rogue-chunk-peer.ts'

const chunks: Chunk[] = chunkBytes(randomBytes(16 * 1024 * 1024))
const wanted: WantedChunk[] = chunks.map(({ hash, bytes }) => ({ hash, length: bytes.byteLength }))
const lengthOf = (hash: string): number => wanted.find((chunk) => chunk.hash === hash)!.length

interface World {
  readonly nodes: P2pNode[]
  readonly stores: ChunkStore[]
  readonly servers: ChunkServer[]
  readonly directory: string
}

/** `count` connected nodes with a chunk store each; the first is the fetcher. */
async function world(count: number): Promise<World> {
  const directory = await makeTempDir()
  const nodes = await startConnectedNodes(count)
  const stores = await Promise.all(
    nodes.map((_, index) => ChunkStore.open(join(directory, `node-${index}`))),
  )
  return { nodes, stores, servers: [], directory }
}

async function serve(
  w: World,
  index: number,
  holds: readonly Chunk[],
  options: { authorize?: () => boolean; log?: (line: string) => void } = {},
): Promise<ChunkServer> {
  for (const chunk of holds) await w.stores[index]!.put(chunk.hash, chunk.bytes)
  await w.stores[index]!.flush()
  const server = new ChunkServer({
    node: w.nodes[index]!,
    chunkStore: w.stores[index]!,
    authorize: options.authorize ?? (() => true),
    ...(options.log === undefined ? {} : { log: options.log }),
  })
  await server.start()
  w.servers.push(server)
  return server
}

async function teardown(w: World): Promise<void> {
  for (const server of w.servers) await server.stop()
  await stopNodes(w.nodes)
  for (const store of w.stores) await store.close()
  await removeDir(w.directory)
}

async function assertHoldsAll(store: ChunkStore): Promise<void> {
  for (const chunk of chunks) assert.equal(await store.get(chunk.hash), chunk.bytes)
}

test(`fetches ${chunks.length} chunks, verified and durable, reporting progress`, async () => {
  const w = await world(2)
  try {
    const server = await serve(w, 1, chunks)
    const fetcher = new ChunkFetcher({ node: w.nodes[0]!, chunkStore: w.stores[0]! })
    let lastProgress = { chunksFetched: 0, bytesFetched: 0, chunksToFetch: 0, bytesToFetch: 0 }
    const result = await fetcher.fetch(wanted, [w.nodes[1]!.peerId], {
      onProgress: (progress) => (lastProgress = progress),
    })
    const totalBytes = chunks.reduce((sum, chunk) => sum + chunk.bytes.byteLength, 0)
    assert.equal(result, { fetched: chunks.length, bytes: totalBytes, present: 0, failed: [] })
    assert.equal(lastProgress, {
      chunksFetched: chunks.length,
      bytesFetched: totalBytes,
      chunksToFetch: chunks.length,
      bytesToFetch: totalBytes,
    })
    assert.is(server.counters.chunksServed, chunks.length)
    // Durable: a reopened store still holds every chunk.
    await w.stores[0]!.close()
    w.stores[0] = await ChunkStore.open(join(w.directory, 'node-0'))
    await assertHoldsAll(w.stores[0])
  } finally {
    await teardown(w)
  }
})

test('chunks already in the store are not fetched again', async () => {
  const w = await world(2)
  try {
    const server = await serve(w, 1, chunks)
    const alreadyHere = chunks.filter((_, index) => index % 3 === 0)
    for (const chunk of alreadyHere) await w.stores[0]!.put(chunk.hash, chunk.bytes)
    const fetcher = new ChunkFetcher({ node: w.nodes[0]!, chunkStore: w.stores[0]! })
    const result = await fetcher.fetch([...wanted, ...wanted], [w.nodes[1]!.peerId])
    assert.is(result.present, alreadyHere.length)
    assert.is(result.fetched, chunks.length - alreadyHere.length)
    assert.is(server.counters.chunksServed, chunks.length - alreadyHere.length)
    await assertHoldsAll(w.stores[0]!)
  } finally {
    await teardown(w)
  }
})

test('chunks a source lacks are fetched from the next source', async () => {
  const w = await world(3)
  try {
    const half = chunks.filter((_, index) => index % 2 === 0)
    const partial = await serve(w, 1, half)
    const full = await serve(w, 2, chunks)
    const fetcher = new ChunkFetcher({ node: w.nodes[0]!, chunkStore: w.stores[0]! })
    const result = await fetcher.fetch(wanted, [w.nodes[1]!.peerId, w.nodes[2]!.peerId])
    assert.equal(result.failed, [])
    assert.is(partial.counters.chunksServed, half.length)
    assert.is(partial.counters.chunksMissing, chunks.length - half.length)
    assert.is(full.counters.chunksServed, chunks.length - half.length)
    await assertHoldsAll(w.stores[0]!)
  } finally {
    await teardown(w)
  }
})

test('a source that sends wrong bytes is dropped and its chunks come from the next', async () => {
  const w = await world(3)
  try {
    const rogue = await serveRogueChunks(w.nodes[1]!, 'wrong-bytes', lengthOf)
    const honest = await serve(w, 2, chunks)
    const log: string[] = []
    const fetcher = new ChunkFetcher({
      node: w.nodes[0]!,
      chunkStore: w.stores[0]!,
      log: (line) => log.push(line),
    })
    const result = await fetcher.fetch(wanted, [w.nodes[1]!.peerId, w.nodes[2]!.peerId])
    assert.equal(result.failed, [])
    assert.ok(rogue.requests > 0)
    assert.is(honest.counters.chunksServed, chunks.length)
    assert.ok(
      log.some((line) => line.includes('did not match its hash')),
      log.join('\n'),
    )
    await assertHoldsAll(w.stores[0]!)
  } finally {
    await teardown(w)
  }
})

test('a source that stalls times out and the next source serves', async () => {
  const w = await world(3)
  try {
    await serveRogueChunks(w.nodes[1]!, 'stall', lengthOf)
    await serve(w, 2, chunks)
    const log: string[] = []
    const fetcher = new ChunkFetcher({
      node: w.nodes[0]!,
      chunkStore: w.stores[0]!,
      responseTimeoutMs: 300,
      log: (line) => log.push(line),
    })
    const result = await fetcher.fetch(wanted, [w.nodes[1]!.peerId, w.nodes[2]!.peerId])
    assert.equal(result.failed, [])
    assert.ok(
      log.some((line) => line.includes('sent nothing for 300 ms')),
      log.join('\n'),
    )
    await assertHoldsAll(w.stores[0]!)
  } finally {
    await teardown(w)
  }
})

test('a source that goes away mid-fetch is retried, then dropped, and the next serves', async () => {
  const w = await world(3)
  try {
    await serve(w, 1, chunks)
    const backup = await serve(w, 2, chunks)
    const log: string[] = []
    const fetcher = new ChunkFetcher({
      node: w.nodes[0]!,
      chunkStore: w.stores[0]!,
      log: (line) => log.push(line),
    })
    let stopping: Promise<void> | null = null
    const result = await fetcher.fetch(wanted, [w.nodes[1]!.peerId, w.nodes[2]!.peerId], {
      onProgress: ({ chunksFetched }) => {
        if (chunksFetched === 10) stopping = w.nodes[1]!.stop()
      },
    })
    await stopping
    assert.equal(result.failed, [])
    assert.ok(backup.counters.chunksServed > 0)
    assert.ok(
      log.some((line) => line.startsWith(`dropped chunk source ${w.nodes[1]!.peerId}`)),
      log.join('\n'),
    )
    await assertHoldsAll(w.stores[0]!)
  } finally {
    await teardown(w)
  }
})

test('a cancelled fetch fails with CLOSED and keeps what it stored', async () => {
  const w = await world(2)
  try {
    await serve(w, 1, chunks)
    const fetcher = new ChunkFetcher({ node: w.nodes[0]!, chunkStore: w.stores[0]! })
    const cancel = new AbortController()
    let fetchedBeforeCancel = 0
    const error = await fetcher
      .fetch(wanted, [w.nodes[1]!.peerId], {
        signal: cancel.signal,
        onProgress: ({ chunksFetched }) => {
          if (chunksFetched === 20) cancel.abort()
          fetchedBeforeCancel = chunksFetched
        },
      })
      .then(
        () => null,
        (failure: unknown) => failure,
      )
    assert.ok(isClusterError(error, 'CLOSED'), String(error))
    await w.stores[0]!.close()
    w.stores[0] = await ChunkStore.open(join(w.directory, 'node-0'))
    let held = 0
    for (const chunk of chunks) if (await w.stores[0].has(chunk.hash)) held++
    assert.ok(
      held >= 20 && held === fetchedBeforeCancel,
      `${held} held, ${fetchedBeforeCancel} reported`,
    )
  } finally {
    await teardown(w)
  }
})

test('a fetcher that asks too much at once or sends garbage is reset; the server keeps serving', async () => {
  const w = await world(2)
  try {
    const lines: string[] = []
    await serve(w, 1, chunks, { log: (line) => lines.push(line) })
    const tooMany = Array.from(
      { length: CHUNK_STREAM_PENDING_HASHES_MAX / CHUNK_REQUEST_HASHES_MAX + 1 },
      () =>
        encodeFrame(
          encodeRequest(
            Array.from(
              { length: CHUNK_REQUEST_HASHES_MAX },
              () => randomBytes(32).toString('hex') as ChunkHash,
            ),
          ),
        ),
    )
    for (const bytes of [Buffer.concat(tooMany), encodeFrame(randomBytes(100))]) {
      const stream = await w.nodes[0]!.openStream(
        w.nodes[1]!.peerId,
        CHUNKS_PROTOCOL.id,
        AbortSignal.timeout(5000),
      )
      const reset = new Promise<boolean>((resolve) =>
        stream.addEventListener('close', (event) => resolve(event.error !== undefined), {
          once: true,
        }),
      )
      stream.send(bytes)
      assert.ok(await reset, 'the stream was reset')
    }
    assert.is(
      lines.filter((line) => line.startsWith('reset a chunk stream')).length,
      2,
      lines.join('\n'),
    )
    const fetcher = new ChunkFetcher({ node: w.nodes[0]!, chunkStore: w.stores[0]! })
    assert.equal((await fetcher.fetch(wanted, [w.nodes[1]!.peerId])).failed, [])
  } finally {
    await teardown(w)
  }
})

test('an unauthorised fetcher is refused and its chunks fail', async () => {
  const w = await world(2)
  try {
    const server = await serve(w, 1, chunks.slice(0, 4), { authorize: () => false })
    const fetcher = new ChunkFetcher({ node: w.nodes[0]!, chunkStore: w.stores[0]! })
    const result = await fetcher.fetch(wanted.slice(0, 4), [w.nodes[1]!.peerId])
    assert.equal(
      result.failed.sort(),
      wanted
        .slice(0, 4)
        .map((chunk) => chunk.hash)
        .sort(),
    )
    assert.is(result.fetched, 0)
    assert.is(server.counters.streamsRefused, 1)
  } finally {
    await teardown(w)
  }
})

test.run()
