// A small request/response protocol between nodes (admin forwarding, joining, status):
// one call per stream, one JSON frame each way, every body checked against a zod schema
// on arrival. Errors travel as `{ error: { code, message } }` and surface on the caller
// as a ClusterError with that code; a malformed or unauthorised request gets an error
// answer, never a crash.
import type { Stream } from '@libp2p/interface'
import * as z from 'zod'
import { ClusterError, isClusterError } from '../../consensus/cluster-error.ts'
import type { P2pNode } from '../p2p/p2p-node.ts'
import { FrameReader, streamError, writeFrame } from './framing.ts'
import { decodeJson, encodeJson, errorBody, errorBodySchema } from './json-frames.ts'
import { handlerOptions, RPC_PROTOCOL } from './protocol-ids.ts'

export const RPC_TIMEOUT_MS_DEFAULT = 10_000
/** How long a caller has to send its request once the stream is open. */
export const RPC_REQUEST_READ_TIMEOUT_MS = 10_000
/** Calls being handled at once by one node; past it, callers are told to come back. */
export const RPC_CALLS_IN_FLIGHT_MAX = 64
export const RPC_METHODS_MAX = 256

const METHOD_PATTERN = /^[a-z][a-zA-Z0-9.-]{0,63}$/
const requestEnvelope = z.object({ method: z.string().regex(METHOD_PATTERN), request: z.unknown() })
const responseEnvelope = z.union([
  z.object({ result: z.unknown() }).strict(),
  z.object({ error: errorBodySchema }).strict(),
])

export interface RpcMethod<Request, Response> {
  readonly request: z.ZodType<Request>
  readonly response: z.ZodType<Response>
  /** Whether this peer may call the method (joining is open to all, admin calls are not). */
  readonly authorize: (peer: string) => boolean
  readonly handle: (request: Request, peer: string) => Promise<Response> | Response
}

interface Registry {
  readonly methods: Map<string, RpcMethod<unknown, unknown>>
  callsInFlight: number
}

const registries = new WeakMap<P2pNode, Registry>()

/** Serves `method` on `node` until the returned function unregisters it. */
export async function registerRpc<Request, Response>(
  node: P2pNode,
  method: string,
  definition: RpcMethod<Request, Response>,
): Promise<() => Promise<void>> {
  if (!METHOD_PATTERN.test(method)) throw ClusterError.badArgument(`bad rpc method name ${method}`)
  let registry = registries.get(node)
  if (registry === undefined) {
    const created: Registry = { methods: new Map(), callsInFlight: 0 }
    await node.handle(
      RPC_PROTOCOL.id,
      (stream, peer) => void serve(created, stream, peer),
      handlerOptions(RPC_PROTOCOL),
    )
    registries.set(node, created)
    registry = created
  }
  if (registry.methods.has(method))
    throw ClusterError.badArgument(`rpc method ${method} is already registered`)
  if (registry.methods.size >= RPC_METHODS_MAX)
    throw ClusterError.badArgument(`at most ${RPC_METHODS_MAX} rpc methods`)
  registry.methods.set(method, definition as RpcMethod<unknown, unknown>)
  const registered = registry
  return async () => {
    registered.methods.delete(method)
    if (registered.methods.size > 0 || registries.get(node) !== registered) return
    registries.delete(node)
    await node.unhandle(RPC_PROTOCOL.id)
  }
}

/** Calls being handled by `node` right now (for status, and to see that none is stuck). */
export function rpcCallsInFlight(node: P2pNode): number {
  return registries.get(node)?.callsInFlight ?? 0
}

export interface CallOptions<Response> {
  readonly response: z.ZodType<Response>
  readonly signal?: AbortSignal
  readonly timeoutMs?: number
}

/** Calls `method` on `peer`: the response, or a ClusterError (the remote's code, or TIMEOUT, CLOSED, BAD_MESSAGE). */
export async function callRpc<Response>(
  node: P2pNode,
  peer: string,
  method: string,
  request: unknown,
  options: CallOptions<Response>,
): Promise<Response> {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? RPC_TIMEOUT_MS_DEFAULT)
  const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout])
  const stream = await node.openStream(peer, RPC_PROTOCOL.id, signal)
  try {
    const reader = new FrameReader(stream, RPC_PROTOCOL)
    await writeFrame(stream, RPC_PROTOCOL, encodeJson({ method, request }), { signal })
    await stream.close({ signal })
    const frame = await reader.read({ signal })
    if (frame === null)
      throw ClusterError.badMessage(`${peer} closed the ${method} call without an answer`)
    const envelope = responseEnvelope.safeParse(decodeJson(frame))
    if (!envelope.success)
      throw ClusterError.badMessage(`${peer} answered ${method} with a malformed response`)
    if ('error' in envelope.data)
      throw new ClusterError(envelope.data.error.code, envelope.data.error.message)
    const response = options.response.safeParse(envelope.data.result)
    if (!response.success)
      throw ClusterError.badMessage(
        `${peer} answered ${method} with a response that does not fit: ${z.prettifyError(response.error)}`,
      )
    return response.data
  } catch (error) {
    stream.abort(error as Error)
    throw streamError(RPC_PROTOCOL, error, signal)
  }
}

async function serve(registry: Registry, stream: Stream, peer: string): Promise<void> {
  const reader = new FrameReader(stream, RPC_PROTOCOL)
  let answer: unknown
  try {
    const frame = await reader.read({ timeoutMs: RPC_REQUEST_READ_TIMEOUT_MS })
    if (frame === null) return void stream.abort(ClusterError.badMessage('no rpc request'))
    if (registry.callsInFlight >= RPC_CALLS_IN_FLIGHT_MAX)
      throw ClusterError.refused(`busy: ${RPC_CALLS_IN_FLIGHT_MAX} calls in progress, try again`)
    registry.callsInFlight++
    try {
      // A caller that gives up resets the stream: stop waiting, so a stuck handler does
      // not keep its slot.
      const abandoned = new Promise<never>((_resolve, reject) =>
        stream.addEventListener('close', () => reject(ClusterError.closed('caller went away')), {
          once: true,
        }),
      )
      abandoned.catch(() => undefined)
      answer = { result: await Promise.race([dispatch(registry, frame, peer), abandoned]) }
    } finally {
      registry.callsInFlight--
    }
  } catch (error) {
    if (isClusterError(error) && (error.code === 'CLOSED' || error.code === 'TIMEOUT'))
      return void stream.abort(error)
    answer = { error: errorBody(error) }
  }
  let bytes = encodeJson(answer)
  if (bytes.byteLength > RPC_PROTOCOL.frameBytesMax)
    bytes = encodeJson({
      error: { code: 'IO_ERROR', message: `the answer of ${bytes.byteLength} bytes is too large` },
    })
  try {
    await writeFrame(stream, RPC_PROTOCOL, bytes, { timeoutMs: RPC_TIMEOUT_MS_DEFAULT })
    await stream.close()
  } catch (error) {
    stream.abort(error as Error)
  }
}

async function dispatch(registry: Registry, frame: Uint8Array, peer: string): Promise<unknown> {
  const envelope = requestEnvelope.safeParse(decodeJson(frame))
  if (!envelope.success) throw ClusterError.badMessage('malformed rpc request')
  const { method, request } = envelope.data
  const definition = registry.methods.get(method)
  if (definition === undefined) throw ClusterError.notFound(`unknown rpc method ${method}`)
  if (!definition.authorize(peer)) throw ClusterError.refused(`${peer} may not call ${method}`)
  const parsed = definition.request.safeParse(request)
  if (!parsed.success)
    throw ClusterError.badMessage(`bad ${method} request: ${z.prettifyError(parsed.error)}`)
  return definition.handle(parsed.data, peer)
}
