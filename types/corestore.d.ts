// The subset of Corestore 7 that storage/ uses (corestore ships no types).
declare module 'corestore' {
  import type { Duplex } from 'node:stream'
  import type Hypercore from 'hypercore'

  interface CorestoreOptions {
    primaryKey?: Buffer
    writable?: boolean
  }

  type GetOptions =
    | { name: string; writable?: boolean }
    | { key: Uint8Array; writable?: boolean; createIfMissing?: boolean }

  class Corestore {
    constructor(storage: string, options?: CorestoreOptions)
    get(options: GetOptions): Hypercore
    namespace(name: string): Corestore
    replicate(isInitiator: boolean, options?: Record<string, unknown>): Duplex
    ready(): Promise<void>
    close(): Promise<void>
  }

  export = Corestore
}
