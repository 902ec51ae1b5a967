// The 256 MiB ingest of `npm run bench:storage`, in a process of its own so that its
// memory high-water mark is the ingest's alone: it opens the node store, scans the
// directory into a dataset, and prints one JSON line with the time the scan took, the
// kernel's RSS high-water mark (VmHWM in /proc/self/status) and, as a cross-check, the
// highest RSS seen by sampling process.memoryUsage.rss() every few milliseconds.
//
//   node --import tsx bench/storage-ingest-child.ts <data dir> <dataset id> <directory>
import { readFile } from 'node:fs/promises'
import { NodeStore } from '../storage/node-store.ts'

const RSS_SAMPLE_INTERVAL_MS = 5

const [data, id, directory] = process.argv.slice(2)
if (data === undefined || id === undefined || directory === undefined)
  throw new Error('usage: storage-ingest-child.ts <data dir> <dataset id> <directory>')

async function highWaterMarkBytes(): Promise<number> {
  const status = await readFile('/proc/self/status', 'utf8')
  const kibibytes = /^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1]
  if (kibibytes === undefined) throw new Error('no VmHWM in /proc/self/status')
  return Number(kibibytes) * 1024
}

const store = await NodeStore.open(data)
try {
  const dataset = await store.ownDataset(id)
  const rssBeforeBytes = process.memoryUsage.rss()
  let rssSampledMaxBytes = rssBeforeBytes
  const sampler = setInterval(() => {
    rssSampledMaxBytes = Math.max(rssSampledMaxBytes, process.memoryUsage.rss())
  }, RSS_SAMPLE_INTERVAL_MS)
  const startedMs = performance.now()
  const result = await dataset.scan(directory)
  const ingestMs = performance.now() - startedMs
  clearInterval(sampler)
  process.stdout.write(
    `${JSON.stringify({
      ingestMs,
      bytesRead: result.bytesRead,
      rssBeforeBytes,
      rssSampledMaxBytes,
      highWaterMarkBytes: await highWaterMarkBytes(),
    })}\n`,
  )
} finally {
  await store.close()
}
