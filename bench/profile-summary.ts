// `node --import tsx bench/profile-summary.ts FILE.cpuprofile [TOP]`: where a process spent
// its CPU time — self time by function and by file (node_modules grouped by package), and
// total time (self plus callees) by function — as shares of the time it was not idle; and
// how busy its main thread was, second by second (a thread busy all the time is the limit).
import { readFileSync } from 'node:fs'

interface ProfileNode {
  readonly id: number
  readonly callFrame: {
    readonly functionName: string
    readonly url: string
    readonly lineNumber: number
  }
  readonly children?: readonly number[]
}

interface Profile {
  readonly nodes: readonly ProfileNode[]
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

const [file, topText] = process.argv.slice(2)
if (file === undefined) {
  console.error('usage: profile-summary FILE.cpuprofile [TOP]')
  process.exit(2)
}
const top = Number(topText ?? 25)
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile

const selfUs = new Map<number, number>()
for (const [index, id] of profile.samples.entries())
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0))

const byId = new Map(profile.nodes.map((node) => [node.id, node]))
const IDLE = new Set(['(idle)', '(root)'])

const BUCKET_US = 1_000_000
const busyByBucket: number[] = []
let elapsedUs = 0
for (const [index, id] of profile.samples.entries()) {
  elapsedUs += profile.timeDeltas[index] ?? 0
  if (IDLE.has(byId.get(id)!.callFrame.functionName)) continue
  const bucket = Math.floor(elapsedUs / BUCKET_US)
  busyByBucket[bucket] = (busyByBucket[bucket] ?? 0) + (profile.timeDeltas[index] ?? 0)
}
const parentOf = new Map<number, number>()
for (const node of profile.nodes)
  for (const child of node.children ?? []) parentOf.set(child, node.id)

const fileOf = (url: string): string => {
  const modules = url.lastIndexOf('node_modules/')
  if (modules === -1) return url.replace(/^file:\/\/.*?\/work\/main\//, '') || '(native)'
  const rest = url.slice(modules + 'node_modules/'.length).split('/')
  return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!
}
const functionKey = (node: ProfileNode): string =>
  `${node.callFrame.functionName || '(anonymous)'} ${fileOf(node.callFrame.url)}:${node.callFrame.lineNumber + 1}`

const selfByFunction = new Map<string, number>()
const selfByFile = new Map<string, number>()
const totalByFunction = new Map<string, number>()
let busyUs = 0
let idleUs = 0
for (const [id, us] of selfUs) {
  const node = byId.get(id)!
  if (IDLE.has(node.callFrame.functionName)) {
    idleUs += us
    continue
  }
  busyUs += us
  const key = functionKey(node)
  selfByFunction.set(key, (selfByFunction.get(key) ?? 0) + us)
  const fileKey = fileOf(node.callFrame.url)
  selfByFile.set(fileKey, (selfByFile.get(fileKey) ?? 0) + us)
  // Every distinct function on the stack gets the sample once (recursion counted once).
  const seen = new Set<string>()
  for (
    let current: number | undefined = id;
    current !== undefined;
    current = parentOf.get(current)
  ) {
    const each = functionKey(byId.get(current)!)
    if (seen.has(each)) continue
    seen.add(each)
    totalByFunction.set(each, (totalByFunction.get(each) ?? 0) + us)
  }
}

const print = (title: string, table: Map<string, number>): void => {
  console.log(`\n${title}`)
  for (const [key, us] of [...table].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(
      `${((us / busyUs) * 100).toFixed(1).padStart(6)} %  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}`,
    )
}
console.log(`${file}: busy ${(busyUs / 1e6).toFixed(1)} s, idle ${(idleUs / 1e6).toFixed(1)} s`)
console.log(
  `main thread busy, % per second: ${Array.from(busyByBucket, (us = 0) => ((us / BUCKET_US) * 100).toFixed(0)).join(' ')}`,
)
print('self time by file or package', selfByFile)
print('self time by function', selfByFunction)
print('total time by function', totalByFunction)
