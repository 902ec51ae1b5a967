// Chunk protocol throughput between two processes on 127.0.0.1, beside a raw TCP copy of
// the same bytes between the same two processes in the same run. A child process holds
// the chunks in its chunk store and serves them over libp2p (ChunkServer) and, as one
// stream of bytes, over a plain net.Socket and over one libp2p stream; this process
// fetches every chunk into a fresh chunk store (each chunk verified, the store flushed
// before fetch() resolves), copies the raw socket into a file that it fsyncs and into
// memory, and reads the raw libp2p stream into memory (libp2p's own cost, for
// comparison). Each figure is the median of a few rounds: these machines are shared and
// noisy.
//
//   node --import tsx bench/chunk-protocol.ts [MiB, default 256] [rounds, default 3]
import '../node/polyfill.ts'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises'
import { connect, createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Stream } from '@libp2p/interface'
import { MUXER_MESSAGE_BYTES_MAX } from '../node/p2p/libp2p-options.ts'
import { createP2pNode, type P2pNode } from '../node/p2p/p2p-node.ts'
import { ChunkFetcher, ChunkServer, type WantedChunk } from '../node/wire/chunk-protocol.ts'
import { ChunkStore } from '../storage/chunk-store.ts'
import { chunkBytes } from '../storage/chunker.ts'

const MEBIBYTE = 1024 * 1024
/** The same bytes as one libp2p stream, to tell libp2p's own cost from the chunk protocol's. */
const RAW_STREAM_PROTOCOL = '/clusterreplica-bench/raw/1.0.0'
const RAW_STREAM_WRITE_BYTES = MUXER_MESSAGE_BYTES_MAX
const CHILD_READY_TIMEOUT_MS = 120_000

interface ServerManifest {
  readonly address: string
  readonly peerId: string
  readonly tcpPort: number
  readonly totalBytes: number
  readonly manifestPath: string
}

/** The child: holds the chunks, serves them over libp2p and as raw bytes over TCP. */
async function serve(directory: string, totalBytes: number): Promise<void> {
  const chunks = chunkBytes(randomBytes(totalBytes))
  const store = await ChunkStore.open(join(directory, 'server-store'))
  for (const chunk of chunks) await store.put(chunk.hash, chunk.bytes)
  await store.flush()
  const raw = Buffer.concat(chunks.map((chunk) => chunk.bytes))
  const tcp = createServer((socket) => socket.end(raw))
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve))
  const node = await createP2pNode({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [],
    mdns: false,
  })
  const server = new ChunkServer({ node, chunkStore: store, authorize: () => true })
  await server.start()
  await node.handle(RAW_STREAM_PROTOCOL, (stream) => void sendRaw(stream, raw), {
    maxInboundStreams: 4,
  })
  const manifestPath = join(directory, 'wanted.json')
  const wanted: WantedChunk[] = chunks.map(({ hash, bytes }) => ({
    hash,
    length: bytes.byteLength,
  }))
  await writeFile(manifestPath, JSON.stringify(wanted))
  const manifest: ServerManifest = {
    address: node.listenAddresses()[0]!,
    peerId: node.peerId,
    tcpPort: (tcp.address() as AddressInfo).port,
    totalBytes: raw.byteLength,
    manifestPath,
  }
  process.stdout.write(`ready ${JSON.stringify(manifest)}\n`)
  // The parent closes our stdin when it is done, or when it dies.
  process.stdin.resume()
  await new Promise((resolve) => process.stdin.on('end', resolve))
  await server.stop()
  await node.stop()
  tcp.close()
  await store.close()
}

async function startServer(
  directory: string,
  totalBytes: number,
): Promise<{ child: ChildProcess; manifest: ServerManifest }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve', directory, String(totalBytes)],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  const lines = createInterface({ input: child.stdout! })
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_READY_TIMEOUT_MS)
  try {
    for await (const line of lines)
      if (line.startsWith('ready '))
        return { child, manifest: JSON.parse(line.slice(6)) as ServerManifest }
  } finally {
    clearTimeout(timer)
  }
  throw new Error(
    `the serving process exited (${child.exitCode ?? child.signalCode}) before it was ready`,
  )
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.stdin?.end()
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

async function sendRaw(stream: Stream, raw: Buffer): Promise<void> {
  for (let offset = 0; offset < raw.byteLength; offset += RAW_STREAM_WRITE_BYTES)
    if (!stream.send(raw.subarray(offset, offset + RAW_STREAM_WRITE_BYTES))) await stream.onDrain()
  await stream.close()
}

async function rawLibp2pCopy(node: P2pNode, manifest: ServerManifest): Promise<number> {
  const startedMs = performance.now()
  const stream = await node.openStream(
    manifest.peerId,
    RAW_STREAM_PROTOCOL,
    AbortSignal.timeout(10_000),
  )
  let received = 0
  for await (const data of stream) received += data.byteLength
  if (received !== manifest.totalBytes)
    throw new Error(`raw libp2p copy got ${received} of ${manifest.totalBytes} bytes`)
  return mibPerSecond(received, performance.now() - startedMs)
}

/** Receives the raw stream; into a file that is fsynced at the end, or just counted. */
async function rawCopy(port: number, totalBytes: number, filePath: string | null): Promise<number> {
  const file = filePath === null ? null : await open(filePath, 'w')
  const startedMs = performance.now()
  let received = 0
  try {
    const socket = connect(port, '127.0.0.1')
    for await (const data of socket) {
      const bytes = data as Buffer
      received += bytes.byteLength
      if (file !== null) await file.write(bytes)
    }
    await file?.sync()
  } finally {
    await file?.close()
  }
  if (received !== totalBytes) throw new Error(`raw copy got ${received} of ${totalBytes} bytes`)
  return mibPerSecond(totalBytes, performance.now() - startedMs)
}

async function chunkFetch(
  node: P2pNode,
  manifest: ServerManifest,
  wanted: readonly WantedChunk[],
  directory: string,
): Promise<number> {
  const store = await ChunkStore.open(directory)
  try {
    const startedMs = performance.now()
    const result = await new ChunkFetcher({ node, chunkStore: store }).fetch(wanted, [
      manifest.peerId,
    ])
    const elapsedMs = performance.now() - startedMs
    if (result.failed.length > 0 || result.bytes !== manifest.totalBytes)
      throw new Error(
        `fetch got ${result.bytes} of ${manifest.totalBytes} bytes, ${result.failed.length} chunks failed`,
      )
    return mibPerSecond(result.bytes, elapsedMs)
  } finally {
    await store.close()
  }
}

function mibPerSecond(bytes: number, elapsedMs: number): number {
  return bytes / MEBIBYTE / (elapsedMs / 1000)
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

async function main(): Promise<void> {
  const totalBytes = Number(process.argv[2] ?? 256) * MEBIBYTE
  const rounds = Number(process.argv[3] ?? 3)
  const directory = await mkdtemp(join(tmpdir(), 'chunk-protocol-bench-'))
  let child: ChildProcess | null = null
  let node: P2pNode | null = null
  try {
    const server = await startServer(directory, totalBytes)
    child = server.child
    const { manifest } = server
    const wanted = JSON.parse(await readFile(manifest.manifestPath, 'utf8')) as WantedChunk[]
    node = await createP2pNode({
      privateKey: await generateKeyPair('Ed25519'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [],
      mdns: false,
    })
    await node.dial(manifest.address)
    const figures = {
      fetch: [] as number[],
      rawToFile: [] as number[],
      rawToMemory: [] as number[],
      rawLibp2p: [] as number[],
    }
    for (let round = 0; round < rounds; round++) {
      figures.rawToFile.push(
        await rawCopy(manifest.tcpPort, manifest.totalBytes, join(directory, `raw-${round}`)),
      )
      figures.rawToMemory.push(await rawCopy(manifest.tcpPort, manifest.totalBytes, null))
      figures.rawLibp2p.push(await rawLibp2pCopy(node, manifest))
      figures.fetch.push(
        await chunkFetch(node, manifest, wanted, join(directory, `client-${round}`)),
      )
      await rm(join(directory, `raw-${round}`), { force: true })
      await rm(join(directory, `client-${round}`), { recursive: true, force: true })
    }
    const fetch = median(figures.fetch)
    const rawToFile = median(figures.rawToFile)
    const rawToMemory = median(figures.rawToMemory)
    const rawLibp2p = median(figures.rawLibp2p)
    const line = (label: string, value: number): string =>
      `  ${label.padEnd(58)} ${value.toFixed(1).padStart(7)} MiB/s`
    console.log(
      [
        `chunk protocol: ${(manifest.totalBytes / MEBIBYTE).toFixed(0)} MiB in ${wanted.length} chunks, two processes on 127.0.0.1, median of ${rounds}`,
        line('chunk fetch over libp2p (verified, stored, flushed)', fetch),
        line('raw TCP copy of the same bytes into a file, fsynced', rawToFile),
        line('raw TCP copy of the same bytes into memory', rawToMemory),
        line('raw libp2p stream of the same bytes into memory', rawLibp2p),
        `  ratio fetch / raw copy into a file: ${(fetch / rawToFile).toFixed(2)}`,
        `  ratio fetch / raw copy into memory: ${(fetch / rawToMemory).toFixed(2)}`,
        `  ratio fetch / raw libp2p stream: ${(fetch / rawLibp2p).toFixed(2)}`,
      ].join('\n'),
    )
  } finally {
    await node?.stop()
    if (child !== null) await stopServer(child)
    await rm(directory, { recursive: true, force: true })
  }
}

if (process.argv[2] === '--serve') await serve(process.argv[3]!, Number(process.argv[4]))
else await main()
