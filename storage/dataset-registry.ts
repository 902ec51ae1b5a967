// Every dataset a node has ever opened, with its log key, in a small file beside the
// stores (DIR/datasets.json). Prune needs it: chunks are shared by every dataset on the
// node, so a dataset nobody opened since the last start must still count. It lives apart
// from the index database so that a damaged index, set aside and rebuilt, cannot make
// prune forget a dataset; it is replaced atomically (temporary file, sync, rename).
import { open, readFile } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import { ClusterError } from '../consensus/cluster-error.ts'
import { fileSystemCall, writeFileAtomically } from './restore.ts'
import { SerialQueue } from './store-locks.ts'
import { datasetId, type DatasetId } from './version-record.ts'

/** Datasets one node may hold. */
export const DATASETS_MAX = 10_000

export interface RegisteredDataset {
  readonly id: DatasetId
  /** The log's public key, 64 hex characters. */
  readonly keyHex: string
  /** The node's own dataset (its log is writable here), or a replica of another master's. */
  readonly own: boolean
}

const KEY_HEX_PATTERN = /^[0-9a-f]{64}$/

export class DatasetRegistry {
  readonly path: string
  private readonly datasets: Map<DatasetId, RegisteredDataset>
  /** Why the file could not be read, or null: a damaged registry is never overwritten. */
  private readonly damage: string | null
  private readonly writes = new SerialQueue()

  private constructor(
    path: string,
    datasets: Map<DatasetId, RegisteredDataset>,
    damage: string | null,
  ) {
    this.path = path
    this.datasets = datasets
    this.damage = damage
  }

  static async open(path: string): Promise<DatasetRegistry> {
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT')
        return new DatasetRegistry(path, new Map(), null)
      throw ClusterError.io(`cannot read the dataset registry ${path}`, error)
    }
    try {
      return new DatasetRegistry(path, parseRegistry(text), null)
    } catch (error) {
      return new DatasetRegistry(path, new Map(), (error as Error).message)
    }
  }

  /** Every registered dataset; CORRUPT_STORE when the file is damaged. */
  list(): RegisteredDataset[] {
    this.checkIntact()
    return [...this.datasets.values()]
  }

  /** Records a dataset (a new key for a known id replaces the old one). Durable on return. */
  register(dataset: RegisteredDataset): Promise<void> {
    return this.writes.run(async () => {
      if (this.damage !== null) return // refused at the next list(), which prune calls
      const known = this.datasets.get(dataset.id)
      if (known?.keyHex === dataset.keyHex && known.own === dataset.own) return
      if (known === undefined && this.datasets.size >= DATASETS_MAX)
        throw ClusterError.refused(`a node holds at most ${DATASETS_MAX} datasets`)
      const next = new Map(this.datasets).set(dataset.id, dataset)
      const text = `${JSON.stringify({ datasets: [...next.values()] }, null, 1)}\n`
      const directory = dirname(this.path)
      await writeFileAtomically(
        directory,
        basename(this.path),
        [Buffer.from(text)],
        0o644,
        Date.now(),
      )
      await fileSystemCall(`cannot sync ${directory}`, async () => {
        const handle = await open(directory, 'r')
        try {
          await handle.sync()
        } finally {
          await handle.close()
        }
      })
      this.datasets.set(dataset.id, dataset)
    })
  }

  private checkIntact(): void {
    if (this.damage !== null)
      throw ClusterError.corruptStore(
        `the dataset registry ${this.path} is damaged (${this.damage}): remove it and open every dataset of this node again`,
      )
  }
}

function parseRegistry(text: string): Map<DatasetId, RegisteredDataset> {
  const parsed = JSON.parse(text) as { datasets?: unknown }
  if (!Array.isArray(parsed.datasets) || parsed.datasets.length > DATASETS_MAX)
    throw new Error('no dataset list')
  const datasets = new Map<DatasetId, RegisteredDataset>()
  for (const item of parsed.datasets as Partial<RegisteredDataset>[]) {
    if (typeof item.keyHex !== 'string' || !KEY_HEX_PATTERN.test(item.keyHex))
      throw new Error('a dataset without a valid key')
    if (typeof item.own !== 'boolean') throw new Error('a dataset without an owner flag')
    const id = datasetId(String(item.id))
    datasets.set(id, { id, keyHex: item.keyHex, own: item.own })
  }
  return datasets
}
