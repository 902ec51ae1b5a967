// Joining: a node that belongs to no cluster asks the peers it can reach (bootstrap
// addresses, or mDNS on a LAN) to let it in. Members send it to the leader; the leader
// lists it as pending until an operator admits it (`clusterreplica admit NAME --role …`).
// Until then the newcomer accepts Raft messages only from the leader that answered it, so
// that the leader can send it the log once it is admitted.
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import { ClusterError } from '../../consensus/cluster-error.ts'
import type { NodeId } from '../../consensus/types.ts'
import type { P2pNode } from '../p2p/p2p-node.ts'
import { callRpc, registerRpc } from '../wire/rpc.ts'
import {
  isAdmitted,
  nodeByName,
  nodeByPeer,
  type TopologyCommand,
  type TopologyMachine,
} from '../topology/index.ts'
import type { PendingNode } from './status-types.ts'

/** Nodes waiting to be admitted, kept by the leader; the oldest give way past this. */
export const PENDING_NODES_MAX = 256
/** A request not repeated for this long is forgotten (the node went away). */
const PENDING_TTL_MS = 10 * 60_000
const JOIN_RETRY_MS = 2_000
const JOIN_CALL_TIMEOUT_MS = 5_000

const joinRequestSchema = z.strictObject({
  name: z.string().max(64),
  site: z.string().max(64),
  addresses: z.array(z.string().max(256)).max(16),
})
const joinAnswerSchema = z.strictObject({
  state: z.enum(['pending', 'admitted', 'redirect']),
  leader: z.string().max(128).nullable(),
  leaderAddresses: z.array(z.string().max(256)).max(16),
})
type JoinAnswer = z.infer<typeof joinAnswerSchema>

export interface JoinServiceOptions {
  readonly self: NodeId
  readonly name: string
  readonly site: string
  readonly p2p: P2pNode
  readonly topology: TopologyMachine
  readonly leader: () => NodeId | null
  readonly log: (line: string) => void
  readonly nowMs?: () => number
}

export class JoinService {
  readonly #options: JoinServiceOptions
  readonly #pending = new Map<string, PendingNode>()
  /** Peers that answered this node's join request: the cluster it is joining. */
  readonly #trusted = new Set<string>()
  readonly #abort = new AbortController()
  #unregister: (() => Promise<void>) | null = null
  #lastState: JoinAnswer['state'] | null = null

  constructor(options: JoinServiceOptions) {
    this.#options = options
  }

  async start(): Promise<void> {
    this.#unregister = await registerRpc(this.#options.p2p, 'join', {
      request: joinRequestSchema,
      response: joinAnswerSchema,
      authorize: () => true,
      handle: (request, peer) => this.#answer(request, peer as NodeId),
    })
    void this.#askUntilAdmitted(this.#abort.signal)
  }

  async stop(): Promise<void> {
    this.#abort.abort()
    await this.#unregister?.()
  }

  /** Whether Raft messages from `peer` are welcome although it is not (yet) known to the topology. */
  trusts(peer: string): boolean {
    return this.#trusted.has(peer)
  }

  pending(): PendingNode[] {
    this.#forgetStale()
    return [...this.#pending.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  admitCommand(name: string, roles: readonly string[]): TopologyCommand {
    if (nodeByName(this.#options.topology.state, name) !== null) {
      throw ClusterError.refused(
        `${name} is already a member of the cluster (see: clusterreplica status)`,
      )
    }
    this.#forgetStale()
    const waiting = this.#pending.get(name)
    if (waiting === undefined) {
      throw ClusterError.notFound(
        `no node named ${name} is waiting to be admitted (see: clusterreplica pending)`,
      )
    }
    return {
      type: 'admitNode',
      peerId: waiting.peerId as NodeId,
      name,
      roles: roles as ('primary' | 'secondary' | 'repli-master' | 'replica')[],
      site: waiting.site,
      addresses: [...waiting.addresses],
    }
  }

  forget(name: string): void {
    this.#pending.delete(name)
  }

  #now(): number {
    return (this.#options.nowMs ?? Date.now)()
  }

  #forgetStale(): void {
    const now = this.#now()
    for (const [name, node] of this.#pending)
      if (now - node.askedAtMs > PENDING_TTL_MS) this.#pending.delete(name)
  }

  #answer(request: z.infer<typeof joinRequestSchema>, peer: NodeId): JoinAnswer {
    const { topology, self } = this.#options
    const state = topology.state
    const leader = this.#options.leader()
    const leaderAddresses = leader === null ? [] : [...(nodeByPeer(state, leader)?.addresses ?? [])]
    if (isAdmitted(state, peer)) return { state: 'admitted', leader, leaderAddresses }
    if (state.clusterId === null) throw ClusterError.refused('this node belongs to no cluster yet')
    if (leader === null)
      throw ClusterError.notLeader('the cluster has no leader right now; try again')
    if (leader !== self) return { state: 'redirect', leader, leaderAddresses }
    const taken = nodeByName(state, request.name)
    if (taken !== null)
      throw ClusterError.refused(`the name ${request.name} is taken by another node`)
    this.#forgetStale()
    const isNew = this.#pending.get(request.name)?.peerId !== peer
    for (const [name, node] of this.#pending) if (node.peerId === peer) this.#pending.delete(name)
    if (this.#pending.size >= PENDING_NODES_MAX)
      this.#pending.delete(this.#pending.keys().next().value!)
    this.#pending.set(request.name, { ...request, peerId: peer, askedAtMs: this.#now() })
    if (isNew) {
      this.#options.log(
        `${request.name} (${peer}) asks to join; admit it with: clusterreplica admit ${request.name} --role replica --data DIR`,
      )
    }
    return { state: 'pending', leader: self, leaderAddresses: [] }
  }

  /** While this node is not in the topology, asks every connected peer to let it in. */
  async #askUntilAdmitted(signal: AbortSignal): Promise<void> {
    const { p2p, topology, self, name, site } = this.#options
    while (!signal.aborted) {
      if (!isAdmitted(topology.state, self)) {
        const request = { name, site, addresses: p2p.listenAddresses().slice(0, 16) }
        for (const peer of p2p.connectedPeers()) {
          try {
            const answer = await callRpc(p2p, peer, 'join', request, {
              response: joinAnswerSchema,
              signal,
              timeoutMs: JOIN_CALL_TIMEOUT_MS,
            })
            this.#heard(peer, answer)
          } catch (error) {
            if (signal.aborted) return
            this.#report(`asking ${peer} to join: ${(error as Error).message}`)
          }
        }
      }
      await sleep(JOIN_RETRY_MS, undefined, { signal }).catch(() => undefined)
    }
  }

  #heard(peer: string, answer: JoinAnswer): void {
    const { p2p } = this.#options
    if (answer.state === 'redirect' && answer.leader !== null) {
      // The leader may not be connected yet: dial it so the next round asks it directly.
      for (const address of answer.leaderAddresses.slice(0, 4))
        void p2p.dial(address).catch(() => undefined)
      return
    }
    this.#trusted.add(peer)
    if (answer.state !== this.#lastState) {
      this.#lastState = answer.state
      this.#options.log(
        answer.state === 'pending'
          ? `waiting to be admitted by ${peer}; on the Primary run: clusterreplica admit ${this.#options.name} --role replica --data DIR`
          : `admitted by the cluster; waiting for its log from ${peer}`,
      )
    }
  }

  #lastReport = ''
  #report(line: string): void {
    if (line === this.#lastReport) return
    this.#lastReport = line
    this.#options.log(line)
  }
}
