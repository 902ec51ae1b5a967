// Every command's happy path and every refusal, with its code and message.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { ClusterErrorCode } from '../../consensus/cluster-error.ts'
import type { TopologyCommand } from '../../node/topology/commands.ts'
import { NODES_MAX, DATASETS_MAX } from '../../node/topology/limits.ts'
import {
  canCampaign,
  datasetById,
  datasetsMasteredBy,
  datasetsReplicatedBy,
  entitledToDataset,
  isAdmitted,
  nodeByName,
  nodeByPeer,
} from '../../node/topology/queries.ts'
import { EMPTY_TOPOLOGY, type TopologyState } from '../../node/topology/topology-state.ts'
import { executeCommand } from '../../node/topology/transition.ts'
import {
  validateCommand,
  LOG_CONTEXT,
  type ValidationContext,
} from '../../node/topology/validate.ts'
import {
  ON_LEADER,
  admit,
  assertClusterError,
  build,
  createCluster,
  exampleCluster,
  peer,
} from './topology-fixture.ts'

function refuses(
  state: TopologyState,
  command: TopologyCommand,
  code: ClusterErrorCode,
  message: RegExp,
  context: ValidationContext = ON_LEADER,
): void {
  assertClusterError(validateCommand(state, command, context), code, message)
  const outcome = executeCommand(state, command, context)
  assert.not.ok(outcome.ok, 'a refused command changes nothing')
}

const dataset = (
  id: string,
  master: string,
  path: string,
  replicas: { name: string; mirror: string | null }[],
): TopologyCommand => ({ type: 'addDataset', id, master, path, replicas })

// --- happy paths -------------------------------------------------------------------

test('createCluster makes the first node the primary', () => {
  const state = build([createCluster('alpha')])
  assert.is(state.clusterId, 'test-cluster')
  assert.equal(nodeByName(state, 'alpha')?.roles, ['primary'])
  assert.ok(canCampaign(state, peer('alpha')))
})

test('admitNode adds a node, kept in name order with its roles in canonical order', () => {
  const state = build([
    createCluster('alpha'),
    admit('zulu', ['replica', 'repli-master']),
    admit('bravo', ['replica']),
  ])
  assert.equal(
    state.nodes.map((node) => node.name),
    ['alpha', 'bravo', 'zulu'],
  )
  assert.equal(nodeByName(state, 'zulu')?.roles, ['repli-master', 'replica'])
  assert.ok(isAdmitted(state, peer('zulu')))
  assert.not.ok(canCampaign(state, peer('zulu')))
  assert.not.ok(isAdmitted(state, peer('nobody')))
})

test('the example cluster: roles, datasets and the queries the daemon asks', () => {
  const state = exampleCluster()
  assert.is(state.nodes.length, 6)
  assert.ok(canCampaign(state, peer('delta')), 'the secondary campaigns')
  assert.not.ok(canCampaign(state, peer('epsilon')), 'a replica only votes')
  assert.equal(
    datasetsMasteredBy(state, peer('alpha')).map((found) => found.id),
    ['home'],
  )
  assert.equal(
    datasetsReplicatedBy(state, peer('gamma')).map((found) => found.id),
    ['mail'],
  )
  assert.ok(entitledToDataset(state, peer('beta'), 'mail'), 'the master')
  assert.ok(entitledToDataset(state, peer('zeta'), 'mail'), 'a replica')
  assert.not.ok(
    entitledToDataset(state, peer('alpha'), 'mail'),
    'the primary is not entitled to what it does not hold',
  )
  assert.not.ok(entitledToDataset(state, peer('zeta'), 'nothing'))
  assert.equal(datasetById(state, 'home')?.replicas, [
    { node: peer('delta'), mirror: '/srv/home' },
    { node: peer('epsilon'), mirror: null },
  ])
})

test('setRoles, setAddresses, setReplicas, setRetention, setDatasetKey, removeDataset, removeNode', () => {
  const key = 'ab'.repeat(32)
  const state = build(
    [
      { type: 'setRoles', name: 'epsilon', roles: ['replica', 'repli-master'] },
      { type: 'setAddresses', peerId: peer('zeta'), addresses: ['/ip4/127.0.0.1/tcp/4005'] },
      { type: 'setReplicas', id: 'home', replicas: [{ name: 'zeta', mirror: '/data/home' }] },
      { type: 'setRetention', id: 'mail', policy: { keepAllHours: 24, daily: 30 } },
      { type: 'setDatasetKey', id: 'mail', key, by: peer('beta') },
      // The master re-announcing the same key (after a restart) is accepted.
      { type: 'setDatasetKey', id: 'mail', key, by: peer('beta') },
      { type: 'removeDataset', id: 'mail' },
      { type: 'removeNode', name: 'gamma' },
    ],
    exampleCluster(),
  )
  assert.equal(nodeByName(state, 'epsilon')?.roles, ['repli-master', 'replica'])
  assert.equal(nodeByPeer(state, peer('zeta'))?.addresses, ['/ip4/127.0.0.1/tcp/4005'])
  assert.equal(datasetById(state, 'home')?.replicas, [{ node: peer('zeta'), mirror: '/data/home' }])
  assert.is(datasetById(state, 'mail'), null)
  assert.is(nodeByName(state, 'gamma'), null)
  const retained = build(
    [
      { type: 'setRetention', id: 'home', policy: { b: [1, { d: null, c: true }], a: 'x' } },
      { type: 'setDatasetKey', id: 'home', key, by: peer('alpha') },
    ],
    exampleCluster(),
  )
  assert.equal(datasetById(retained, 'home')?.retention, { a: 'x', b: [1, { c: true, d: null }] })
  assert.is(datasetById(retained, 'home')?.key, key)
  const cleared = build([{ type: 'setRetention', id: 'home', policy: null }], retained)
  assert.is(datasetById(cleared, 'home')?.retention, null)
})

test('a state is never changed in place: an earlier state keeps what it had', () => {
  const before = exampleCluster()
  const after = build([{ type: 'removeDataset', id: 'home' }], before)
  assert.ok(datasetById(before, 'home'))
  assert.is(datasetById(after, 'home'), null)
  assert.ok(Object.isFrozen(before.datasets) && Object.isFrozen(before.nodes[0]!.roles))
})

// --- refusals ----------------------------------------------------------------------

test('no command before the cluster exists, and no second createCluster', () => {
  refuses(EMPTY_TOPOLOGY, admit('beta', ['replica']), 'REFUSED', /no cluster yet/)
  refuses(
    exampleCluster(),
    createCluster('omega'),
    'REFUSED',
    /cluster 'test-cluster' already exists/,
  )
})

test('a second primary or secondary, or both roles on one node', () => {
  const state = exampleCluster()
  refuses(
    state,
    admit('omega', ['primary']),
    'REFUSED',
    /'alpha' is already the primary; a cluster has exactly one/,
  )
  refuses(
    state,
    admit('omega', ['secondary']),
    'REFUSED',
    /'delta' is already the secondary; a cluster has at most one/,
  )
  refuses(
    state,
    { type: 'setRoles', name: 'epsilon', roles: ['secondary'] },
    'REFUSED',
    /'delta' is already the secondary/,
  )
  refuses(
    state,
    { type: 'setRoles', name: 'delta', roles: ['primary', 'secondary'] },
    'BAD_ARGUMENT',
    /both the primary and the secondary/,
  )
  // The secondary keeping its role is not a second secondary.
  assert.is(
    validateCommand(
      state,
      { type: 'setRoles', name: 'delta', roles: ['secondary', 'replica'] },
      ON_LEADER,
    ),
    null,
  )
})

test('duplicate names, peer ids and dataset ids', () => {
  const state = exampleCluster()
  refuses(
    state,
    admit('beta', ['replica']),
    'REFUSED',
    /the name 'beta' is taken by peer 12D3KooWbeta/,
  )
  refuses(
    state,
    { ...admit('omega', ['replica']), peerId: peer('beta') },
    'REFUSED',
    /peer 12D3KooWbeta is already admitted as 'beta'/,
  )
  refuses(
    state,
    dataset('home', 'beta', '/srv/other', []),
    'REFUSED',
    /dataset 'home' already exists/,
  )
})

test('unknown nodes and datasets', () => {
  const state = exampleCluster()
  refuses(
    state,
    { type: 'setRoles', name: 'omega', roles: ['replica'] },
    'NOT_FOUND',
    /unknown node 'omega'/,
  )
  refuses(state, { type: 'removeNode', name: 'omega' }, 'NOT_FOUND', /unknown node 'omega'/)
  refuses(
    state,
    { type: 'setAddresses', peerId: peer('omega'), addresses: [] },
    'NOT_FOUND',
    /peer 12D3KooWomega is not admitted/,
    LOG_CONTEXT,
  )
  refuses(state, dataset('web', 'omega', '/srv/web', []), 'NOT_FOUND', /unknown node 'omega'/)
  refuses(
    state,
    dataset('web', 'beta', '/srv/web', [{ name: 'omega', mirror: null }]),
    'NOT_FOUND',
    /unknown node 'omega'/,
  )
  for (const command of [
    { type: 'removeDataset', id: 'web' },
    { type: 'setReplicas', id: 'web', replicas: [] },
    { type: 'setRetention', id: 'web', policy: null },
    { type: 'setDatasetKey', id: 'web', key: 'ab'.repeat(32), by: peer('beta') },
  ] satisfies TopologyCommand[])
    refuses(state, command, 'NOT_FOUND', /unknown dataset 'web'/)
})

test('removing or demoting the active primary', () => {
  const state = exampleCluster()
  refuses(
    state,
    { type: 'removeNode', name: 'alpha' },
    'REFUSED',
    /'alpha' is the active primary and cannot be removed/,
  )
  refuses(
    state,
    { type: 'removeNode', name: 'alpha' },
    'REFUSED',
    /'alpha' is the primary and cannot be removed/,
    LOG_CONTEXT,
  )
  refuses(
    state,
    { type: 'setRoles', name: 'alpha', roles: ['repli-master'] },
    'REFUSED',
    /cannot give up the primary role/,
  )
  // During a failover the secondary leads before the topology says so: it cannot be demoted nor removed.
  const failover: ValidationContext = { leader: peer('delta'), sender: peer('delta') }
  refuses(
    state,
    { type: 'setRoles', name: 'delta', roles: ['replica'] },
    'REFUSED',
    /'delta' is the active primary and cannot be demoted/,
    failover,
  )
  refuses(
    state,
    { type: 'removeNode', name: 'delta' },
    'REFUSED',
    /'delta' is the active primary and cannot be removed/,
    failover,
  )
  // Any other node's roles may change.
  assert.is(
    validateCommand(
      state,
      { type: 'setRoles', name: 'alpha', roles: ['primary', 'replica'] },
      ON_LEADER,
    ),
    null,
  )
})

test('a replica of its own dataset, twice the same replica, and roles that cannot master or replicate', () => {
  const state = exampleCluster()
  refuses(
    state,
    dataset('web', 'beta', '/srv/web', [{ name: 'beta', mirror: null }]),
    'BAD_ARGUMENT',
    /'beta' masters dataset 'web' and cannot also be its replica/,
  )
  refuses(
    state,
    { type: 'setReplicas', id: 'mail', replicas: [{ name: 'beta', mirror: null }] },
    'BAD_ARGUMENT',
    /'beta' masters dataset 'mail'/,
  )
  refuses(
    state,
    dataset('web', 'beta', '/srv/web', [
      { name: 'zeta', mirror: null },
      { name: 'zeta', mirror: '/m' },
    ]),
    'BAD_ARGUMENT',
    /replica 'zeta' is listed twice/,
  )
  refuses(
    state,
    dataset('web', 'zeta', '/srv/web', []),
    'REFUSED',
    /'zeta' cannot master dataset 'web': it is neither primary nor repli-master/,
  )
  refuses(
    state,
    dataset('web', 'beta', '/srv/web', [{ name: 'alpha', mirror: null }]),
    'REFUSED',
    /'alpha' cannot replicate dataset 'web': it is not a replica, secondary or repli-master/,
  )
})

test('roles and removals that would strand a dataset', () => {
  const state = exampleCluster()
  refuses(
    state,
    { type: 'setRoles', name: 'beta', roles: ['replica'] },
    'REFUSED',
    /'beta' masters dataset 'mail' and must keep the role primary or repli-master/,
  )
  const primaryReplica = build(
    [
      { type: 'setRoles', name: 'alpha', roles: ['primary', 'replica'] },
      { type: 'setReplicas', id: 'mail', replicas: [{ name: 'alpha', mirror: null }] },
    ],
    state,
  )
  refuses(
    primaryReplica,
    { type: 'setRoles', name: 'alpha', roles: ['primary'] },
    'REFUSED',
    /'alpha' replicates dataset 'mail' and must keep the role replica, secondary or repli-master/,
  )
  // A repli-master may replicate, so a replica may become one.
  assert.is(
    validateCommand(state, { type: 'setRoles', name: 'zeta', roles: ['repli-master'] }, ON_LEADER),
    null,
  )
  refuses(
    state,
    { type: 'removeNode', name: 'beta' },
    'REFUSED',
    /'beta' masters dataset 'mail': remove those datasets first/,
  )
  refuses(
    state,
    { type: 'removeNode', name: 'epsilon' },
    'REFUSED',
    /'epsilon' replicates dataset 'home': take it off their replicas first/,
  )
})

test('directories that overlap on one node', () => {
  const state = exampleCluster()
  // gamma mirrors mail at /mirror/mail; beta's source is /var/mail; alpha's source is /srv/home; delta mirrors /srv/home.
  refuses(
    state,
    dataset('web', 'gamma', '/mirror/mail/web', []),
    'REFUSED',
    /on 'gamma', the source of dataset 'web' \(\/mirror\/mail\/web\) lies inside the mirror of dataset 'mail' \(\/mirror\/mail\)/,
  )
  refuses(
    state,
    dataset('web', 'gamma', '/mirror', []),
    'REFUSED',
    /contains the mirror of dataset 'mail'/,
  )
  refuses(
    state,
    dataset('web', 'beta', '/var/mail', []),
    'REFUSED',
    /on 'beta', the source of dataset 'web' \(\/var\/mail\) is the same directory as the source of dataset 'mail'/,
  )
  refuses(
    state,
    dataset('web', 'beta', '/srv/web', [{ name: 'delta', mirror: '/srv/home/web' }]),
    'REFUSED',
    /on 'delta', the mirror of dataset 'web' \(\/srv\/home\/web\) lies inside the mirror of dataset 'home'/,
  )
  refuses(
    state,
    {
      type: 'setReplicas',
      id: 'mail',
      replicas: [
        { name: 'epsilon', mirror: '/srv' },
        { name: 'delta', mirror: '/srv/home' },
      ],
    },
    'REFUSED',
    /on 'delta', the mirror of dataset 'mail' \(\/srv\/home\) is the same directory as the mirror of dataset 'home'/,
  )
  // The same path on different nodes is fine, and so are siblings that share a prefix.
  assert.is(
    validateCommand(
      state,
      dataset('web', 'beta', '/srv/home', [{ name: 'zeta', mirror: '/var/mail' }]),
      ON_LEADER,
    ),
    null,
  )
  assert.is(validateCommand(state, dataset('web', 'beta', '/var/mailbox', []), ON_LEADER), null)
  // A dataset's own directories do not conflict with themselves when its replicas are set again.
  assert.is(
    validateCommand(
      state,
      { type: 'setReplicas', id: 'mail', replicas: [{ name: 'gamma', mirror: '/mirror/mail' }] },
      ON_LEADER,
    ),
    null,
  )
})

test('only the master announces its dataset key, only once, and only for itself', () => {
  const key = 'cd'.repeat(32)
  const state = build(
    [{ type: 'setDatasetKey', id: 'mail', key, by: peer('beta') }],
    exampleCluster(),
  )
  refuses(
    state,
    { type: 'setDatasetKey', id: 'home', key, by: peer('beta') },
    'REFUSED',
    /only the master 'alpha' may announce the key of dataset 'home'/,
  )
  refuses(
    state,
    { type: 'setDatasetKey', id: 'mail', key: 'ef'.repeat(32), by: peer('beta') },
    'REFUSED',
    /already has its log core key/,
    { leader: peer('alpha'), sender: peer('beta') },
  )
  refuses(
    exampleCluster(),
    { type: 'setDatasetKey', id: 'mail', key, by: peer('beta') },
    'REFUSED',
    /peer 12D3KooWzeta cannot announce a key on behalf of 12D3KooWbeta/,
    { leader: peer('alpha'), sender: peer('zeta') },
  )
  refuses(
    state,
    { type: 'setAddresses', peerId: peer('beta'), addresses: [] },
    'REFUSED',
    /peer 12D3KooWzeta cannot announce addresses for 'beta'/,
    { leader: peer('alpha'), sender: peer('zeta') },
  )
  assert.is(
    validateCommand(
      state,
      { type: 'setAddresses', peerId: peer('beta'), addresses: [] },
      { leader: peer('alpha'), sender: peer('beta') },
    ),
    null,
  )
})

test('names, ids, peer ids, addresses and paths outside their charset or length', () => {
  const state = exampleCluster()
  const cases: [TopologyCommand, RegExp][] = [
    [admit('-bad', ['replica']), /name: must be 1 to 64 letters, digits/],
    [admit('a'.repeat(65), ['replica']), /name: must be 1 to 64/],
    [admit('has space', ['replica']), /name: must be/],
    [admit('ok', []), /roles: must name at least one role/],
    [admit('ok', ['replica', 'replica']), /roles: names a role twice/],
    [
      admit('ok', ['boss' as never]),
      /roles.0: must be one of primary, secondary, repli-master, replica/,
    ],
    [{ ...admit('ok', ['replica']), peerId: 'not/a/peer' as never }, /peerId: must be a peer id/],
    [{ ...admit('ok', ['replica']), site: '../etc' }, /site: must be/],
    [{ ...admit('ok', ['replica']), addresses: ['tcp/1'] }, /addresses.0: must be a multiaddr/],
    [{ ...admit('ok', ['replica']), addresses: ['/a', '/a'] }, /addresses: lists an address twice/],
    [
      {
        ...admit('ok', ['replica']),
        addresses: Array.from({ length: 17 }, (_, i) => `/ip4/10.0.0.${i}`),
      },
      /at most 16 addresses/,
    ],
    [dataset('web', 'beta', 'srv/web', []), /path: 'srv\/web' is not an absolute path/],
    [dataset('web', 'beta', '/srv/../web', []), /not in normal form \(write '\/web'\)/],
    [dataset('web', 'beta', '/srv/web/', []), /not in normal form \(write '\/srv\/web'\)/],
    [dataset('web', 'beta', '/', []), /cannot be the root directory/],
    [dataset('web', 'beta', '/srv/a\nb', []), /control character/],
    [dataset('web', 'beta', `/${'x'.repeat(1024)}`, []), /over 1024 bytes/],
    [
      dataset('web', 'beta', '/srv/web', [{ name: 'zeta', mirror: 'relative' }]),
      /replicas.0.mirror: 'relative' is not an absolute path/,
    ],
    [
      dataset(
        'web',
        'beta',
        '/srv/web',
        Array.from({ length: 17 }, (_, i) => ({ name: `n${i}`, mirror: null })),
      ),
      /at most 16 replicas/,
    ],
    [
      { type: 'setDatasetKey', id: 'mail', key: 'AB'.repeat(32), by: peer('beta') },
      /key: must be 64 lowercase hex digits/,
    ],
    [
      { type: 'setRetention', id: 'mail', policy: { deep: nest(20) } },
      /policy: is nested deeper than 16/,
    ],
    [
      { type: 'setRetention', id: 'mail', policy: { text: 'x'.repeat(9000) } },
      /policy: is .*over 8192/,
    ],
    [
      { type: 'setRetention', id: 'mail', policy: { when: new Date(0) } },
      /policy: holds an object that is not plain JSON/,
    ],
    [
      { type: 'setRetention', id: 'mail', policy: { n: Number.NaN } },
      /policy: holds a number JSON cannot carry/,
    ],
    [
      { type: 'setRetention', id: 'mail', policy: { f: undefined } },
      /policy: holds a value of type undefined/,
    ],
    [
      { type: 'setRetention', id: 'mail', policy: '\ud800' },
      /policy: holds text that is not well-formed Unicode/,
    ],
    [{ type: 'teleport' } as never, /invalid teleport command: type: Invalid discriminator/],
    [{ ...admit('ok', ['replica']), extra: 1 } as never, /Unrecognized key: "extra"/],
    [null as never, /invalid undefined command: Invalid input: expected object/],
  ]
  for (const [command, message] of cases) refuses(state, command, 'BAD_ARGUMENT', message)
})

test('a node or a dataset past the cluster bound', () => {
  let state = build([createCluster('alpha'), admit('beta', ['repli-master'])])
  for (let index = 0; index < DATASETS_MAX; index++)
    state = build([dataset(`d${index}`, 'beta', `/srv/d${index}`, [])], state)
  refuses(
    state,
    dataset('one-more', 'beta', '/srv/more', []),
    'REFUSED',
    /already has 512 datasets/,
  )
  for (let index = state.nodes.length; index < NODES_MAX; index++)
    state = build([admit(`n${index}`, ['replica'])], state)
  refuses(state, admit('one-more', ['replica']), 'REFUSED', /already has 256 nodes/)
})

function nest(depth: number): unknown {
  let value: unknown = 0
  for (let level = 0; level < depth; level++) value = [value]
  return value
}

test.run()
