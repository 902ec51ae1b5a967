// The replication benchmark's reference: the same tree streamed as tar over a TCP socket on
// loopback to each destination at once (one stream per destination, as one master sending
// to that many replicas) and unpacked, then synced — what `tar | nc` would do. Prints one
// JSON line with the time for the copies and for the copies plus sync.
import { spawn } from 'node:child_process'
import { createServer, connect } from 'node:net'

const [source, ...destinations] = process.argv.slice(2)
if (source === undefined || destinations.length === 0) {
  console.error('usage: raw-tar-copy SOURCE DESTINATION...')
  process.exit(2)
}

function finished(child: ReturnType<typeof spawn>, name: string): Promise<void> {
  return new Promise((resolve, reject) =>
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${name} exited with ${code}`)),
    ),
  )
}

/** One tar stream from `source` over a new socket, unpacked into `destination`. */
async function copyOver(destination: string): Promise<void> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  const received = new Promise<void>((resolve, reject) => {
    server.once('connection', (socket) => {
      const untar = spawn('tar', ['-x', '-C', destination], {
        stdio: ['pipe', 'ignore', 'inherit'],
      })
      socket.pipe(untar.stdin!)
      finished(untar, 'tar -x').then(resolve, reject)
    })
  })
  const socket = connect(port, '127.0.0.1')
  const pack = spawn('tar', ['-c', '-C', source!, '.'], { stdio: ['ignore', 'pipe', 'inherit'] })
  pack.stdout!.pipe(socket)
  await Promise.all([finished(pack, 'tar -c'), received])
  server.close()
}

const startedMs = performance.now()
await Promise.all(destinations.map(copyOver))
const copyMs = performance.now() - startedMs
await finished(spawn('sync', ['-f', destinations[0]!], { stdio: 'inherit' }), 'sync')
const copyAndSyncMs = performance.now() - startedMs
console.log(JSON.stringify({ copyMs, copyAndSyncMs }))
