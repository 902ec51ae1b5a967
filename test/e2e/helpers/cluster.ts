// End-to-end helpers: real `clusterreplica` processes on 127.0.0.1 in temporary data
// directories, a cluster built the way an operator builds one (init, start, join, admit),
// waiting with a deadline, and a digest of a directory tree to compare a mirror with its
// source. Every process a test starts is stopped by the test, by its pid.
import { createHash } from 'node:crypto'
import { lstat, readdir, readFile, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort, LocalNode } from '../../../node/cli/local-node.ts'
import type { StatusReport } from '../../../node/daemon/status-types.ts'

export interface NodeSpec {
  readonly name: string
  /** Roles for `admit`; the first node is the Primary and has none here. */
  readonly roles: readonly string[]
}

export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  limitMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + limitMs
  let lastError: unknown = null
  while (Date.now() < deadline) {
    try {
      if (await check()) return
    } catch (error) {
      lastError = error
    }
    await sleep(100)
  }
  throw new Error(
    `timed out after ${limitMs} ms waiting for ${what}${lastError === null ? '' : ` (last error: ${(lastError as Error).message})`}`,
  )
}

export class TestCluster {
  readonly root: string
  readonly nodes: LocalNode[] = []

  constructor(root: string) {
    this.root = root
  }

  get primary(): LocalNode {
    return this.nodes[0]!
  }

  node(name: string): LocalNode {
    const node = this.nodes.find((candidate) => candidate.name === name)
    if (node === undefined) throw new Error(`no node ${name}`)
    return node
  }

  /** A node process, not yet started. */
  async add(name: string): Promise<LocalNode> {
    const node = new LocalNode(name, join(this.root, 'nodes', name), await freePort())
    this.nodes.push(node)
    return node
  }

  /** init + start the Primary, then start the others, wait for their join requests and admit them. */
  static async create(root: string, specs: readonly NodeSpec[]): Promise<TestCluster> {
    const cluster = new TestCluster(root)
    const [primarySpec, ...others] = specs
    const primary = await cluster.add(primarySpec!.name)
    await primary.init()
    await primary.start()
    for (const spec of others) await cluster.join(spec)
    return cluster
  }

  async join(spec: NodeSpec): Promise<LocalNode> {
    const node = await this.add(spec.name)
    await node.start([this.primary.address])
    const leader = await this.leaderNode()
    await waitFor(`${spec.name}'s join request`, async () =>
      ((await leader.control('pending')) as { name: string }[]).some(
        (pending) => pending.name === spec.name,
      ),
    )
    await leader.control('admit', { name: spec.name, roles: spec.roles })
    await waitFor(`${spec.name} to hold the topology`, async () =>
      ((await node.control('status')) as StatusReport).nodes.some(
        (entry) => entry.name === spec.name,
      ),
    )
    return node
  }

  async leaderNode(): Promise<LocalNode> {
    let leaderName: string | null = null
    await waitFor('a leader', async () => {
      for (const node of this.nodes) {
        if (!node.running) continue
        leaderName = ((await node.control('status')) as StatusReport).leader
        if (leaderName !== null) return true
      }
      return false
    })
    return this.node(leaderName!)
  }

  async status(): Promise<StatusReport> {
    return (await (await this.leaderNode()).control('status')) as StatusReport
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.stop()))
  }
}

/** path → what it is (file content hash and mode, link target, directory): equal maps are equal trees. */
export async function treeDigest(root: string): Promise<Map<string, string>> {
  const digest = new Map<string, string>()
  const walk = async (relative: string): Promise<void> => {
    for (const name of (await readdir(join(root, relative))).sort()) {
      const path = relative === '' ? name : `${relative}/${name}`
      const stats = await lstat(join(root, path))
      if (stats.isDirectory()) {
        digest.set(path, 'directory')
        await walk(path)
      } else if (stats.isSymbolicLink()) {
        digest.set(path, `link ${await readlink(join(root, path))}`)
      } else {
        const hash = createHash('sha256')
          .update(await readFile(join(root, path)))
          .digest('hex')
        digest.set(path, `file ${(stats.mode & 0o777).toString(8)} ${hash}`)
      }
    }
  }
  await walk('')
  return digest
}

/** Resolves once `mirror` holds exactly what `source` holds. */
export async function waitForSameTree(
  source: string,
  mirror: string,
  limitMs = 60_000,
): Promise<void> {
  let difference = ''
  try {
    await waitFor(
      `${mirror} to equal ${source}`,
      async () => {
        const [expected, actual] = await Promise.all([treeDigest(source), treeDigest(mirror)])
        difference = describeDifference(expected, actual)
        return difference === ''
      },
      limitMs,
    )
  } catch (error) {
    throw new Error(`${(error as Error).message}: ${difference}`, { cause: error })
  }
}

function describeDifference(expected: Map<string, string>, actual: Map<string, string>): string {
  const problems: string[] = []
  for (const [path, what] of expected)
    if (actual.get(path) !== what)
      problems.push(`${path}: ${actual.has(path) ? 'differs' : 'missing'}`)
  for (const path of actual.keys()) if (!expected.has(path)) problems.push(`${path}: extra`)
  return (
    problems.slice(0, 5).join(', ') + (problems.length > 5 ? ` (+${problems.length - 5} more)` : '')
  )
}
