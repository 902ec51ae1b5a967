// `clusterreplica init`: makes a data directory the first node of a new cluster. It writes
// the node's identity and settings, and a Raft bootstrap snapshot (index 0) whose topology
// holds the new cluster with this node as its Primary and whose membership has this node as
// its one voter; `start` then elects it at once.
import { randomUUID } from 'node:crypto'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ClusterError } from '../../consensus/cluster-error.ts'
import { logIndex, nodeId, term, type NodeId } from '../../consensus/types.ts'
import { RaftLogStore } from '../../storage/raft-log-store.ts'
import { loadOrCreateIdentity } from '../identity.ts'
import { encodeCommand, TopologyMachine } from '../topology/index.ts'
import { dataPaths, ensureDataDirectory, readSettings, writeSettings } from './data-directory.ts'

/** Where a node listens when told nothing: every interface, a fixed port, so peers can find it again. */
export const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/4710']

export interface InitOptions {
  readonly data: string
  readonly name: string
  readonly listen: readonly string[]
  readonly site: string
}

export async function initCluster(
  options: InitOptions,
): Promise<{ clusterId: string; peerId: NodeId }> {
  await ensureDataDirectory(options.data)
  if ((await readSettings(options.data)) !== null) {
    throw ClusterError.refused(
      `${options.data} already holds a node; use another directory or start it`,
    )
  }
  const paths = dataPaths(options.data)
  const raftStore = await RaftLogStore.open(paths.raft)
  try {
    const restored = await raftStore.load()
    if (restored.snapshot !== null || restored.entries.length > 0 || restored.hardState.term > 0) {
      throw ClusterError.refused(`${options.data} already belongs to a cluster`)
    }
    const privateKey = await loadOrCreateIdentity(options.data)
    const peerId = nodeId(peerIdFromPrivateKey(privateKey).toString())
    const clusterId = randomUUID()
    const listen = options.listen.length > 0 ? [...options.listen] : DEFAULT_LISTEN
    const createCluster = {
      type: 'createCluster' as const,
      clusterId,
      peerId,
      name: options.name,
      site: options.site,
      addresses: [],
    }
    const machine = new TopologyMachine()
    const problem = machine.validate(createCluster, { leader: peerId, sender: peerId })
    if (problem !== null) throw problem
    machine.apply({
      index: logIndex(1),
      term: term(1),
      kind: 'command',
      data: encodeCommand(createCluster),
    })
    const bootstrap = {
      meta: { index: logIndex(0), term: term(0), membership: { voters: [peerId], learners: [] } },
      data: machine.snapshot(),
    }
    await new Promise<void>((resolve, reject) =>
      raftStore.write(
        {
          hardState: { term: term(0), vote: null, commit: logIndex(0) },
          entries: [],
          snapshot: bootstrap,
          compaction: null,
        },
        true,
        (error) => (error === null ? resolve() : reject(error)),
      ),
    )
    await writeSettings(options.data, {
      version: 1,
      name: options.name,
      site: options.site,
      listen,
      bootstrap: [],
    })
    return { clusterId, peerId }
  } finally {
    await raftStore.close()
  }
}
