// Shared set-up for the topology tests: peer ids, command builders, the design's example
// cluster (one primary, two repli-masters, three replicas of which one is the secondary)
// and a check that an error has the expected code and message.
import * as assert from 'uvu/assert'
import { isClusterError, type ClusterErrorCode } from '../../consensus/cluster-error.ts'
import { logIndex, nodeId, term, type Entry, type NodeId } from '../../consensus/types.ts'
import { encodeCommand, type TopologyCommand } from '../../node/topology/commands.ts'
import {
  EMPTY_TOPOLOGY,
  type NodeRole,
  type TopologyState,
} from '../../node/topology/topology-state.ts'
import { executeCommand } from '../../node/topology/transition.ts'
import { LOG_CONTEXT, type ValidationContext } from '../../node/topology/validate.ts'

/** A peer id shaped like libp2p's, derived from a node name. */
export const peer = (name: string): NodeId => nodeId(`12D3KooW${name.replace(/[^A-Za-z0-9]/g, '')}`)

export const createCluster = (name = 'alpha'): TopologyCommand => ({
  type: 'createCluster',
  clusterId: 'test-cluster',
  peerId: peer(name),
  name,
  site: 'paris',
  addresses: [`/ip4/127.0.0.1/tcp/4001/p2p/${peer(name)}`],
})

export const admit = (
  name: string,
  roles: NodeRole[],
  site = 'paris',
): Extract<TopologyCommand, { type: 'admitNode' }> => ({
  type: 'admitNode',
  peerId: peer(name),
  name,
  roles,
  site,
  addresses: [],
})

/** Applies commands in order, as the log would; fails the test if one is refused. */
export function build(
  commands: readonly TopologyCommand[],
  state: TopologyState = EMPTY_TOPOLOGY,
): TopologyState {
  for (const command of commands) {
    const outcome = executeCommand(state, command, LOG_CONTEXT)
    if (!outcome.ok) assert.unreachable(`${command.type} refused: ${outcome.error.message}`)
    else state = outcome.state
  }
  return state
}

export const EXAMPLE_COMMANDS: readonly TopologyCommand[] = [
  createCluster('alpha'),
  admit('beta', ['repli-master']),
  admit('gamma', ['repli-master', 'replica'], 'lyon'),
  admit('delta', ['secondary']),
  admit('epsilon', ['replica']),
  admit('zeta', ['replica'], 'lyon'),
  {
    type: 'addDataset',
    id: 'home',
    master: 'alpha',
    path: '/srv/home',
    // The secondary mirrors the primary's datasets at identical paths.
    replicas: [
      { name: 'delta', mirror: '/srv/home' },
      { name: 'epsilon', mirror: null },
    ],
  },
  {
    type: 'addDataset',
    id: 'mail',
    master: 'beta',
    path: '/var/mail',
    replicas: [
      { name: 'gamma', mirror: '/mirror/mail' },
      { name: 'zeta', mirror: null },
    ],
  },
]

export const exampleCluster = (): TopologyState => build(EXAMPLE_COMMANDS)

/** The context on the leader: alpha, the primary, proposing what an admin asked. */
export const ON_LEADER: ValidationContext = { leader: peer('alpha'), sender: peer('alpha') }

export function assertClusterError(error: unknown, code: ClusterErrorCode, message: RegExp): void {
  if (!isClusterError(error))
    return assert.unreachable(`expected a ClusterError, got ${String(error)}`)
  assert.is(error.code, code, error.message)
  assert.match(error.message, message)
  assert.not.match(error.message, /\n/)
}

export const commandEntry = (index: number, command: TopologyCommand): Entry => ({
  index: logIndex(index),
  term: term(1),
  kind: 'command',
  data: encodeCommand(command),
})

export function catchError(body: () => unknown): unknown {
  try {
    body()
  } catch (error) {
    return error
  }
  return assert.unreachable('expected an error')
}
