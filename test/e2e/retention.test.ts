// Retention on running nodes: a policy set through the Primary reaches the replica, whose
// prune marks the old versions pruned (reported as such, never as corrupt) while the
// current one still restores byte for byte.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli } from '../../node/cli/local-node.ts'
import type { VersionListing } from '../../node/daemon/status-types.ts'
import { isClusterError } from '../../consensus/cluster-error.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { TestCluster, waitFor, waitForSameTree } from './helpers/cluster.ts'

let root = ''
let cluster: TestCluster

test.before(async () => {
  root = await makeTempDir('clusterreplica-retention-')
  cluster = await TestCluster.create(root, [
    { name: 'alpha', roles: [] },
    { name: 'beta', roles: ['replica'] },
  ])
})

test.after(async () => {
  await cluster?.stop()
  await removeDir(root)
})

test('old versions are pruned on the replica by the policy, the current one restores', async () => {
  const source = join(root, 'source')
  const mirror = join(root, 'mirror')
  await mkdir(source)
  await writeFile(join(source, 'report.txt'), 'draft 1\n')
  await cluster.primary.control('datasetAdd', {
    id: 'docs',
    master: 'alpha',
    path: source,
    replicas: [{ name: 'beta', mirror }],
  })
  await waitForSameTree(source, mirror)
  for (const draft of [2, 3]) {
    await writeFile(join(source, 'report.txt'), `draft ${draft}\n`)
    await waitForSameTree(source, mirror)
  }
  const beta = cluster.node('beta')
  const versions = async (): Promise<VersionListing[]> =>
    (await beta.control('versions', { dataset: 'docs', path: 'report.txt' })) as VersionListing[]
  assert.equal(
    (await versions()).map((version) => version.pruned),
    [false, false, false],
  )

  await runCli([
    'dataset',
    'retention',
    'docs',
    '--keep-within',
    '1ms',
    '--data',
    cluster.primary.dataDirectory,
  ])
  await waitFor('the policy to prune on beta', async () => {
    await beta.control('prune')
    return (await versions()).map((version) => version.pruned).join() === 'true,true,false'
  })
  const restored = join(root, 'restored')
  const all = await versions()
  await beta.control('restore', {
    dataset: 'docs',
    path: 'report.txt',
    atMs: null,
    version: all[2]!.version,
    to: restored,
  })
  assert.is(await readFile(join(restored, 'report.txt'), 'utf8'), 'draft 3\n')
  try {
    await beta.control('restore', {
      dataset: 'docs',
      path: 'report.txt',
      atMs: null,
      version: all[0]!.version,
      to: join(root, 'old'),
    })
    assert.unreachable('a pruned version cannot be restored')
  } catch (error) {
    assert.ok(isClusterError(error, 'PRUNED'), (error as Error).message)
  }
})

test('a nonsensical policy is refused with its reason', async () => {
  try {
    await runCli([
      'dataset',
      'retention',
      'docs',
      '--keep-within',
      'banana',
      '--data',
      cluster.primary.dataDirectory,
    ])
    assert.unreachable('refused')
  } catch (error) {
    assert.match((error as Error).message, /^clusterreplica: .*keepAllWithin/)
  }
})

test.run()
