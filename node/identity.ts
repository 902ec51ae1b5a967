// The node's libp2p identity: an Ed25519 private key created once and kept in the data
// directory. Its public key is the node's peer id, which the topology names it by, so a
// damaged key file is reported, never silently replaced: a new key would make this node
// a stranger to its cluster.
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { randomBytes } from 'node:crypto'
import { link, mkdir, open, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { ClusterError } from '../consensus/cluster-error.ts'

export const IDENTITY_FILE_NAME = 'identity.key'
/** An Ed25519 key in libp2p's protobuf form takes 68 bytes; anything far larger is not one. */
const IDENTITY_FILE_BYTES_MAX = 4096

export async function loadOrCreateIdentity(dataDirectory: string): Promise<PrivateKey> {
  const path = join(dataDirectory, IDENTITY_FILE_NAME)
  const existing = await readIdentityFile(path)
  if (existing !== null) return existing
  await mkdir(dataDirectory, { recursive: true })
  const key = await generateKeyPair('Ed25519')
  // Two processes starting at once must end with one identity: link() refuses to replace
  // a file, so the loser reads the winner's key instead of overwriting it (rename would).
  const temporaryPath = `${path}.${randomBytes(6).toString('hex')}.tmp`
  try {
    await writeSynced(temporaryPath, privateKeyToProtobuf(key))
    await link(temporaryPath, path)
    await syncDirectory(dataDirectory)
    return key
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError('write', path, error)
    const winner = await readIdentityFile(path)
    if (winner === null) throw ioError('read', path, error)
    return winner
  } finally {
    await unlink(temporaryPath).catch(() => undefined)
  }
}

/** The key in `path`, null when there is no such file, CORRUPT_STORE when it is not a key. */
async function readIdentityFile(path: string): Promise<PrivateKey | null> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw ioError('read', path, error)
  }
  const damaged = (why: string, cause?: unknown): ClusterError =>
    ClusterError.corruptStore(
      `identity key ${path} is damaged (${why}); restore it from a backup, or remove it to start as a new peer`,
      cause,
    )
  if (bytes.byteLength === 0 || bytes.byteLength > IDENTITY_FILE_BYTES_MAX)
    throw damaged(`${bytes.byteLength} bytes`)
  let key: PrivateKey
  try {
    key = privateKeyFromProtobuf(bytes)
  } catch (error) {
    throw damaged((error as Error).message, error)
  }
  if (key.type !== 'Ed25519') throw damaged(`a ${key.type} key, not Ed25519`)
  return key
}

async function writeSynced(path: string, bytes: Uint8Array): Promise<void> {
  const file = await open(path, 'wx', 0o600)
  try {
    await file.writeFile(bytes)
    await file.sync()
  } finally {
    await file.close()
  }
}

async function syncDirectory(path: string): Promise<void> {
  const directory = await open(path, 'r')
  try {
    await directory.sync()
  } finally {
    await directory.close()
  }
}

function ioError(action: 'read' | 'write', path: string, cause: unknown): ClusterError {
  return ClusterError.io(
    `cannot ${action} identity key ${path}: ${(cause as Error).message}`,
    cause,
  )
}
