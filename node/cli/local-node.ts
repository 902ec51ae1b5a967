// Real clusterreplica processes on this machine, for the demo and the end-to-end tests:
// each is `clusterreplica start` in its own data directory, listening on 127.0.0.1 (never
// mDNS: on one machine it adds nothing, and multicast would leave the machine), stopped
// by its process id.
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { ClusterError } from '../../consensus/cluster-error.ts'
import { callControl } from '../control/control-client.ts'
import { CONTROL_SOCKET_NAME } from '../daemon/data-directory.ts'

export const CLI_PATH = fileURLToPath(new URL('../../bin/clusterreplica.js', import.meta.url))
const START_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 10_000
const OUTPUT_KEPT_BYTES = 256 * 1024

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise<void>((resolve) => server.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** Runs `clusterreplica ARGS` to completion: its output, or an error with its last line. */
export async function runCli(args: readonly string[]): Promise<string> {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (data: Buffer) => (output += data.toString()))
  child.stderr.on('data', (data: Buffer) => (output += data.toString()))
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  if (code !== 0)
    throw new ClusterError('REFUSED', output.trim().split('\n').at(-1) ?? `exit ${code}`)
  return output
}

export interface LocalNodeOptions {
  /** A command the node runs under, e.g. `ip netns exec NS` to put it in a network namespace. */
  readonly wrapper?: readonly string[]
  /** LAN discovery: only inside a network namespace a test made (multicast must not leave the machine). */
  readonly mdns?: boolean
}

export class LocalNode {
  readonly name: string
  readonly dataDirectory: string
  readonly port: number
  readonly #options: LocalNodeOptions
  #child: ChildProcess | null = null
  #output = ''
  #peerId: string | null = null

  constructor(name: string, dataDirectory: string, port: number, options: LocalNodeOptions = {}) {
    this.name = name
    this.dataDirectory = dataDirectory
    this.port = port
    this.#options = options
  }

  get listen(): string {
    return `/ip4/127.0.0.1/tcp/${this.port}`
  }

  /** The address others bootstrap from, with the peer id once it is known. */
  get address(): string {
    return this.#peerId === null ? this.listen : `${this.listen}/p2p/${this.#peerId}`
  }

  get peerId(): string | null {
    return this.#peerId
  }

  get pid(): number | null {
    return this.#child?.pid ?? null
  }

  get running(): boolean {
    return this.#child !== null
  }

  /** What the process printed (the latest part). */
  get output(): string {
    return this.#output
  }

  init(): Promise<string> {
    return runCli([
      'init',
      '--data',
      this.dataDirectory,
      '--name',
      this.name,
      '--listen',
      this.listen,
    ])
  }

  /** Starts the daemon and waits until its control socket answers. */
  async start(bootstrap: readonly string[] = []): Promise<void> {
    if (this.#child !== null) throw new Error(`${this.name} is already running`)
    const args = [
      'start',
      '--data',
      this.dataDirectory,
      '--name',
      this.name,
      '--listen',
      this.listen,
    ]
    if (this.#options.mdns !== true) args.push('--no-mdns')
    for (const address of bootstrap) args.push('--bootstrap', address)
    const command = [...(this.#options.wrapper ?? []), process.execPath, CLI_PATH, ...args]
    // A wrapper such as `ip netns exec` execs the node in its place: the pid stays the node's.
    const child = spawn(command[0]!, command.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.#child = child
    const keep = (data: Buffer): void => {
      this.#output = (this.#output + data.toString()).slice(-OUTPUT_KEPT_BYTES)
      this.#peerId ??= /peer id: (\S+)/.exec(this.#output)?.[1] ?? null
    }
    child.stdout!.on('data', keep)
    child.stderr!.on('data', keep)
    child.on('exit', () => {
      if (this.#child === child) this.#child = null
    })
    const deadline = Date.now() + START_TIMEOUT_MS
    while (Date.now() < deadline) {
      if (this.#child === null)
        throw new Error(`${this.name} exited at start: ${this.#output.trim().split('\n').at(-1)}`)
      if (this.#peerId !== null) {
        try {
          await this.control('pending')
          return
        } catch {
          // not listening yet
        }
      }
      await sleep(50)
    }
    throw new Error(`${this.name} did not start within ${START_TIMEOUT_MS} ms`)
  }

  control(method: string, params: unknown = {}): Promise<unknown> {
    return callControl(join(this.dataDirectory, CONTROL_SOCKET_NAME), method, params)
  }

  /** SIGTERM, then SIGKILL if it does not exit in time. */
  async stop(): Promise<void> {
    await this.#signal('SIGTERM', STOP_TIMEOUT_MS)
  }

  /** SIGKILL at once: a crash. */
  async kill(): Promise<void> {
    await this.#signal('SIGKILL', STOP_TIMEOUT_MS)
  }

  async #signal(signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
    const child = this.#child
    if (child === null || child.pid === undefined) return
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    process.kill(child.pid, signal)
    const timedOut = await Promise.race([
      exited.then(() => false),
      sleep(timeoutMs).then(() => true),
    ])
    if (timedOut) {
      process.kill(child.pid, 'SIGKILL')
      await exited
    }
    this.#child = null
  }
}
