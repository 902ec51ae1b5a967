// Topology changes: only the Raft leader (the active Primary) accepts them. On the leader a
// request is validated against the applied topology, proposed, and answered once it is
// applied (it is validated again there, so a command overtaken by another fails cleanly).
// Any other node forwards the request to the leader over the `admin` rpc.
import { z } from 'zod'
import { ClusterError } from '../../consensus/cluster-error.ts'
import type { LogIndex, NodeId } from '../../consensus/types.ts'
import type { ProposalOutcome, RaftDriver } from '../raft-driver.ts'
import type { P2pNode } from '../p2p/p2p-node.ts'
import { callRpc, registerRpc } from '../wire/rpc.ts'
import { commandSchema } from '../topology/commands.ts'
import {
  encodeCommand,
  isAdmitted,
  nodeByPeer,
  type ApplyResult,
  type TopologyCommand,
  type TopologyMachine,
} from '../topology/index.ts'

/** Apply results kept for answering proposals: far more than can be in flight at once. */
const APPLY_RESULTS_KEPT = 4096
const FORWARD_TIMEOUT_MS = 15_000

export const adminRequestSchema = z.discriminatedUnion('op', [
  z.strictObject({
    op: z.literal('admit'),
    name: z.string().max(256),
    roles: z.array(z.string().max(64)).max(8),
  }),
  z.strictObject({ op: z.literal('command'), command: commandSchema }),
])
export type AdminRequest = z.infer<typeof adminRequestSchema>
const adminResponseSchema = z.strictObject({ index: z.number().int().nonnegative() })

export interface AdminServiceOptions {
  readonly self: NodeId
  readonly p2p: P2pNode
  readonly driver: RaftDriver
  readonly topology: TopologyMachine
  /** Turns an `admit` request into the admitNode command, from the node's join request. */
  readonly admitCommand: (name: string, roles: readonly string[]) => TopologyCommand
  readonly onAdmitted: (name: string) => void
}

export class AdminService {
  readonly #options: AdminServiceOptions
  readonly #results = new Map<number, ApplyResult>()
  #unregister: (() => Promise<void>) | null = null

  constructor(options: AdminServiceOptions) {
    this.#options = options
    options.topology.onApplied((index, _command, result) => {
      this.#results.set(index, result)
      if (this.#results.size > APPLY_RESULTS_KEPT)
        this.#results.delete(this.#results.keys().next().value!)
    })
  }

  async start(): Promise<void> {
    const { p2p, topology } = this.#options
    this.#unregister = await registerRpc(p2p, 'admin', {
      request: adminRequestSchema,
      response: adminResponseSchema,
      authorize: (peer) => isAdmitted(topology.state, peer as NodeId),
      handle: (request, peer) => this.#executeHere(request, peer as NodeId),
    })
  }

  async stop(): Promise<void> {
    await this.#unregister?.()
  }

  /** The leader's peer id, or a NOT_LEADER error that says no Primary is reachable. */
  leader(): NodeId {
    const leader = this.#options.driver.core.softState().leader
    if (leader === null) {
      throw ClusterError.notLeader(
        'no Primary is reachable right now (Raft has no leader); try again in a moment',
      )
    }
    return leader
  }

  /** Executes a request from this node: here if it leads, else on the leader. */
  async execute(request: AdminRequest): Promise<{ index: number }> {
    const leader = this.leader()
    if (leader === this.#options.self) return this.#executeHere(request, this.#options.self)
    return callRpc(this.#options.p2p, leader, 'admin', request, {
      response: adminResponseSchema,
      timeoutMs: FORWARD_TIMEOUT_MS,
    })
  }

  async #executeHere(request: AdminRequest, sender: NodeId): Promise<{ index: number }> {
    const { self, topology, driver } = this.#options
    const leader = this.leader()
    if (leader !== self) {
      const name = nodeByPeer(topology.state, leader)?.name ?? leader
      throw ClusterError.notLeader(`this node is not the active Primary; ${name} is`)
    }
    const command =
      request.op === 'admit'
        ? this.#options.admitCommand(request.name, request.roles)
        : request.command
    const problem = topology.validate(command, { leader: self, sender })
    if (problem !== null) throw problem
    const index = await new Promise<LogIndex>((resolve, reject) =>
      driver.propose(encodeCommand(command), (outcome) =>
        outcome.ok ? resolve(outcome.index) : reject(proposalError(outcome)),
      ),
    )
    const result = this.#results.get(index)
    if (result !== undefined && !result.ok) throw result.error
    if (request.op === 'admit') this.#options.onAdmitted(request.name)
    return { index }
  }
}

function proposalError(outcome: Extract<ProposalOutcome, { ok: false }>): ClusterError {
  switch (outcome.code) {
    case 'NOT_LEADER':
    case 'SUPERSEDED':
      return ClusterError.notLeader(
        'leadership changed while the change was being made; check and try again',
      )
    case 'TRANSFER_IN_PROGRESS':
      return ClusterError.refused('leadership is being handed over; try again in a moment')
    case 'TOO_MANY_UNCOMMITTED':
      return ClusterError.refused('too many changes are waiting to commit; try again in a moment')
    case 'STOPPED':
      return ClusterError.closed('the node is stopping')
    default:
      return ClusterError.refused(`the change was refused: ${outcome.code}`)
  }
}
