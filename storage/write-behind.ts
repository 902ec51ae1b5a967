// Write-behind: a file being written is synced in the background each time enough new
// bytes have been written, so that the kernel writes them back while more are written
// and the sync that must be waited for at the end has little left to do. (Without it, a
// 64 MiB pack tail or a restored 256 MiB file stayed in the page cache until that last
// sync, which then took longer than writing them.)

/** Bytes written between two background syncs. */
export const WRITE_BEHIND_BYTES = 16 * 1024 * 1024

export class WriteBehind {
  private readonly sync: () => Promise<void>
  private unsyncedBytes = 0
  private running: Promise<unknown> | null = null

  /** `sync` makes every byte written so far durable (a datasync of the file). */
  constructor(sync: () => Promise<void>) {
    this.sync = sync
  }

  /** Notes bytes just written; begins a background sync once enough have gathered. */
  written(bytes: number): void {
    this.unsyncedBytes += bytes
    if (this.unsyncedBytes >= WRITE_BEHIND_BYTES) this.begin()
  }

  /** Bytes written that no sync has begun to cover, or syncs not yet awaited. */
  get pending(): boolean {
    return this.unsyncedBytes > 0 || this.running !== null
  }

  /** Begins a sync of what is written and not yet covered, if anything is. */
  begin(): void {
    if (this.unsyncedBytes === 0) return
    this.unsyncedBytes = 0
    const syncing = this.sync()
    const earlier = this.running
    this.running = earlier === null ? syncing : Promise.all([earlier, syncing])
    // Awaited, and any failure reported, by settle(): a failed sync must not pass for a
    // good one even when a later sync succeeds.
    this.running.catch(() => undefined)
  }

  /** Makes every byte written so far durable: syncs what no sync covers yet, and waits for every sync. */
  async settle(): Promise<void> {
    this.begin()
    await this.awaitBackground()
  }

  /** Waits for the syncs begun so far (for a caller whose own last sync covers the rest). */
  async awaitBackground(): Promise<void> {
    const running = this.running
    this.running = null
    await running
  }
}
