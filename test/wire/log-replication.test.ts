import '../../node/polyfill.ts'
import Corestore from 'corestore'
import type Hypercore from 'hypercore'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { P2pNode } from '../../node/p2p/p2p-node.ts'
import { LogReplication } from '../../node/wire/log-replication.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { startConnectedNodes, stopNodes, waitFor } from './helpers/nodes.ts'

const DATASET = 'photos'

function block(index: number): Buffer {
  return Buffer.from(`version record ${index} `.repeat(40))
}

interface Holder {
  readonly node: P2pNode
  readonly store: Corestore
  readonly core: Hypercore
  readonly replication: LogReplication
}

/** A node holding the dataset's core: the master's own, or a replica's opened by key. */
async function holder(
  node: P2pNode,
  directory: string,
  key: Buffer | null,
  entitled: (peer: string) => boolean,
): Promise<Holder> {
  const store = new Corestore(directory)
  const core = key === null ? store.get({ name: `dataset/${DATASET}` }) : store.get({ key })
  await core.ready()
  if (key !== null) core.download({ start: 0, end: -1 })
  const replication = new LogReplication({
    node,
    authorize: (peer, datasetId) => datasetId === DATASET && entitled(peer),
    openCore: async (datasetId) => (datasetId === DATASET ? core : null),
  })
  await replication.start()
  return { node, store, core, replication }
}

async function close(holders: readonly Holder[]): Promise<void> {
  for (const { replication, store } of holders) {
    await replication.stop()
    await store.close()
  }
}

test('a replica follows the master log, live appends included; a stranger is refused', async () => {
  const directory = await makeTempDir()
  const nodes = await startConnectedNodes(3)
  const [masterNode, replicaNode, strangerNode] = nodes as [P2pNode, P2pNode, P2pNode]
  const holders: Holder[] = []
  try {
    const master = await holder(
      masterNode,
      join(directory, 'master'),
      null,
      (peer) => peer === replicaNode.peerId,
    )
    holders.push(master)
    await master.core.append(Array.from({ length: 20 }, (_, index) => block(index)))
    const replica = await holder(
      replicaNode,
      join(directory, 'replica'),
      master.core.key,
      () => true,
    )
    holders.push(replica)
    const stranger = await holder(
      strangerNode,
      join(directory, 'stranger'),
      master.core.key,
      () => true,
    )
    holders.push(stranger)

    const session = replica.replication.replicate(masterNode.peerId, DATASET)
    await waitFor(() => replica.core.contiguousLength === 20, 'the first 20 records')
    assert.equal(await replica.core.get(7), block(7))

    await master.core.append([block(20), block(21)])
    await waitFor(() => replica.core.contiguousLength === 22, 'records appended after connecting')
    assert.equal(await replica.core.get(21), block(21))

    const refused = await stranger.replication.replicate(masterNode.peerId, DATASET).closed
    assert.is(refused?.code, 'REFUSED')
    assert.match(refused!.message, /not entitled/)
    assert.is(stranger.core.contiguousLength, 0)

    const unknown = await replica.replication.replicate(masterNode.peerId, 'other').closed
    assert.is(unknown?.code, 'NOT_FOUND')

    session.close()
    assert.is(await session.closed, null)
    await waitFor(() => master.replication.sessionCount === 0, 'the master to see the session end')
  } finally {
    await close(holders)
    await stopNodes(nodes)
    await removeDir(directory)
  }
})

test('replicas serve each other the master-signed log while the master is away', async () => {
  const directory = await makeTempDir()
  const nodes = await startConnectedNodes(3)
  const [masterNode, firstNode, secondNode] = nodes as [P2pNode, P2pNode, P2pNode]
  const holders: Holder[] = []
  try {
    const master = await holder(masterNode, join(directory, 'master'), null, () => true)
    holders.push(master)
    await master.core.append(Array.from({ length: 10 }, (_, index) => block(index)))
    const first = await holder(firstNode, join(directory, 'first'), master.core.key, () => true)
    holders.push(first)
    const fromMaster = first.replication.replicate(masterNode.peerId, DATASET)
    await waitFor(() => first.core.contiguousLength === 10, 'the first replica caught up')

    await master.replication.stop()
    assert.is((await fromMaster.closed)?.code, 'CLOSED')

    const second = await holder(secondNode, join(directory, 'second'), master.core.key, () => true)
    holders.push(second)
    const fromReplica = second.replication.replicate(firstNode.peerId, DATASET)
    await waitFor(
      () => second.core.contiguousLength === 10,
      'the second replica caught up from the first',
    )
    assert.equal(await second.core.get(9), block(9))
    fromReplica.close()
  } finally {
    await close(holders)
    await stopNodes(nodes)
    await removeDir(directory)
  }
})

test.run()
