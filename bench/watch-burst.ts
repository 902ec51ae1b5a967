// `node --import tsx bench/watch-burst.ts`: what watching costs a master during a burst of
// 1,000 new 4 KiB files in one new directory, in a child process that only watches (the
// files are written by this one, as an application would): Node's recursive fs.watch
// (on Linux, Node 20 emulates it in JavaScript: every event in a directory lists the whole
// directory again) beside the change watcher's own DirectoryTreeWatch (one inotify watch per
// directory). It prints, for each, the CPU time of the watching process and when its last
// event came.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { watch } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DirectoryTreeWatch } from '../node/replication/directory-tree-watch.ts'

const BURST_FILES = 1000
const FILE_BYTES = 4096
/** The watcher reports once no event came for this long. */
const QUIET_MS = 1000

type Mode = 'recursive' | 'per-directory'

/** The child: watches `root`, prints 'ready', then its CPU time and last event once events stop. */
async function watchChild(mode: Mode, root: string): Promise<void> {
  const startedMs = performance.now()
  let lastEventMs = startedMs
  const seen = new Set<string>()
  const onPath = (path: string): void => {
    seen.add(path)
    lastEventMs = performance.now()
  }
  let close: () => void
  if (mode === 'recursive') {
    const watcher = watch(
      root,
      { recursive: true },
      (_event, name) => name !== null && onPath(name),
    )
    close = () => watcher.close()
  } else {
    const tree = new DirectoryTreeWatch(root, {
      onPath,
      onError: (error) => {
        throw error
      },
    })
    await tree.start()
    close = () => tree.close()
  }
  const cpuBefore = process.cpuUsage()
  process.stdout.write('ready\n')
  const readyMs = performance.now()
  while (performance.now() - Math.max(lastEventMs, readyMs) < QUIET_MS)
    await new Promise((resolve) => setTimeout(resolve, 50))
  const cpu = process.cpuUsage(cpuBefore)
  close()
  process.stdout.write(
    `${JSON.stringify({ cpuMs: (cpu.user + cpu.system) / 1000, lastEventMs: lastEventMs - readyMs, paths: seen.size })}\n`,
  )
}

async function measure(mode: Mode): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'clusterreplica-watch-'))
  try {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(import.meta.url), mode, root],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    let output = ''
    const ready = new Promise<void>((resolve) =>
      child.stdout.on('data', (data: Buffer) => {
        output += data.toString()
        if (output.includes('ready\n')) resolve()
      }),
    )
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()))
    await ready
    const startedMs = performance.now()
    await mkdir(join(root, 'burst'))
    await Promise.all(
      Array.from({ length: BURST_FILES }, (_, index) =>
        writeFile(join(root, 'burst', `file-${index}.dat`), randomBytes(FILE_BYTES)),
      ),
    )
    const writtenMs = performance.now() - startedMs
    await exited
    const figures = JSON.parse(output.slice(output.indexOf('ready\n') + 6)) as {
      cpuMs: number
      lastEventMs: number
      paths: number
    }
    console.log(
      `${mode.padEnd(13)} watcher: CPU ${figures.cpuMs.toFixed(0)} ms, last event ${figures.lastEventMs.toFixed(0)} ms ` +
        `after it was ready (the files were written in ${writtenMs.toFixed(0)} ms), ${figures.paths} paths seen`,
    )
  } finally {
    await rm(root, { recursive: true, force: true })
  }
}

const [mode, root] = process.argv.slice(2)
if (mode === 'recursive' || mode === 'per-directory') await watchChild(mode, root!)
else {
  console.log(`a burst of ${BURST_FILES} new ${FILE_BYTES / 1024} KiB files in one new directory:`)
  await measure('recursive')
  await measure('per-directory')
}
