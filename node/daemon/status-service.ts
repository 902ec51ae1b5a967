// `status`: every admitted node answers for itself over the `status` rpc (its Raft role and
// term, and how far each of its datasets has got); the asking node adds the answers up
// with the topology into one report. A node that does not answer in time is shown as
// unreachable, never waited for.
import { z } from 'zod'
import type { NodeId } from '../../consensus/types.ts'
import type { P2pNode } from '../p2p/p2p-node.ts'
import type { RaftDriver } from '../raft-driver.ts'
import type { DatasetProgress, ReplicationManager } from '../replication/replication-manager.ts'
import { isAdmitted, nodeByPeer, type TopologyMachine } from '../topology/index.ts'
import { callRpc, registerRpc } from '../wire/rpc.ts'
import type { NodeStatus, ReplicaLag, StatusReport } from './status-types.ts'

const STATUS_CALL_TIMEOUT_MS = 2_000

const datasetProgressSchema = z.strictObject({
  id: z.string().max(128),
  role: z.enum(['master', 'replica']),
  logLength: z.number().int().nonnegative(),
  completeLength: z.number().int().nonnegative(),
  bytesPending: z.number().nonnegative(),
  bytesFetched: z.number().nonnegative(),
  mirroredLength: z.number().int().nonnegative().nullable(),
})
const localStatusSchema = z.strictObject({
  peerId: z.string().max(128),
  raftRole: z.string().max(32),
  term: z.number().int().nonnegative(),
  leader: z.string().max(128).nullable(),
  datasets: z.array(datasetProgressSchema).max(1024),
})
type LocalStatus = z.infer<typeof localStatusSchema>

export interface StatusServiceOptions {
  readonly self: NodeId
  readonly p2p: P2pNode
  readonly driver: RaftDriver
  readonly topology: TopologyMachine
  readonly replication: ReplicationManager
}

export type { LocalStatus }

export class StatusService {
  readonly #options: StatusServiceOptions
  #unregister: (() => Promise<void>) | null = null

  constructor(options: StatusServiceOptions) {
    this.#options = options
  }

  async start(): Promise<void> {
    const { p2p, topology } = this.#options
    this.#unregister = await registerRpc(p2p, 'status', {
      request: z.strictObject({}),
      response: localStatusSchema,
      authorize: (peer) => isAdmitted(topology.state, peer as NodeId),
      handle: () => this.local(),
    })
  }

  async stop(): Promise<void> {
    await this.#unregister?.()
  }

  local(): LocalStatus {
    const { self, driver, replication } = this.#options
    const soft = driver.core.softState()
    return {
      peerId: self,
      raftRole: soft.role,
      term: soft.term,
      leader: soft.leader,
      datasets: replication.progress().map((progress: DatasetProgress) => ({
        id: progress.id,
        role: progress.role,
        logLength: progress.logLength,
        completeLength: progress.completeLength,
        bytesPending: progress.bytesPending,
        bytesFetched: progress.bytesFetched,
        mirroredLength: progress.mirroredLength,
      })),
    }
  }

  async report(): Promise<StatusReport> {
    const { self, p2p, topology } = this.#options
    const state = topology.state
    const answers = new Map<string, LocalStatus>([[self, this.local()]])
    await Promise.all(
      state.nodes
        .filter((node) => node.peerId !== self)
        .map(async (node) => {
          try {
            const answer = await callRpc(
              p2p,
              node.peerId,
              'status',
              {},
              { response: localStatusSchema, timeoutMs: STATUS_CALL_TIMEOUT_MS },
            )
            answers.set(node.peerId, answer)
          } catch {
            // Unreachable: shown as such.
          }
        }),
    )
    const nodes: NodeStatus[] = state.nodes.map((node) => {
      const answer = answers.get(node.peerId)
      return {
        name: node.name,
        peerId: node.peerId,
        addresses: node.peerId === self ? p2p.listenAddresses() : node.addresses,
        roles: node.roles,
        site: node.site,
        reachable: answer !== undefined,
        raftRole: answer?.raftRole ?? null,
        term: answer?.term ?? null,
      }
    })
    const replication: ReplicaLag[] = []
    for (const dataset of state.datasets) {
      const master = answers
        .get(dataset.master)
        ?.datasets.find((progress) => progress.id === dataset.id)
      for (const replica of dataset.replicas) {
        const progress = answers.get(replica.node)?.datasets.find((item) => item.id === dataset.id)
        const masterLength = master?.logLength ?? null
        const replicaLength = progress?.completeLength ?? null
        replication.push({
          dataset: dataset.id,
          replica: nodeByPeer(state, replica.node)?.name ?? replica.node,
          mirror: replica.mirror,
          masterLength,
          replicaLength,
          versionsBehind:
            masterLength === null || replicaLength === null
              ? null
              : Math.max(0, masterLength - replicaLength),
          bytesBehind: progress?.bytesPending ?? null,
          bytesFetched: progress?.bytesFetched ?? null,
          mirroredLength: progress?.mirroredLength ?? null,
        })
      }
    }
    const soft = this.#options.driver.core.softState()
    return {
      clusterId: state.clusterId,
      self: nodeByPeer(state, self)?.name ?? self,
      leader: soft.leader === null ? null : (nodeByPeer(state, soft.leader)?.name ?? soft.leader),
      term: soft.term,
      nodes,
      replication,
    }
  }
}
