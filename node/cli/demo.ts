// `clusterreplica demo` (and `npm start`): the design's example cluster as six real
// processes on 127.0.0.1 — one Primary, two repli-masters, three replicas of which one is
// the Secondary — each with its own data directory in a temporary folder. It writes files
// on every master, shows them arriving on the replicas, changes one and restores its
// earlier version, then keeps the cluster running until Ctrl-C and removes what it made.
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { formatStatus, formatVersions } from './format.ts'
import { freePort, LocalNode } from './local-node.ts'
import type { StatusReport, VersionListing } from '../daemon/status-types.ts'

const NODES = [
  { name: 'primary', roles: [] },
  { name: 'master-b', roles: ['repli-master'] },
  { name: 'master-c', roles: ['repli-master'] },
  { name: 'replica-1', roles: ['replica'] },
  { name: 'replica-2', roles: ['replica'] },
  { name: 'secondary', roles: ['secondary'] },
] as const
const REPLICATION_WAIT_MS_MAX = 60_000

function step(text: string): void {
  console.log(`\n== ${text}`)
}

async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  limitMs = REPLICATION_WAIT_MS_MAX,
): Promise<void> {
  const deadline = Date.now() + limitMs
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await sleep(200)
  }
  throw new Error(`timed out waiting for ${what}`)
}

export async function runDemo(options: { keep: boolean; wait?: boolean }): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'clusterreplica-demo-'))
  const nodes = await Promise.all(
    NODES.map(async (spec) => new LocalNode(spec.name, join(root, spec.name), await freePort())),
  )
  const byName = (name: string): LocalNode => nodes.find((node) => node.name === name)!
  const primary = byName('primary')
  let stopping = false
  const cleanUp = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    await Promise.all(nodes.map((node) => node.stop()))
    if (!options.keep) await rm(root, { recursive: true, force: true })
    else console.log(`kept ${root}`)
  }
  try {
    step(`six nodes in ${root}`)
    await primary.init()
    await primary.start()
    console.log(`primary       started: ${primary.address}`)
    await Promise.all(
      nodes.slice(1).map(async (node) => {
        await node.start([primary.address])
        console.log(`${node.name.padEnd(13)} started, asking to join`)
      }),
    )
    step('the Primary admits them (clusterreplica admit NAME --role ROLE)')
    for (const spec of NODES.slice(1)) {
      await waitFor(`${spec.name}'s join request`, async () =>
        ((await primary.control('pending')) as { name: string }[]).some(
          (pending) => pending.name === spec.name,
        ),
      )
      await primary.control('admit', { name: spec.name, roles: spec.roles })
      console.log(`admitted ${spec.name} as ${spec.roles.join(', ')}`)
    }

    step('datasets: one per master, replicated to the replicas, with live mirrors')
    const datasets = [
      { id: 'projects', master: 'primary', replicas: ['replica-1', 'replica-2', 'secondary'] },
      { id: 'finance', master: 'master-b', replicas: ['replica-1', 'replica-2'] },
      { id: 'media', master: 'master-c', replicas: ['replica-1', 'master-b'] },
    ]
    for (const dataset of datasets) {
      const source = join(root, 'files', dataset.master, dataset.id)
      await mkdir(join(source, 'docs'), { recursive: true })
      await writeFile(join(source, 'README.txt'), `${dataset.id}: the first version\n`)
      await writeFile(join(source, 'docs', 'notes.txt'), `notes of ${dataset.id}\n`.repeat(100))
      await writeFile(join(source, 'docs', 'data.bin'), Buffer.alloc(3 * 1024 * 1024, dataset.id))
      const replicas = dataset.replicas.map((name) => ({
        name,
        mirror: join(root, 'mirrors', name, dataset.id),
      }))
      await primary.control('datasetAdd', {
        id: dataset.id,
        master: dataset.master,
        path: source,
        replicas,
      })
      console.log(
        `dataset ${dataset.id}: ${dataset.master}:${source} -> ${dataset.replicas.join(', ')}`,
      )
    }
    await waitFor('every replica to hold every dataset', async () => {
      const status = (await primary.control('status')) as StatusReport
      return status.replication.every(
        (lag) => lag.versionsBehind === 0 && (lag.masterLength ?? 0) > 0,
      )
    })
    step('status (clusterreplica status)')
    console.log(formatStatus((await primary.control('status')) as StatusReport))
    const mirrored = join(root, 'mirrors', 'replica-1', 'finance', 'README.txt')
    console.log(
      `\nreplica-1's live mirror of finance/README.txt: ${(await readFile(mirrored, 'utf8')).trim()}`,
    )

    step('a file changes on master-b, and its earlier version is restored from replica-1')
    const changed = join(root, 'files', 'master-b', 'finance', 'README.txt')
    await writeFile(changed, 'finance: the second version\n')
    const replica = byName('replica-1')
    await waitFor('the new version on replica-1', async () =>
      (await readFile(mirrored, 'utf8')).includes('second'),
    )
    console.log(`replica-1's mirror now: ${(await readFile(mirrored, 'utf8')).trim()}`)
    const versions = (await replica.control('versions', {
      dataset: 'finance',
      path: 'README.txt',
    })) as VersionListing[]
    console.log(formatVersions(versions))
    const restoreTo = join(root, 'restored')
    await replica.control('restore', {
      dataset: 'finance',
      path: 'README.txt',
      atMs: null,
      version: versions[0]!.version,
      to: restoreTo,
    })
    console.log(
      `restored version ${versions[0]!.version} to ${restoreTo}: ${(await readFile(join(restoreTo, 'README.txt'), 'utf8')).trim()}`,
    )

    if (options.wait === false) return
    step('the cluster keeps running; press Ctrl-C to stop it and remove everything')
    console.log(
      `try: node ${join('bin', 'clusterreplica.js')} status --data ${primary.dataDirectory}`,
    )
    await new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve())
      process.once('SIGTERM', () => resolve())
    })
  } catch (error) {
    // What each node said last is what explains a failure.
    for (const node of nodes)
      console.log(`\n-- ${node.name}:\n${node.output.trim().split('\n').slice(-15).join('\n')}`)
    throw error
  } finally {
    await cleanUp()
  }
}
