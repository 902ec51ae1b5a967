// A peer that speaks the chunk protocol badly on purpose, over a real stream: it either
// answers every request with wrong bytes of the right length, or reads requests and never
// answers. The fetcher must drop it and get the chunks elsewhere.
import { randomBytes } from 'node:crypto'
import type { P2pNode } from '../../../node/p2p/p2p-node.ts'
import { decodeRequest, encodeResponse } from '../../../node/wire/chunk-messages.ts'
import { FrameReader, writeFrame } from '../../../node/wire/framing.ts'
import { CHUNKS_PROTOCOL } from '../../../node/wire/protocol-ids.ts'

export type RogueBehaviour = 'wrong-bytes' | 'stall'

export async function serveRogueChunks(
  node: P2pNode,
  behaviour: RogueBehaviour,
  lengthOf: (hash: string) => number,
): Promise<{ requests: number }> {
  const seen = { requests: 0 }
  await node.handle(
    CHUNKS_PROTOCOL.id,
    (stream) => {
      const reader = new FrameReader(stream, CHUNKS_PROTOCOL)
      void (async () => {
        for (;;) {
          const frame = await reader.read()
          if (frame === null) return
          const request = decodeRequest(frame)
          if (!request.ok) return
          seen.requests++
          if (behaviour === 'stall') continue
          for (const hash of request.value) {
            const bytes = randomBytes(lengthOf(hash))
            await writeFrame(
              stream,
              CHUNKS_PROTOCOL,
              encodeResponse({ kind: 'chunk', hash, bytes }),
            )
          }
        }
      })().catch(() => undefined)
    },
    { maxInboundStreams: 4 },
  )
  return seen
}
