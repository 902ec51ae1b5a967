// Faults with real processes: a replica killed and restarted, a replica added late, a
// peer that was never admitted, and garbage on every wire protocol from a peer that was.
import '../../node/polyfill.ts'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { z } from 'zod'
import { encodeMessage } from '../../consensus/codec.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import { createP2pNode, type P2pNode } from '../../node/p2p/p2p-node.ts'
import { callRpc } from '../../node/wire/rpc.ts'
import { encodeFrame } from '../../node/wire/framing.ts'
import {
  CHUNKS_PROTOCOL,
  LOG_PROTOCOL,
  RAFT_PROTOCOL,
  RPC_PROTOCOL,
} from '../../node/wire/protocol-ids.ts'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { StatusReport, VersionListing } from '../../node/daemon/status-types.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { TestCluster, waitFor, waitForSameTree } from './helpers/cluster.ts'

let root = ''
let cluster: TestCluster
let source = ''
let rogue: P2pNode | null = null

test.before(async () => {
  root = await makeTempDir('clusterreplica-e2e-faults-')
  source = join(root, 'source')
  await mkdir(source)
  await writeFile(join(source, 'hello.txt'), 'version 1\n')
  cluster = await TestCluster.create(root, [
    { name: 'alpha', roles: [] },
    { name: 'beta', roles: ['replica'] },
  ])
  await cluster.primary.control('datasetAdd', {
    id: 'docs',
    master: 'alpha',
    path: source,
    replicas: [{ name: 'beta', mirror: join(root, 'mirror-beta') }],
  })
  await waitForSameTree(source, join(root, 'mirror-beta'))
})

test.after(async () => {
  await rogue?.stop()
  await cluster?.stop()
  await removeDir(root)
})

async function betaFetched(): Promise<number> {
  const status = (await cluster.primary.control('status')) as StatusReport
  return status.replication.find((lag) => lag.replica === 'beta')?.bytesFetched ?? -1
}

test('a replica killed with SIGKILL resumes after a restart and fetches only what it lacks', async () => {
  await writeFile(join(source, 'large.bin'), randomBytes(8 * 1024 * 1024))
  await waitForSameTree(source, join(root, 'mirror-beta'))
  const beta = cluster.node('beta')
  await beta.kill()
  await writeFile(join(source, 'while-down.bin'), randomBytes(1024 * 1024))
  await writeFile(join(source, 'hello.txt'), 'version 2\n')
  await beta.start()
  await waitForSameTree(source, join(root, 'mirror-beta'))
  const fetched = await betaFetched()
  assert.ok(
    fetched >= 1024 * 1024 && fetched < 2 * 1024 * 1024,
    `fetched ${fetched} bytes after the restart`,
  )
})

test('a replica added later catches up from the start of the history', async () => {
  await writeFile(join(source, 'hello.txt'), 'version 3\n')
  await waitForSameTree(source, join(root, 'mirror-beta'))
  await cluster.join({ name: 'delta', roles: ['replica'] })
  await cluster.primary.control('datasetSetReplicas', {
    id: 'docs',
    replicas: [
      { name: 'beta', mirror: join(root, 'mirror-beta') },
      { name: 'delta', mirror: join(root, 'mirror-delta') },
    ],
  })
  await waitForSameTree(source, join(root, 'mirror-delta'))
  const versions = (await cluster
    .node('delta')
    .control('versions', { dataset: 'docs', path: 'hello.txt' })) as VersionListing[]
  assert.is(versions.length, 3, 'every version from before delta joined')
})

const anyResponse = z.unknown()

async function startRogue(): Promise<P2pNode> {
  rogue = await createP2pNode({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [],
    mdns: false,
  })
  await rogue.dial(cluster.primary.address)
  return rogue
}

async function refused(call: Promise<unknown>): Promise<string> {
  try {
    await call
  } catch (error) {
    return isClusterError(error) ? error.code : (error as Error).message
  }
  return 'accepted'
}

/** Sends raw bytes on a fresh stream and waits for the remote to end it. */
async function sendRaw(
  node: P2pNode,
  peer: string,
  protocol: string,
  bytes: Uint8Array,
): Promise<void> {
  const stream = await node.openStream(peer, protocol, AbortSignal.timeout(5_000))
  try {
    stream.send(bytes)
    await stream.close()
  } catch {
    // The remote already refused the stream: that is an answer too.
    return
  }
  await Promise.race([
    (async () => {
      for await (const _ of stream) {
        // drain whatever the remote answers until it closes or resets
      }
    })().catch(() => undefined),
    new Promise((resolve) => setTimeout(resolve, 2_000)),
  ])
}

test('a peer that was never admitted is refused on every protocol', async () => {
  const node = await startRogue()
  const alpha = cluster.primary.peerId!
  assert.is(await refused(callRpc(node, alpha, 'status', {}, { response: anyResponse })), 'REFUSED')
  assert.is(
    await refused(
      callRpc(
        node,
        alpha,
        'admin',
        { op: 'command', command: { type: 'removeNode', name: 'beta' } },
        { response: anyResponse },
      ),
    ),
    'REFUSED',
  )
  const forged = encodeMessage({
    type: 'heartbeat',
    from: nodeId(node.peerId),
    to: nodeId(alpha),
    term: term(99),
    commit: logIndex(0),
    sentTick: 0,
  })
  await sendRaw(node, alpha, RAFT_PROTOCOL.id, encodeFrame(forged))
  const log = await node.openStream(alpha, LOG_PROTOCOL.id, AbortSignal.timeout(5_000))
  log.send(encodeFrame(new TextEncoder().encode(JSON.stringify({ datasetId: 'docs' }))))
  let answer = ''
  for await (const chunk of log) answer += new TextDecoder().decode(chunk.subarray())
  assert.match(answer, 'REFUSED')
  const status = (await cluster.primary.control('status')) as StatusReport
  assert.is(status.term < 99, true, 'the forged term changed nothing')
  assert.equal(
    status.nodes.map((entry) => entry.name),
    ['alpha', 'beta', 'delta'],
  )
})

test('garbage on every protocol from an admitted peer is dropped and the node carries on', async () => {
  const node = rogue!
  const alpha = cluster.primary.peerId!
  const joinAnswer = z.object({ state: z.string() }).passthrough()
  await waitFor(
    'the rogue to be pending',
    async () =>
      (
        await callRpc(
          node,
          alpha,
          'join',
          { name: 'rogue', site: 'x', addresses: [] },
          { response: joinAnswer },
        )
      ).state === 'pending',
  )
  await cluster.primary.control('admit', { name: 'rogue', roles: ['replica'] })
  const garbage = [
    randomBytes(64),
    Uint8Array.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), // a length far over any frame bound
    Uint8Array.from([0, 0, 0, 100, 1, 2, 3]), // a frame cut short
    encodeFrame(randomBytes(200)), // a whole frame of noise
    encodeFrame(new TextEncoder().encode('{"method":"status","request":')), // truncated JSON
  ]
  for (const protocol of [RAFT_PROTOCOL.id, LOG_PROTOCOL.id, CHUNKS_PROTOCOL.id, RPC_PROTOCOL.id]) {
    for (const bytes of garbage) await sendRaw(node, alpha, protocol, bytes)
  }
  assert.ok(cluster.primary.running, 'the node is still running')
  const status = (await cluster.primary.control('status')) as StatusReport
  assert.is(status.leader, 'alpha')
  await writeFile(join(source, 'after-garbage.txt'), 'still replicating\n')
  await waitForSameTree(source, join(root, 'mirror-beta'))
  await cluster.primary.control('remove', { name: 'rogue' })
})

test.run()
