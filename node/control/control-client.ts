// The command line's side of the control socket (see control-server.ts).
import { request } from 'node:http'
import { ClusterError, type ClusterErrorCode } from '../../consensus/cluster-error.ts'

/** Control calls are local and quick; long work (a restore) reports progress in its answer instead. */
export const CONTROL_CALL_TIMEOUT_MS = 10 * 60_000
const ANSWER_BYTES_MAX = 64 * 1024 * 1024

export async function callControl(
  socketPath: string,
  method: string,
  params: unknown = {},
): Promise<unknown> {
  const body = JSON.stringify(params)
  const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const outgoing = request(
      {
        socketPath,
        path: `/v1/${method}`,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: CONTROL_CALL_TIMEOUT_MS,
      },
      (response) => {
        const parts: Buffer[] = []
        let size = 0
        response.on('data', (part: Buffer) => {
          size += part.length
          if (size > ANSWER_BYTES_MAX) response.destroy(new Error('answer too large'))
          else parts.push(part)
        })
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            text: Buffer.concat(parts).toString('utf8'),
          }),
        )
        response.on('error', reject)
      },
    )
    outgoing.on('timeout', () =>
      outgoing.destroy(
        ClusterError.timeout(
          `the daemon did not answer ${method} within ${CONTROL_CALL_TIMEOUT_MS} ms`,
        ),
      ),
    )
    outgoing.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED') {
        reject(
          ClusterError.refused(
            `no clusterreplica daemon is running for this data directory (${socketPath}); start it with: clusterreplica start --data DIR`,
          ),
        )
      } else reject(error)
    })
    outgoing.end(body)
  })
  let parsed: { result?: unknown; error?: { code: ClusterErrorCode; message: string } }
  try {
    parsed = JSON.parse(answer.text) as typeof parsed
  } catch {
    throw ClusterError.badMessage(
      `the daemon's answer to ${method} is not JSON (HTTP ${answer.status})`,
    )
  }
  if (parsed.error !== undefined) throw new ClusterError(parsed.error.code, parsed.error.message)
  return parsed.result
}
