// Commands on the wire: every kind round-trips, the bytes are canonical, and hostile bytes
// (garbage, truncations, oversize, wrong version, unknown fields) are BAD_MESSAGE.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import {
  COMMAND_FORMAT_VERSION,
  decodeCommand,
  encodeCommand,
  type TopologyCommand,
} from '../../node/topology/commands.ts'
import {
  ADDRESSES_PER_NODE_MAX,
  ADDRESS_LENGTH_MAX,
  COMMAND_BYTES_MAX,
  NAME_LENGTH_MAX,
  PATH_BYTES_MAX,
  REPLICAS_PER_DATASET_MAX,
} from '../../node/topology/limits.ts'
import {
  EXAMPLE_COMMANDS,
  admit,
  assertClusterError,
  catchError,
  peer,
} from './topology-fixture.ts'

const text = new TextEncoder()

const EVERY_KIND: readonly TopologyCommand[] = [
  ...EXAMPLE_COMMANDS,
  { type: 'setRoles', name: 'zeta', roles: ['replica', 'repli-master'] },
  { type: 'removeNode', name: 'zeta' },
  { type: 'setAddresses', peerId: peer('zeta'), addresses: ['/ip4/127.0.0.1/tcp/1'] },
  { type: 'removeDataset', id: 'mail' },
  { type: 'setReplicas', id: 'mail', replicas: [{ name: 'zeta', mirror: '/m' }] },
  { type: 'setRetention', id: 'mail', policy: { hourly: 24, pinned: ['x'], nested: { é: 1.5 } } },
  { type: 'setRetention', id: 'mail', policy: null },
  { type: 'setDatasetKey', id: 'mail', key: '0f'.repeat(32), by: peer('beta') },
]

test('every kind of command decodes to what was encoded', () => {
  const kinds = new Set<string>()
  for (const command of EVERY_KIND) {
    kinds.add(command.type)
    assert.equal(decodeCommand(encodeCommand(command)), command)
  }
  assert.is(kinds.size, 10, 'all ten kinds are covered')
})

test('the bytes are canonical JSON in a versioned envelope, whatever the key order', () => {
  const bytes = encodeCommand({ type: 'removeNode', name: 'zeta' })
  assert.is(
    new TextDecoder().decode(bytes),
    `{"command":{"name":"zeta","type":"removeNode"},"version":${COMMAND_FORMAT_VERSION}}`,
  )
  const reordered = { name: 'zeta', type: 'removeNode' } as const
  assert.equal(encodeCommand(reordered), bytes)
})

test('the largest valid command fits the bound', () => {
  const longPath = (tag: string): string => `/${tag}${'\\"'.repeat((PATH_BYTES_MAX - 8) / 2)}`
  const command: TopologyCommand = {
    type: 'addDataset',
    id: 'd'.repeat(NAME_LENGTH_MAX),
    master: 'm'.repeat(NAME_LENGTH_MAX),
    path: longPath('source'),
    replicas: Array.from({ length: REPLICAS_PER_DATASET_MAX }, (_, index) => ({
      name: `${index}`.padStart(NAME_LENGTH_MAX, 'r'),
      mirror: longPath(`m${index}`),
    })),
  }
  const bytes = encodeCommand(command)
  assert.ok(bytes.length > COMMAND_BYTES_MAX / 2, `${bytes.length} bytes`)
  assert.equal(decodeCommand(bytes), command)
  const addresses: TopologyCommand = {
    ...admit('n'.repeat(NAME_LENGTH_MAX), ['replica']),
    addresses: Array.from({ length: ADDRESSES_PER_NODE_MAX }, (_, index) =>
      `/${index}`.padEnd(ADDRESS_LENGTH_MAX, 'a'),
    ),
  }
  assert.equal(decodeCommand(encodeCommand(addresses)), addresses)
})

test('encoding refuses an invalid command', () => {
  assertClusterError(
    catchError(() => encodeCommand(admit('bad name', ['replica']))),
    'BAD_ARGUMENT',
    /invalid admitNode command: name: must be/,
  )
})

test('garbage, truncated, oversized, non-UTF-8 and hostile bytes are BAD_MESSAGE', () => {
  const valid = encodeCommand(EXAMPLE_COMMANDS[6]!)
  const envelope = (command: unknown, version: unknown = COMMAND_FORMAT_VERSION): Uint8Array =>
    text.encode(JSON.stringify({ version, command }))
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(0), /not JSON text/],
    [text.encode('garbage'), /not JSON text/],
    [valid.subarray(0, valid.length - 1), /not JSON text/],
    [valid.subarray(0, 40), /not JSON text/],
    [new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), /not JSON text/],
    [new Uint8Array(COMMAND_BYTES_MAX + 1).fill(0x20), /of 65537 bytes is over 65536/],
    [text.encode('[1,2]'), /malformed topology command: Invalid input: expected object/],
    [text.encode('null'), /malformed topology command/],
    [text.encode('{"version":1}'), /malformed topology command/],
    [
      envelope({ type: 'removeNode', name: 'zeta' }, 2),
      /format 2 is not supported \(this node reads 1\)/,
    ],
    [
      envelope({ type: 'removeNode', name: 'zeta' }, '1'),
      /version: Invalid input: expected number/,
    ],
    [envelope({ type: 'removeNode', name: 'zeta', extra: true }), /Unrecognized key: "extra"/],
    [envelope({ type: 'removeNode' }), /command: name|name: Invalid input/],
    [envelope({ type: 'reboot' }), /Invalid discriminator value/],
    [envelope({ type: 'removeNode', name: '../../etc' }), /name: must be 1 to 64/],
    [
      text.encode(
        `{"version":1,"command":{"type":"setRetention","id":"mail","policy":${'{"a":'.repeat(10_000)}0${'}'.repeat(10_000)}}}`,
      ),
      /nested deeper than 16/,
    ],
    [
      text.encode(`{"version":1,"command":${'['.repeat(30_000)}${']'.repeat(30_000)}}`),
      /malformed topology command/,
    ],
    [
      text.encode('{"version":1,"command":{"type":"removeNode","name":"zeta"}} trailing'),
      /not JSON text/,
    ],
  ]
  for (const [bytes, message] of cases)
    assertClusterError(
      catchError(() => decodeCommand(bytes)),
      'BAD_MESSAGE',
      message,
    )
})

test.run()
