// The local control socket: the command line talks to its own daemon over HTTP on a unix
// socket inside the data directory, readable and writable by the owner only. Every call
// is `POST /v1/<method>` with a JSON body validated by the method's schema; the answer is
// `{ result }` or `{ error: { code, message } }` with a one-line message.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { chmod, rm } from 'node:fs/promises'
import type { z } from 'zod'
import { ClusterError, isClusterError } from '../../consensus/cluster-error.ts'

/** A request body larger than this is refused: control calls are small. */
export const CONTROL_BODY_BYTES_MAX = 1024 * 1024

export interface ControlMethod<Schema extends z.ZodType> {
  readonly params: Schema
  handle(params: z.infer<Schema>): Promise<unknown>
}

export class ControlServer {
  readonly #socketPath: string
  readonly #methods = new Map<string, ControlMethod<z.ZodType>>()
  #server: Server | null = null

  constructor(socketPath: string) {
    this.#socketPath = socketPath
  }

  register<Schema extends z.ZodType>(name: string, method: ControlMethod<Schema>): void {
    this.#methods.set(name, method as unknown as ControlMethod<z.ZodType>)
  }

  async start(): Promise<void> {
    // A socket left behind by a killed daemon would make listen() fail with EADDRINUSE.
    await rm(this.#socketPath, { force: true })
    const server = createServer((request, response) => void this.#serve(request, response))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.#socketPath, () => resolve())
    })
    await chmod(this.#socketPath, 0o600)
    this.#server = server
  }

  async stop(): Promise<void> {
    const server = this.#server
    this.#server = null
    if (server === null) return
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await rm(this.#socketPath, { force: true })
  }

  async #serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    try {
      const name = /^\/v1\/([a-zA-Z]+)$/.exec(request.url ?? '')?.[1]
      const method = name === undefined ? undefined : this.#methods.get(name)
      if (request.method !== 'POST' || method === undefined) {
        throw ClusterError.badArgument(`unknown control call ${request.method} ${request.url}`)
      }
      const body = await readBody(request)
      const parsed = method.params.safeParse(body)
      if (!parsed.success) {
        const issue = parsed.error.issues[0]
        throw ClusterError.badArgument(
          `${name}: ${issue?.path.join('.') || 'request'}: ${issue?.message ?? 'invalid'}`,
        )
      }
      send(response, 200, { result: (await method.handle(parsed.data)) ?? null })
    } catch (error) {
      const clusterError = isClusterError(error)
        ? error
        : ClusterError.io(`internal error: ${(error as Error).message}`)
      send(response, clusterError.code === 'IO_ERROR' ? 500 : 400, {
        error: { code: clusterError.code, message: clusterError.message },
      })
    }
  }
}

async function readBody(request: IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = []
  let size = 0
  for await (const part of request as AsyncIterable<Buffer>) {
    size += part.length
    if (size > CONTROL_BODY_BYTES_MAX)
      throw ClusterError.badArgument(`request over ${CONTROL_BODY_BYTES_MAX} bytes`)
    parts.push(part)
  }
  const text = Buffer.concat(parts).toString('utf8')
  try {
    return text === '' ? {} : JSON.parse(text)
  } catch {
    throw ClusterError.badArgument('request body is not JSON')
  }
}

function send(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  })
  response.end(text)
}
