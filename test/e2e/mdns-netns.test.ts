// LAN discovery with mDNS, inside a network namespace this test creates (holding only its
// own loopback), so that no multicast ever leaves the machine: a node started with no
// bootstrap address finds the Primary by itself, asks to join, is admitted and replicates.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalNode } from '../../node/cli/local-node.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { waitFor, waitForSameTree } from './helpers/cluster.ts'

const namespace = `cr-mdns-${randomBytes(3).toString('hex')}`
let root = ''
const nodes: LocalNode[] = []

test.before(async () => {
  root = await makeTempDir('clusterreplica-mdns-')
  execFileSync('ip', ['netns', 'add', namespace])
  execFileSync('ip', ['-n', namespace, 'link', 'set', 'lo', 'up'])
})

test.after(async () => {
  await Promise.all(nodes.map((node) => node.stop()))
  execFileSync('ip', ['netns', 'delete', namespace])
  await removeDir(root)
})

test('a node with no bootstrap address finds the Primary by mDNS, joins and replicates', async () => {
  const inNamespace = { wrapper: ['ip', 'netns', 'exec', namespace], mdns: true }
  // Inside the namespace every port is free: its loopback is its own.
  const primary = new LocalNode('alpha', join(root, 'alpha'), 47_001, inNamespace)
  const replica = new LocalNode('beta', join(root, 'beta'), 47_002, inNamespace)
  nodes.push(primary, replica)
  await primary.init()
  await primary.start()
  await replica.start()
  await waitFor('beta, found by mDNS, to ask to join', async () =>
    ((await primary.control('pending')) as { name: string }[]).some(
      (pending) => pending.name === 'beta',
    ),
  )
  await primary.control('admit', { name: 'beta', roles: ['replica'] })
  const source = join(root, 'source')
  await mkdir(source)
  await writeFile(join(source, 'found.txt'), 'found by mDNS\n')
  await primary.control('datasetAdd', {
    id: 'lan',
    master: 'alpha',
    path: source,
    replicas: [{ name: 'beta', mirror: join(root, 'mirror') }],
  })
  await waitForSameTree(source, join(root, 'mirror'))
  assert.match(replica.output, 'waiting to be admitted')
})

test.run()
