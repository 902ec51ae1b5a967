import '../../node/polyfill.ts'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import * as z from 'zod'
import { isClusterError, type ClusterErrorCode } from '../../consensus/cluster-error.ts'
import type { P2pNode } from '../../node/p2p/p2p-node.ts'
import { FrameReader, writeFrame } from '../../node/wire/framing.ts'
import { RPC_PROTOCOL } from '../../node/wire/protocol-ids.ts'
import { callRpc, registerRpc, rpcCallsInFlight } from '../../node/wire/rpc.ts'
import { startConnectedNodes, stopNodes, waitFor } from './helpers/nodes.ts'

const addRequest = z.object({ a: z.number().int(), b: z.number().int() }).strict()
const addResponse = z.object({ sum: z.number().int(), caller: z.string() }).strict()

let nodes: P2pNode[] = []
let server: P2pNode
let client: P2pNode
let stranger: P2pNode
const unregister: (() => Promise<void>)[] = []

test.before(async () => {
  nodes = await startConnectedNodes(3)
  ;[server, client, stranger] = nodes as [P2pNode, P2pNode, P2pNode]
  unregister.push(
    await registerRpc(server, 'add', {
      request: addRequest,
      response: addResponse,
      authorize: (peer) => peer !== stranger.peerId,
      handle: ({ a, b }, peer) => ({ sum: a + b, caller: peer }),
    }),
    await registerRpc(server, 'hang', {
      request: z.null(),
      response: z.null(),
      authorize: () => true,
      handle: () => new Promise<null>(() => undefined),
    }),
  )
})

test.after(async () => {
  for (const remove of unregister) await remove()
  await stopNodes(nodes)
})

async function expectCode(call: Promise<unknown>, code: ClusterErrorCode): Promise<string> {
  const error = await call.then(
    () => null,
    (failure: unknown) => failure,
  )
  assert.ok(isClusterError(error, code), `expected ${code}, got ${String(error)}`)
  return (error as Error).message
}

test('a call returns the handler answer, validated', async () => {
  const answer = await callRpc(
    client,
    server.peerId,
    'add',
    { a: 2, b: 40 },
    { response: addResponse },
  )
  assert.equal(answer, { sum: 42, caller: client.peerId })
})

test('a request that does not fit the schema gets BAD_MESSAGE', async () => {
  const message = await expectCode(
    callRpc(client, server.peerId, 'add', { a: 'two', b: 40 }, { response: addResponse }),
    'BAD_MESSAGE',
  )
  assert.match(message, /bad add request/)
})

test('an unknown method gets NOT_FOUND', async () => {
  await expectCode(
    callRpc(client, server.peerId, 'subtract', {}, { response: addResponse }),
    'NOT_FOUND',
  )
})

test('an unauthorised peer gets REFUSED', async () => {
  await expectCode(
    callRpc(stranger, server.peerId, 'add', { a: 1, b: 1 }, { response: addResponse }),
    'REFUSED',
  )
})

test('a call that gets no answer in time fails with TIMEOUT', async () => {
  const startedMs = Date.now()
  await expectCode(
    callRpc(client, server.peerId, 'hang', null, { response: z.null(), timeoutMs: 300 }),
    'TIMEOUT',
  )
  assert.ok(Date.now() - startedMs < 2000)
  // The server lets go of the abandoned call, so a stuck handler does not keep its slot.
  await waitFor(() => rpcCallsInFlight(server) === 0, 'the abandoned call released')
})

test('an answer that does not fit the caller schema is BAD_MESSAGE', async () => {
  await expectCode(
    callRpc(
      client,
      server.peerId,
      'add',
      { a: 1, b: 1 },
      { response: z.object({ product: z.number() }) },
    ),
    'BAD_MESSAGE',
  )
})

test('raw garbage requests are answered with an error and the server keeps serving', async () => {
  for (const payload of [
    new Uint8Array([0xff, 0xfe, 0x00]),
    new TextEncoder().encode('{"method":1}'),
  ]) {
    const stream = await client.openStream(
      server.peerId,
      RPC_PROTOCOL.id,
      AbortSignal.timeout(5000),
    )
    const reader = new FrameReader(stream, RPC_PROTOCOL)
    await writeFrame(stream, RPC_PROTOCOL, payload)
    await stream.close()
    const answer = JSON.parse(new TextDecoder().decode((await reader.read({ timeoutMs: 5000 }))!))
    assert.equal(answer, { error: { code: 'BAD_MESSAGE', message: 'malformed rpc request' } })
  }
  const answer = await callRpc(
    client,
    server.peerId,
    'add',
    { a: 1, b: 2 },
    { response: addResponse },
  )
  assert.is(answer.sum, 3)
})

test.run()
