// What a node keeps in its data directory, and its settings file. The directory is the
// node: its identity, its Raft log, its version store and its control socket.
import { mkdir, open, readFile, rename, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { ClusterError } from '../../consensus/cluster-error.ts'
import { nameSchema } from '../topology/fields.ts'

export const CONTROL_SOCKET_NAME = 'control.sock'
export const SETTINGS_FILE_NAME = 'node.json'
export const RAFT_DIRECTORY_NAME = 'raft'
export const STORE_DIRECTORY_NAME = 'store'

export const nodeSettingsSchema = z.object({
  version: z.literal(1),
  // The topology's own rule: the name and site go into its commands as they are.
  name: nameSchema,
  site: nameSchema,
  listen: z.array(z.string().max(256)).max(16),
  bootstrap: z.array(z.string().max(512)).max(64),
})

export type NodeSettings = z.infer<typeof nodeSettingsSchema>

export function dataPaths(directory: string) {
  return {
    directory,
    settings: join(directory, SETTINGS_FILE_NAME),
    controlSocket: join(directory, CONTROL_SOCKET_NAME),
    raft: join(directory, RAFT_DIRECTORY_NAME),
    store: join(directory, STORE_DIRECTORY_NAME),
  }
}

/** The data directory, created owner-only: it holds the node's private key. */
export async function ensureDataDirectory(directory: string): Promise<void> {
  await mkdir(directory, { recursive: true, mode: 0o700 })
  await chmod(directory, 0o700)
}

export async function readSettings(directory: string): Promise<NodeSettings | null> {
  const path = dataPaths(directory).settings
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw ClusterError.io(`cannot read ${path}: ${(error as Error).message}`, error)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw ClusterError.corruptStore(`${path} is not JSON: fix or remove it`)
  }
  const parsed = nodeSettingsSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw ClusterError.corruptStore(
      `${path}: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`,
    )
  }
  return parsed.data
}

/** Written whole to a temporary file, synced, then renamed over the old one. */
export async function writeSettings(directory: string, settings: NodeSettings): Promise<void> {
  const checked = nodeSettingsSchema.safeParse(settings)
  if (!checked.success)
    throw ClusterError.badArgument(checked.error.issues[0]?.message ?? 'invalid settings')
  const path = dataPaths(directory).settings
  const temporary = `${path}.tmp`
  const file = await open(temporary, 'w', 0o600)
  try {
    await file.writeFile(JSON.stringify(checked.data, null, 2) + '\n')
    await file.sync()
  } finally {
    await file.close()
  }
  await rename(temporary, path)
}
