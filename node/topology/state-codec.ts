// A topology as snapshot bytes: canonical JSON (RFC 8785) in a versioned envelope with the
// SHA-256 of the topology's own canonical text, so that every node that applied the same
// commands writes the same bytes and any damaged byte is noticed. Decoding trusts nothing:
// after the checksum and the schema it rebuilds the state by replaying it as commands
// through the same validation as the log, then requires the rebuilt state to encode to the
// very bytes it was given. Any failure is a ClusterError CORRUPT_STORE.
import { createHash } from 'node:crypto'
import * as z from 'zod'
import { assert } from '../../consensus/assert.ts'
import { ClusterError } from '../../consensus/cluster-error.ts'
import type { NodeId } from '../../consensus/types.ts'
import { retentionPolicySchema, type TopologyCommand } from './commands.ts'
import {
  absolutePathSchema,
  addressListSchema,
  datasetKeySchema,
  describeIssues,
  nameSchema,
  peerIdSchema,
  roleListSchema,
} from './fields.ts'
import { canonicalJson } from './json-value.ts'
import {
  DATASETS_MAX,
  NODES_MAX,
  REPLICAS_PER_DATASET_MAX,
  TOPOLOGY_SNAPSHOT_BYTES_MAX,
} from './limits.ts'
import { executeCommand } from './transition.ts'
import { EMPTY_TOPOLOGY, type TopologyState } from './topology-state.ts'
import { LOG_CONTEXT } from './validate.ts'

export const TOPOLOGY_FORMAT_VERSION = 1

const envelopeSchema = z.strictObject({
  version: z.number(),
  sha256: z.string(),
  topology: z.unknown(),
})

const topologySchema = z.strictObject({
  clusterId: nameSchema.nullable(),
  nodes: z
    .array(
      z.strictObject({
        peerId: peerIdSchema,
        name: nameSchema,
        roles: roleListSchema,
        site: nameSchema,
        addresses: addressListSchema,
      }),
    )
    .max(NODES_MAX),
  datasets: z
    .array(
      z.strictObject({
        id: nameSchema,
        master: peerIdSchema,
        path: absolutePathSchema,
        replicas: z
          .array(z.strictObject({ node: peerIdSchema, mirror: absolutePathSchema.nullable() }))
          .max(REPLICAS_PER_DATASET_MAX),
        key: datasetKeySchema.nullable(),
        retention: retentionPolicySchema,
      }),
    )
    .max(DATASETS_MAX),
})

type TopologyRecord = z.infer<typeof topologySchema>

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })
const utf8Encoder = new TextEncoder()

export function encodeTopology(state: TopologyState): Uint8Array {
  const topology = { clusterId: state.clusterId, nodes: state.nodes, datasets: state.datasets }
  const bytes = utf8Encoder.encode(
    canonicalJson({ version: TOPOLOGY_FORMAT_VERSION, sha256: checksum(topology), topology }),
  )
  assert(
    bytes.length <= TOPOLOGY_SNAPSHOT_BYTES_MAX,
    'a topology within its bounds fits a snapshot',
  )
  return bytes
}

export function decodeTopology(bytes: Uint8Array): TopologyState {
  if (bytes.length > TOPOLOGY_SNAPSHOT_BYTES_MAX)
    throw corrupt(`it is ${bytes.length} bytes, over ${TOPOLOGY_SNAPSHOT_BYTES_MAX}`)
  let json: unknown
  try {
    json = JSON.parse(strictUtf8.decode(bytes))
  } catch (error) {
    throw corrupt(`it is not JSON text (${(error as Error).message})`)
  }
  const envelope = envelopeSchema.safeParse(json)
  if (!envelope.success) throw corrupt(describeIssues(envelope.error))
  const { version, sha256, topology } = envelope.data
  if (version !== TOPOLOGY_FORMAT_VERSION)
    throw corrupt(`format ${version} is not supported (this node reads ${TOPOLOGY_FORMAT_VERSION})`)
  if (checksum(topology) !== sha256) throw corrupt('its checksum does not match its content')
  const parsed = topologySchema.safeParse(topology)
  if (!parsed.success) throw corrupt(describeIssues(parsed.error))
  let state = EMPTY_TOPOLOGY
  for (const command of replayCommands(parsed.data)) {
    const outcome = executeCommand(state, command, LOG_CONTEXT)
    if (!outcome.ok) throw corrupt(`replaying ${command.type}: ${outcome.error.message}`)
    state = outcome.state
  }
  if (!sameBytes(encodeTopology(state), bytes)) throw corrupt('it is not in canonical form')
  return state
}

/** Commands that build the snapshot's state from nothing: the primary, the other nodes, the datasets. */
function replayCommands(snapshot: TopologyRecord): TopologyCommand[] {
  if (snapshot.clusterId === null) {
    if (snapshot.nodes.length > 0 || snapshot.datasets.length > 0)
      throw corrupt('it has nodes or datasets but no cluster id')
    return []
  }
  const primaries = snapshot.nodes.filter((node) => node.roles.includes('primary'))
  const [primary] = primaries
  if (primary === undefined || primaries.length > 1)
    throw corrupt(`it has ${primaries.length} primaries instead of one`)
  const nameOf = (peerId: NodeId): string => {
    const node = snapshot.nodes.find((candidate) => candidate.peerId === peerId)
    if (node === undefined) throw corrupt(`a dataset names peer ${peerId}, which is not admitted`)
    return node.name
  }
  const commands: TopologyCommand[] = [
    { type: 'createCluster', clusterId: snapshot.clusterId, ...pick(primary) },
    { type: 'setRoles', name: primary.name, roles: primary.roles },
  ]
  for (const node of snapshot.nodes)
    if (node !== primary) commands.push({ type: 'admitNode', ...pick(node), roles: node.roles })
  for (const dataset of snapshot.datasets) {
    commands.push({
      type: 'addDataset',
      id: dataset.id,
      master: nameOf(dataset.master),
      path: dataset.path,
      replicas: dataset.replicas.map((replica) => ({
        name: nameOf(replica.node),
        mirror: replica.mirror,
      })),
    })
    if (dataset.retention !== null)
      commands.push({ type: 'setRetention', id: dataset.id, policy: dataset.retention })
    if (dataset.key !== null)
      commands.push({ type: 'setDatasetKey', id: dataset.id, key: dataset.key, by: dataset.master })
  }
  return commands
}

function pick(node: TopologyRecord['nodes'][number]): {
  peerId: NodeId
  name: string
  site: string
  addresses: string[]
} {
  return { peerId: node.peerId, name: node.name, site: node.site, addresses: node.addresses }
}

/** Of the canonical text; the value is parsed JSON or a state, so it has one. */
function checksum(topology: unknown): string {
  return createHash('sha256').update(canonicalJson(topology)).digest('hex')
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)
}

function corrupt(reason: string): ClusterError {
  return ClusterError.corruptStore(`damaged topology snapshot: ${reason}`)
}
