// Three real processes on 127.0.0.1: a Primary master and two replicas with live mirrors.
// Every kind of change on the master reaches both mirrors, compared by content hashes of
// the whole trees; earlier versions are listed and restored byte for byte.
import '../../node/polyfill.ts'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'node:crypto'
import { appendFile, mkdir, readFile, rename, rm, writeFile, open } from 'node:fs/promises'
import { join } from 'node:path'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { TestCluster, waitFor, waitForSameTree } from './helpers/cluster.ts'
import type { StatusReport, VersionListing } from '../../node/daemon/status-types.ts'
import type { LocalStatus } from '../../node/daemon/status-service.ts'
import { runCli } from '../../node/cli/local-node.ts'

let root = ''
let cluster: TestCluster
let source = ''
const mirrors: string[] = []

test.before(async () => {
  root = await makeTempDir('clusterreplica-e2e3-')
  source = join(root, 'source')
  await mkdir(source)
  await writeFile(join(source, 'hello.txt'), 'hello, first version\n')
  cluster = await TestCluster.create(root, [
    { name: 'alpha', roles: [] },
    { name: 'beta', roles: ['replica'] },
    { name: 'gamma', roles: ['replica'] },
  ])
  mirrors.push(join(root, 'mirror-beta'), join(root, 'mirror-gamma'))
  await cluster.primary.control('datasetAdd', {
    id: 'docs',
    master: 'alpha',
    path: source,
    replicas: [
      { name: 'beta', mirror: mirrors[0] },
      { name: 'gamma', mirror: mirrors[1] },
    ],
  })
})

test.after(async () => {
  await cluster?.stop()
  await removeDir(root)
})

async function bothMirrorsMatch(): Promise<void> {
  await Promise.all(mirrors.map((mirror) => waitForSameTree(source, mirror)))
}

test('the initial tree reaches both mirrors', async () => {
  await bothMirrorsMatch()
})

test('create, modify, append, delete and rename reach both mirrors', async () => {
  await writeFile(join(source, 'created.txt'), 'new file\n')
  await bothMirrorsMatch()
  await writeFile(join(source, 'hello.txt'), 'hello, second version\n')
  await bothMirrorsMatch()
  await appendFile(join(source, 'created.txt'), 'appended line\n')
  await bothMirrorsMatch()
  await rm(join(source, 'created.txt'))
  await bothMirrorsMatch()
  await writeFile(join(source, 'before.txt'), 'to be renamed\n')
  await bothMirrorsMatch()
  await rename(join(source, 'before.txt'), join(source, 'after.txt'))
  await bothMirrorsMatch()
})

test('nested directories and a 64 MiB file reach both mirrors', async () => {
  await mkdir(join(source, 'a', 'b', 'c'), { recursive: true })
  await writeFile(join(source, 'a', 'b', 'c', 'deep.txt'), 'deep\n')
  const big = await open(join(source, 'a', 'big.bin'), 'w')
  for (let part = 0; part < 64; part++) await big.write(randomBytes(1024 * 1024))
  await big.close()
  await bothMirrorsMatch()
})

test('a burst of 1,000 small files reaches both mirrors', async () => {
  await mkdir(join(source, 'burst'))
  await Promise.all(
    Array.from({ length: 1000 }, (_, index) =>
      writeFile(join(source, 'burst', `file-${index}.txt`), `small file ${index}\n`),
    ),
  )
  await bothMirrorsMatch()
})

test('status shows no lag once the replicas have everything', async () => {
  await waitFor('zero lag', async () => {
    const status = (await cluster.primary.control('status')) as StatusReport
    return (
      status.replication.length === 2 && status.replication.every((lag) => lag.versionsBehind === 0)
    )
  })
  const status = (await cluster.primary.control('status')) as StatusReport
  assert.equal(
    status.nodes.map((node) => [node.name, node.reachable]),
    [
      ['alpha', true],
      ['beta', true],
      ['gamma', true],
    ],
  )
  assert.is(status.leader, 'alpha')
  // A replica's own view, without asking the others: the same lengths as the master's log.
  const beta = cluster.node('beta')
  const local = (await beta.control('localStatus')) as LocalStatus
  const docs = local.datasets.find((dataset) => dataset.id === 'docs')
  const masterLength = status.replication.find((lag) => lag.replica === 'beta')?.masterLength
  assert.equal([docs?.role, docs?.completeLength], ['replica', masterLength])
  const printed = await runCli(['status', '--local', '--data', beta.dataDirectory])
  assert.match(printed, /│ docs +│ replica +│ \d+ +│ \d+ +│/)
})

test('a replica lists the versions of a file and restores the first byte for byte', async () => {
  const beta = cluster.node('beta')
  const versions = (await beta.control('versions', {
    dataset: 'docs',
    path: 'hello.txt',
  })) as VersionListing[]
  assert.is(versions.length, 2)
  const destination = join(root, 'restored')
  await beta.control('restore', {
    dataset: 'docs',
    path: 'hello.txt',
    atMs: null,
    version: versions[0]!.version,
    to: destination,
  })
  assert.is(await readFile(join(destination, 'hello.txt'), 'utf8'), 'hello, first version\n')
})

test.run()
