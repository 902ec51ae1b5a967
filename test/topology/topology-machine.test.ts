// The topology as the Raft state machine: applying entries, refusing what became invalid,
// reaching byte-identical snapshots on every node, and restoring only undamaged snapshots.
import { createHash } from 'node:crypto'
import canonicalize from 'canonicalize'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { encodeConfigChange } from '../../consensus/codec.ts'
import { logIndex, term, type Entry, type Snapshot } from '../../consensus/types.ts'
import type { TopologyCommand } from '../../node/topology/commands.ts'
import { nodeByName, datasetById } from '../../node/topology/queries.ts'
import { decodeTopology, encodeTopology } from '../../node/topology/state-codec.ts'
import { TopologyMachine, type ApplyResult } from '../../node/topology/topology-machine.ts'
import { EMPTY_TOPOLOGY } from '../../node/topology/topology-state.ts'
import {
  EXAMPLE_COMMANDS,
  admit,
  assertClusterError,
  catchError,
  commandEntry,
  exampleCluster,
  peer,
} from './topology-fixture.ts'

const KEY = '5a'.repeat(32)

/** The example cluster, then commands of every kind, some of which an earlier one made invalid. */
const HISTORY: readonly TopologyCommand[] = [
  ...EXAMPLE_COMMANDS,
  admit('eta', ['replica'], 'lyon'),
  // Two admins each promoted a node to secondary; the second command arrives too late.
  { type: 'setRoles', name: 'delta', roles: ['replica'] },
  { type: 'setRoles', name: 'eta', roles: ['secondary'] },
  { type: 'setRoles', name: 'zeta', roles: ['secondary'] },
  { type: 'setDatasetKey', id: 'mail', key: KEY, by: peer('beta') },
  { type: 'setRetention', id: 'mail', policy: { window: '1h', thin: ['hourly', 'daily'] } },
  { type: 'setAddresses', peerId: peer('eta'), addresses: ['/ip4/127.0.0.1/tcp/4010'] },
  { type: 'setReplicas', id: 'home', replicas: [{ name: 'eta', mirror: '/srv/home' }] },
  // Epsilon no longer replicates anything, so it can go; removing it twice fails the second time.
  { type: 'removeNode', name: 'epsilon' },
  { type: 'removeNode', name: 'epsilon' },
  { type: 'removeDataset', id: 'home' },
]

function entriesOf(commands: readonly TopologyCommand[]): Entry[] {
  const entries: Entry[] = [
    { index: logIndex(1), term: term(1), kind: 'noop', data: new Uint8Array(0) },
  ]
  for (const command of commands) entries.push(commandEntry(entries.length + 1, command))
  return entries
}

function machineAfter(entries: readonly Entry[]): TopologyMachine {
  const machine = new TopologyMachine()
  for (const entry of entries) machine.apply(entry)
  return machine
}

test('applies command entries in order and tells listeners what happened', () => {
  const machine = new TopologyMachine()
  const heard: { index: number; type: string | null; result: ApplyResult }[] = []
  machine.onApplied((index, command, result, state) => {
    assert.is(state, machine.state)
    heard.push({ index, type: command?.type ?? null, result })
  })
  const entries = entriesOf(HISTORY)
  for (const entry of entries) machine.apply(entry)
  assert.is(machine.appliedIndex, entries.length)
  assert.is(heard.length, HISTORY.length, 'the noop entry is not a command')
  const refused = heard.filter((event) => !event.result.ok)
  assert.equal(
    refused.map((event) => event.type),
    ['setRoles', 'removeNode'],
  )
  const [late, twice] = refused
  if (late?.result.ok === false)
    assertClusterError(late.result.error, 'REFUSED', /'eta' is already the secondary/)
  if (twice?.result.ok === false)
    assertClusterError(twice.result.error, 'NOT_FOUND', /unknown node 'epsilon'/)
  assert.equal(
    nodeByName(machine.state, 'zeta')?.roles,
    ['replica'],
    'the late command changed nothing',
  )
  assert.equal(nodeByName(machine.state, 'eta')?.roles, ['secondary'])
  assert.is(datasetById(machine.state, 'mail')?.key, KEY)
  assert.is(datasetById(machine.state, 'home'), null)
})

test('an entry that does not decode changes nothing and is reported', () => {
  const machine = machineAfter(entriesOf(EXAMPLE_COMMANDS))
  const before = machine.snapshot()
  let heard: { command: unknown; result: ApplyResult } | null = null
  machine.onApplied((_index, command, result) => (heard = { command, result }))
  const next = machine.appliedIndex + 1
  machine.apply({
    index: logIndex(next),
    term: term(2),
    kind: 'command',
    data: new TextEncoder().encode('{"version":1,"command":{"type":"nuke"}}'),
  })
  assert.ok(heard)
  const { command, result } = heard as { command: unknown; result: ApplyResult }
  assert.is(command, null)
  if (result.ok) assert.unreachable('an undecodable entry is refused')
  else assertClusterError(result.error, 'BAD_MESSAGE', /Invalid discriminator/)
  assert.equal(machine.snapshot(), before)
  assert.is(machine.appliedIndex, next)
})

test('noop and config entries are skipped; entries out of order are a programmer error', () => {
  const machine = new TopologyMachine()
  let heard = 0
  machine.onApplied(() => heard++)
  machine.apply({ index: logIndex(1), term: term(1), kind: 'noop', data: new Uint8Array(0) })
  machine.apply({
    index: logIndex(2),
    term: term(1),
    kind: 'config',
    data: encodeConfigChange({ type: 'addLearner', node: peer('beta') }),
  })
  assert.is(heard, 0)
  assert.is(machine.appliedIndex, 2)
  assert.equal(machine.state, EMPTY_TOPOLOGY)
  assert.throws(
    () => machine.apply(commandEntry(4, admit('beta', ['replica']))),
    /entries are applied in order: 4 after 2/,
  )
})

test('a listener can stop listening', () => {
  const machine = new TopologyMachine()
  let heard = 0
  const stop = machine.onApplied(() => heard++)
  const entries = entriesOf(EXAMPLE_COMMANDS)
  machine.apply(entries[0]!)
  machine.apply(entries[1]!)
  stop()
  machine.apply(entries[2]!)
  assert.is(heard, 1)
})

test('two machines fed the same entries reach byte-identical snapshots', () => {
  const entries = entriesOf(HISTORY)
  const first = machineAfter(entries)
  const second = machineAfter(entries)
  assert.equal(first.snapshot(), second.snapshot())
  assert.is(
    createHash('sha256').update(first.snapshot()).digest('hex'),
    createHash('sha256').update(second.snapshot()).digest('hex'),
  )
})

test('the same topology reached in another order has the same bytes', () => {
  const [create, ...rest] = EXAMPLE_COMMANDS
  const nodesFirst = rest.filter((command) => command.type === 'admitNode')
  const datasets = rest.filter((command) => command.type !== 'admitNode')
  const forward = machineAfter(entriesOf([create!, ...nodesFirst, ...datasets]))
  const backward = machineAfter(
    entriesOf([create!, ...[...nodesFirst].reverse(), ...[...datasets].reverse()]),
  )
  const retained = (order: Record<string, unknown>): TopologyCommand => ({
    type: 'setRetention',
    id: 'mail',
    policy: order,
  })
  forward.apply(commandEntry(forward.appliedIndex + 1, retained({ a: 1, b: { c: 2, d: 3 } })))
  backward.apply(commandEntry(backward.appliedIndex + 1, retained({ b: { d: 3, c: 2 }, a: 1 })))
  assert.equal(forward.snapshot(), backward.snapshot())
})

test('snapshot and restore round-trip, and applying goes on after the snapshot index', () => {
  const entries = entriesOf(HISTORY)
  const source = machineAfter(entries)
  const snapshot: Snapshot = {
    meta: {
      index: source.appliedIndex,
      term: term(1),
      membership: { voters: [peer('alpha')], learners: [] },
    },
    data: source.snapshot(),
  }
  const restored = new TopologyMachine()
  let heardIndex = 0
  restored.onRestored((index, state) => {
    heardIndex = index
    assert.equal(state, source.state)
  })
  restored.restore(snapshot)
  assert.is(heardIndex, source.appliedIndex)
  assert.is(restored.appliedIndex, source.appliedIndex)
  assert.equal(restored.state, source.state)
  assert.equal(restored.snapshot(), source.snapshot())
  const next = commandEntry(restored.appliedIndex + 1, admit('theta', ['replica']))
  restored.apply(next)
  source.apply(next)
  assert.equal(restored.snapshot(), source.snapshot())
  // The empty topology too.
  assert.equal(decodeTopology(encodeTopology(EMPTY_TOPOLOGY)), EMPTY_TOPOLOGY)
})

test('every single damaged byte and every truncation of a snapshot is CORRUPT_STORE', () => {
  const bytes = encodeTopology(exampleCluster())
  const machine = machineAfter(entriesOf(EXAMPLE_COMMANDS.slice(0, 2)))
  const before = machine.snapshot()
  const meta = { index: logIndex(99), term: term(1), membership: { voters: [], learners: [] } }
  for (let position = 0; position < bytes.length; position++) {
    for (const damage of [0x01, 0x20]) {
      const damaged = Uint8Array.from(bytes)
      damaged[position]! ^= damage
      let error: unknown = null
      try {
        machine.restore({ meta, data: damaged })
      } catch (caught) {
        error = caught
      }
      assertClusterError(error, 'CORRUPT_STORE', /^damaged topology snapshot: /)
    }
  }
  for (let length = 0; length < bytes.length; length += 7)
    assert.throws(() => decodeTopology(bytes.subarray(0, length)), /damaged topology snapshot/)
  assert.equal(machine.snapshot(), before, 'a failed restore leaves the state as it was')
  assert.is(machine.appliedIndex, 3)
})

/** Snapshot bytes in the documented format around any topology record, with a correct checksum. */
function sealed(topology: unknown, version = 1): Uint8Array {
  const sha256 = createHash('sha256').update(canonicalize(topology)!).digest('hex')
  return new TextEncoder().encode(canonicalize({ version, sha256, topology })!)
}

test('a snapshot with a correct checksum but an impossible topology is CORRUPT_STORE', () => {
  const good = JSON.parse(new TextDecoder().decode(encodeTopology(exampleCluster()))).topology
  assert.equal(decodeTopology(sealed(good)), exampleCluster(), 'the format is as documented')
  // The damage is done to parsed JSON, whose shape the test knows better than any type would.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const edit = (change: (topology: any) => void): unknown => {
    const copy = structuredClone(good)
    change(copy)
    return copy
  }
  const cases: [unknown, RegExp][] = [
    [good, /format 2 is not supported/],
    [edit((t) => (t.nodes[3].roles = ['primary'])), /2 primaries instead of one/],
    [edit((t) => (t.nodes[0].roles = ['replica'])), /0 primaries instead of one/],
    [
      edit((t) => (t.nodes[1].roles = ['secondary'])),
      /replaying admitNode: 'beta' is already the secondary/,
    ],
    [edit((t) => (t.nodes[2].name = 'beta')), /the name 'beta' is taken/],
    [
      edit((t) => (t.datasets[0].master = peer('nobody'))),
      /a dataset names peer 12D3KooWnobody, which is not admitted/,
    ],
    [
      edit((t) => {
        t.datasets[1].master = peer('alpha')
        t.datasets[1].path = '/srv/home/mail'
      }),
      /on 'alpha', the source of dataset 'mail' \(\/srv\/home\/mail\) lies inside the source of dataset 'home'/,
    ],
    [
      edit((t) => t.datasets[0].replicas.push({ node: peer('alpha'), mirror: null })),
      /masters dataset 'home' and cannot also be its replica/,
    ],
    [edit((t) => (t.datasets[0].key = 'A'.repeat(64))), /key: must be 64 lowercase hex digits/],
    [edit((t) => t.nodes.reverse()), /not in canonical form/],
    [edit((t) => (t.clusterId = null)), /nodes or datasets but no cluster id/],
    [edit((t) => (t.nodes[0].extra = 1)), /Unrecognized key: "extra"/],
    [
      edit((t) => (t.datasets[0].retention = { deep: [[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]] })),
      /nested deeper than 16/,
    ],
  ]
  for (const [index, [topology, message]] of cases.entries())
    assertClusterError(
      catchError(() => decodeTopology(sealed(topology, index === 0 ? 2 : 1))),
      'CORRUPT_STORE',
      message,
    )
  assertClusterError(
    catchError(() => decodeTopology(new Uint8Array(200).fill(0xff))),
    'CORRUPT_STORE',
    /not JSON text/,
  )
})

test.run()
