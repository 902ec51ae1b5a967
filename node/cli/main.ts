// The `clusterreplica` command line. `init` and `start` work on the data directory
// directly (start runs the daemon in the foreground); every other command asks the local
// daemon over its control socket. Errors are one line on stderr and a non-zero exit.
import '../polyfill.ts'
import { join } from 'node:path'
import { Command, InvalidArgumentError, Option } from 'commander'
import { callControl } from '../control/control-client.ts'
import { CONTROL_SOCKET_NAME } from '../daemon/data-directory.ts'
import {
  formatDatasets,
  formatLocalStatus,
  formatPending,
  formatStatus,
  formatVersions,
} from './format.ts'

const ROLES = ['primary', 'repli-master', 'replica', 'secondary'] as const

function collect(value: string, previous: string[]): string[] {
  return [...previous, value]
}

function role(value: string): string {
  if (!(ROLES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`a role is one of ${ROLES.join(', ')}`)
  }
  return value
}

function wholeNumber(value: string): number {
  const parsed = Number(value)
  if (!Number.isSafeInteger(parsed) || parsed < 0)
    throw new InvalidArgumentError('must be a whole number')
  return parsed
}

/** `--at` takes an ISO 8601 date and time, or milliseconds since 1970. */
function pointInTime(value: string): number {
  const milliseconds = /^\d+$/.test(value) ? Number(value) : Date.parse(value)
  if (!Number.isFinite(milliseconds)) {
    throw new InvalidArgumentError(
      'is not a time: use ISO 8601 (2026-11-25T14:00:00Z) or milliseconds since 1970',
    )
  }
  return milliseconds
}

/** `DATASET/PATH` → the dataset id and the path inside it. */
function datasetPath(value: string): { dataset: string; path: string } {
  const slash = value.indexOf('/')
  if (slash <= 0)
    throw new InvalidArgumentError('must be DATASET/PATH, for example docs/reports/q3.txt')
  return { dataset: value.slice(0, slash), path: value.slice(slash + 1) }
}

/** `NAME[:MIRROR_DIR]` for `dataset add --replica`. */
function replicaSpec(value: string, previous: { name: string; mirror: string | null }[]) {
  const colon = value.indexOf(':')
  const name = colon < 0 ? value : value.slice(0, colon)
  const mirror = colon < 0 ? null : value.slice(colon + 1)
  if (name === '' || mirror === '')
    throw new InvalidArgumentError('must be NAME or NAME:MIRROR_DIR')
  return [...previous, { name, mirror }]
}

const replicaOption = () =>
  new Option(
    '--replica <name[:mirror]>',
    'a replica, with the directory of its live mirror if it keeps one (repeatable)',
  )
    .argParser(replicaSpec)
    .default([])

const dataOption = () =>
  new Option('--data <dir>', "the node's data directory").makeOptionMandatory()

async function control(
  dataDirectory: string,
  method: string,
  params: unknown = {},
): Promise<unknown> {
  return callControl(join(dataDirectory, CONTROL_SOCKET_NAME), method, params)
}

function print(value: unknown, json: boolean, format: (value: never) => string): void {
  console.log(json ? JSON.stringify(value, null, 2) : format(value as never))
}

/** A command that asks the daemon one thing and prints it as a table, or as JSON with --json. */
function reportCommand(
  parent: Command,
  name: string,
  description: string,
  method: string,
  format: (value: never) => string,
): void {
  parent
    .command(name)
    .description(description)
    .addOption(dataOption())
    .option('--json', 'print JSON', false)
    .action(async (options: { data: string; json: boolean }) => {
      print(await control(options.data, method), options.json, format)
    })
}

const program = new Command('clusterreplica')
  .description('Real-time file replication with versioned replicas and split-brain-free failover')
  // Usage errors are one line, like every other error: `clusterreplica: <what is wrong>`.
  .configureOutput({
    outputError: (text, write) =>
      write(`clusterreplica: ${text.replace(/^error: /, '').trimEnd()}\n`),
  })

program
  .command('init')
  .description('create a new cluster with this node as its Primary')
  .addOption(dataOption())
  .requiredOption('--name <name>', "this node's name in the cluster")
  .option('--listen <multiaddr>', 'address to listen on (repeatable)', collect, [])
  .option('--site <site>', 'the site this node is at', 'default')
  .action(async (options: { data: string; name: string; listen: string[]; site: string }) => {
    const { initCluster } = await import('../daemon/init.ts')
    const result = await initCluster(options)
    console.log(
      `created cluster ${result.clusterId} with ${options.name} (${result.peerId}) as its Primary`,
    )
    console.log(`start it with: clusterreplica start --data ${options.data}`)
  })

program
  .command('start')
  .description('run this node in the foreground')
  .addOption(dataOption())
  .option('--name <name>', "this node's name (remembered in the data directory)")
  .option('--listen <multiaddr>', 'address to listen on (repeatable)', collect, [])
  .option('--bootstrap <multiaddr>', 'a peer to reach when mDNS cannot (repeatable)', collect, [])
  .option('--site <site>', 'the site this node is at')
  .option('--no-mdns', 'turn off LAN discovery by mDNS')
  .action(
    async (options: {
      data: string
      name?: string
      listen: string[]
      bootstrap: string[]
      site?: string
      mdns: boolean
    }) => {
      const { runDaemon } = await import('../daemon/daemon.ts')
      await runDaemon(options)
    },
  )

program
  .command('admit <name>')
  .description('admit a node that asked to join, with its roles')
  .addOption(dataOption())
  .requiredOption(
    '--role <role>',
    'replica, repli-master or secondary (repeatable)',
    (value, previous: string[]) => [...previous, role(value)],
    [],
  )
  .action(async (name: string, options: { data: string; role: string[] }) => {
    await control(options.data, 'admit', { name, roles: options.role })
    console.log(`admitted ${name} as ${options.role.join(', ')}`)
  })

program
  .command('role <name> <roles...>')
  .description("set a node's roles")
  .addOption(dataOption())
  .action(async (name: string, roles: string[], options: { data: string }) => {
    await control(options.data, 'setRoles', { name, roles: roles.map(role) })
    console.log(`${name} is now ${roles.join(', ')}`)
  })

program
  .command('remove <name>')
  .description('remove a node from the cluster')
  .addOption(dataOption())
  .action(async (name: string, options: { data: string }) => {
    await control(options.data, 'remove', { name })
    console.log(`removed ${name}`)
  })

reportCommand(program, 'pending', 'nodes waiting to be admitted', 'pending', formatPending)

const dataset = program
  .command('dataset')
  .description('datasets: directory trees replicated from a master')
dataset
  .command('add <id>')
  .description('replicate a directory of a master to replicas')
  .addOption(dataOption())
  .requiredOption('--master <name>', 'the node whose directory this is')
  .requiredOption('--path <dir>', 'the directory on the master (absolute)')
  .addOption(replicaOption())
  .action(
    async (
      id: string,
      options: {
        data: string
        master: string
        path: string
        replica: { name: string; mirror: string | null }[]
      },
    ) => {
      await control(options.data, 'datasetAdd', {
        id,
        master: options.master,
        path: options.path,
        replicas: options.replica,
      })
      console.log(`added dataset ${id}`)
    },
  )
dataset
  .command('set-replicas <id>')
  .description(
    "change a dataset's replicas (a new replica catches up from the start of its history)",
  )
  .addOption(dataOption())
  .addOption(replicaOption())
  .action(
    async (
      id: string,
      options: { data: string; replica: { name: string; mirror: string | null }[] },
    ) => {
      await control(options.data, 'datasetSetReplicas', { id, replicas: options.replica })
      console.log(
        `dataset ${id} is now replicated to ${options.replica.map((replica) => replica.name).join(', ') || 'no node'}`,
      )
    },
  )
dataset
  .command('retention <id>')
  .description(
    'how long versions are kept: everything for a window, then thinned (applied at the next prune)',
  )
  .addOption(dataOption())
  .option('--keep-within <duration>', 'keep every version this recent (e.g. 24h, 7d)', '24h')
  .option('--hourly <n>', 'then the last version of each of this many hours', wholeNumber)
  .option('--daily <n>', 'then of this many days', wholeNumber)
  .option('--weekly <n>', 'then of this many weeks', wholeNumber)
  .option('--monthly <n>', 'then of this many months', wholeNumber)
  .option(
    '--max-age <duration>',
    'nothing older than this except recovery points and current versions',
  )
  .option('--keep-everything', 'remove the policy: keep every version', false)
  .action(
    async (
      id: string,
      options: {
        data: string
        keepWithin: string
        hourly?: number
        daily?: number
        weekly?: number
        monthly?: number
        maxAge?: string
        keepEverything: boolean
      },
    ) => {
      const policy = options.keepEverything
        ? null
        : {
            keepAllWithin: options.keepWithin,
            ...(options.hourly === undefined ? {} : { keepHourly: options.hourly }),
            ...(options.daily === undefined ? {} : { keepDaily: options.daily }),
            ...(options.weekly === undefined ? {} : { keepWeekly: options.weekly }),
            ...(options.monthly === undefined ? {} : { keepMonthly: options.monthly }),
            ...(options.maxAge === undefined ? {} : { maxAge: options.maxAge }),
          }
      await control(options.data, 'datasetSetRetention', { id, policy })
      console.log(
        policy === null ? `dataset ${id} keeps every version` : `dataset ${id}: retention set`,
      )
    },
  )
reportCommand(dataset, 'ls', 'list datasets', 'datasetList', formatDatasets)
dataset
  .command('rm <id>')
  .description('stop replicating a dataset (stored versions stay until pruned)')
  .addOption(dataOption())
  .action(async (id: string, options: { data: string }) => {
    await control(options.data, 'datasetRemove', { id })
    console.log(`removed dataset ${id}`)
  })

program
  .command('prune')
  .description("apply the datasets' retention policies on this node now and free the space")
  .addOption(dataOption())
  .action(async (options: { data: string }) => {
    await control(options.data, 'prune')
    console.log('pruned')
  })

program
  .command('status')
  .description('nodes, their Raft roles, and each replica’s lag')
  .addOption(dataOption())
  .option('--json', 'print JSON', false)
  .option('--local', "this node's own view only, without asking the others", false)
  .action(async (options: { data: string; json: boolean; local: boolean }) => {
    if (options.local)
      print(await control(options.data, 'localStatus'), options.json, formatLocalStatus)
    else print(await control(options.data, 'status'), options.json, formatStatus)
  })

program
  .command('versions <dataset/path>')
  .description('every stored version of a file')
  .addOption(dataOption())
  .option('--json', 'print JSON', false)
  .action(async (target: string, options: { data: string; json: boolean }) => {
    print(
      await control(options.data, 'versions', datasetPath(target)),
      options.json,
      formatVersions,
    )
  })

program
  .command('restore <dataset/path>')
  .description('restore a file or a directory tree as it was')
  .addOption(dataOption())
  .addOption(
    new Option('--at <time>', 'as it was at this time').argParser(pointInTime).conflicts('version'),
  )
  .addOption(
    new Option('--version <n>', 'this version (a number from `versions`)').argParser(wholeNumber),
  )
  .requiredOption('--to <dest>', 'the destination directory or file')
  .action(
    async (
      target: string,
      options: { data: string; at?: number; version?: number; to: string },
    ) => {
      const result = (await control(options.data, 'restore', {
        ...datasetPath(target),
        atMs: options.at ?? null,
        version: options.version ?? null,
        to: options.to,
      })) as {
        files: number
        bytes: number
        skipped: { path: string; message: string }[]
      }
      console.log(`restored ${result.files} file(s), ${result.bytes} bytes, to ${options.to}`)
      for (const skip of result.skipped) console.log(`skipped ${skip.path}: ${skip.message}`)
    },
  )

program
  .command('demo')
  .description('run the example cluster (six nodes on 127.0.0.1) and show replication and restore')
  .option('--keep', 'keep the temporary directory afterwards', false)
  .option('--no-wait', 'stop the cluster after the walkthrough instead of waiting for Ctrl-C')
  .action(async (options: { keep: boolean; wait: boolean }) => {
    const { runDemo } = await import('./demo.ts')
    await runDemo(options)
  })

try {
  await program.parseAsync()
} catch (error) {
  process.stderr.write(`clusterreplica: ${(error as Error).message.split('\n')[0]}\n`)
  process.exitCode = 1
}
