// Runs a range of seeds, in this process or spread over child processes (one per core),
// and gathers their results. Children are plain `node --import tsx` processes talking
// over IPC, so a crash in one is reported as a failed seed range, not lost.
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { runSeed, type ScenarioOptions, type SeedResult } from './chaos-scenario.ts'

export type RunOptions = Omit<ScenarioOptions, 'seed'>

export interface WorkerRequest {
  readonly seeds: readonly number[]
  readonly options: RunOptions
}

/** What a worker sends back per seed: the full trace only when asked for it. */
export type WorkerReply = { readonly result: SeedResult } | { readonly done: true }

export function runSeedsHere(
  seeds: readonly number[],
  options: RunOptions,
  onResult: (result: SeedResult) => void,
): void {
  for (const seed of seeds) onResult(runSeed({ ...options, seed }))
}

const workerPath = fileURLToPath(new URL('./seed-worker.ts', import.meta.url))

export async function runSeedsInWorkers(
  seeds: readonly number[],
  options: RunOptions,
  jobs: number,
  onResult: (result: SeedResult) => void,
): Promise<void> {
  const shares: number[][] = Array.from(
    { length: Math.max(1, Math.min(jobs, seeds.length)) },
    () => [],
  )
  seeds.forEach((seed, index) => shares[index % shares.length]!.push(seed))
  await Promise.all(
    shares.map(
      (share) =>
        new Promise<void>((resolve, reject) => {
          const child = fork(workerPath, [], {
            execArgv: ['--import', 'tsx'],
            stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
          })
          let finished = false
          child.on('message', (reply: WorkerReply) => {
            if ('result' in reply) onResult(reply.result)
            else finished = true
          })
          child.on('exit', (code) => {
            if (finished) resolve()
            else
              reject(
                new Error(
                  `simulator worker for seeds ${share[0]}… exited with code ${code} before finishing`,
                ),
              )
          })
          child.send({ seeds: share, options } satisfies WorkerRequest)
        }),
    ),
  )
}
