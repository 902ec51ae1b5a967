// A temporary directory per test, removed afterwards (hypercore's test helper `create(t)`
// in spirit). Directories live under the OS temp folder so a clean clone needs nothing.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export async function makeTempDir(prefix = 'clusterreplica-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix))
}

export async function removeDir(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true, maxRetries: 3 })
}

/** Runs `body` with a fresh directory and removes it whatever happens. */
export async function withTempDir<T>(body: (path: string) => Promise<T>): Promise<T> {
  const path = await makeTempDir()
  try {
    return await body(path)
  } finally {
    await removeDir(path)
  }
}
