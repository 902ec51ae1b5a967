// Replication runs on the last committed topology: with two of four voters down, Raft has
// no quorum and no leader, topology changes are refused with a clear error, and yet a
// change on the master still reaches the replica that is up.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { StatusReport } from '../../node/daemon/status-types.ts'
import { isClusterError } from '../../consensus/cluster-error.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { TestCluster, waitFor, waitForSameTree } from './helpers/cluster.ts'

let root = ''
let cluster: TestCluster

test.before(async () => {
  root = await makeTempDir('clusterreplica-noleader-')
  cluster = await TestCluster.create(root, [
    { name: 'alpha', roles: [] },
    { name: 'beta', roles: ['replica'] },
    { name: 'gamma', roles: ['replica'] },
    { name: 'delta', roles: ['replica'] },
  ])
})

test.after(async () => {
  await cluster?.stop()
  await removeDir(root)
})

test('with no Raft leader, topology changes are refused and replication carries on', async () => {
  const source = join(root, 'source')
  const mirror = join(root, 'mirror-beta')
  await mkdir(source)
  await writeFile(join(source, 'before.txt'), 'before the outage\n')
  // Asked on beta: the command is forwarded to the Primary.
  await cluster.node('beta').control('datasetAdd', {
    id: 'docs',
    master: 'alpha',
    path: source,
    replicas: [{ name: 'beta', mirror }],
  })
  await waitForSameTree(source, mirror)
  await waitFor('four voters', async () => {
    const status = (await cluster.primary.control('status')) as StatusReport
    return status.nodes.filter((node) => node.raftRole !== null).length === 4
  })

  await cluster.node('gamma').kill()
  await cluster.node('delta').kill()
  await waitFor('the leader to step down without its quorum', async () => {
    const status = (await cluster.primary.control('status')) as StatusReport
    return status.leader === null
  })
  try {
    await cluster.primary.control('remove', { name: 'delta' })
    assert.unreachable('refused without a leader')
  } catch (error) {
    assert.ok(isClusterError(error, 'NOT_LEADER'), (error as Error).message)
  }
  await writeFile(join(source, 'during.txt'), 'written while Raft has no leader\n')
  await waitForSameTree(source, mirror)
  const status = (await cluster.primary.control('status')) as StatusReport
  assert.is(status.leader, null, 'still no leader: replication did not need one')
})

test.run()
