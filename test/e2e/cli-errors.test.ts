// Bad input from the command line gets one clear line on stderr and a non-zero exit, and
// changes nothing: tried against a real running node.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CLI_PATH } from '../../node/cli/local-node.ts'
import type { StatusReport } from '../../node/daemon/status-types.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { TestCluster } from './helpers/cluster.ts'

let root = ''
let cluster: TestCluster
let data = ''

async function cli(
  ...args: string[]
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (part: Buffer) => (stdout += part.toString()))
  child.stderr.on('data', (part: Buffer) => (stderr += part.toString()))
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  return { code, stdout, stderr }
}

/** Runs a command that must fail with one line matching `expected`. */
async function fails(expected: RegExp, ...args: string[]): Promise<void> {
  const { code, stdout, stderr } = await cli(...args)
  assert.is.not(code, 0, `${args.join(' ')} exits non-zero`)
  assert.is(stdout, '', `${args.join(' ')} prints nothing on stdout`)
  const lines = stderr.trimEnd().split('\n')
  assert.is(lines.length, 1, `one line: ${stderr}`)
  assert.match(lines[0]!, /^clusterreplica: /)
  assert.match(lines[0]!, expected)
}

test.before(async () => {
  root = await makeTempDir('clusterreplica-cli-')
  cluster = await TestCluster.create(root, [{ name: 'alpha', roles: [] }])
  data = cluster.primary.dataDirectory
  await mkdir(join(root, 'source'))
})

test.after(async () => {
  await cluster?.stop()
  await removeDir(root)
})

test('usage errors', async () => {
  await fails(/required option '--data <dir>'/, 'status')
  await fails(/unknown command/, 'frobnicate')
  await fails(/must be DATASET\/PATH/, 'versions', 'docs', '--data', data)
  await fails(
    /is not a time/,
    'restore',
    'docs/a.txt',
    '--at',
    'yesterday-ish',
    '--to',
    join(root, 'out'),
    '--data',
    data,
  )
  await fails(/a role is one of/, 'admit', 'beta', '--role', 'boss', '--data', data)
})

test('refused topology changes', async () => {
  await fails(
    /no node named beta is waiting to be admitted/,
    'admit',
    'beta',
    '--role',
    'replica',
    '--data',
    data,
  )
  await fails(
    /path/,
    'dataset',
    'add',
    'docs',
    '--master',
    'alpha',
    '--path',
    'relative/dir',
    '--data',
    data,
  )
  await fails(
    /ghost/,
    'dataset',
    'add',
    'docs',
    '--master',
    'ghost',
    '--path',
    join(root, 'source'),
    '--data',
    data,
  )
  await fails(/primary/i, 'remove', 'alpha', '--data', data)
  await fails(/primary/i, 'role', 'alpha', 'replica', '--data', data)
  await fails(/there is no dataset docs/, 'versions', 'docs/a.txt', '--data', data)
  const status = (await cluster.primary.control('status')) as StatusReport
  assert.equal(
    status.nodes.map((node) => [node.name, node.roles]),
    [['alpha', ['primary']]],
    'nothing changed',
  )
})

test('a data directory that is missing, busy, already a cluster, or damaged', async () => {
  await fails(/no clusterreplica daemon is running/, 'status', '--data', join(root, 'nowhere'))
  await fails(/already holds a node/, 'init', '--data', data, '--name', 'again')
  await fails(/LOCK|lock|in use|busy|already/i, 'start', '--data', data, '--no-mdns')
  const damaged = join(root, 'damaged')
  await mkdir(damaged)
  await writeFile(join(damaged, 'node.json'), '{ "version": 1, "name": ')
  await fails(/node\.json is not JSON/, 'start', '--data', damaged, '--no-mdns')
  await fails(/the first start needs --name/, 'start', '--data', join(root, 'fresh'), '--no-mdns')
})

test.run()
