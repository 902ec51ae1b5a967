import '../../node/polyfill.ts'
import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { isClusterError } from '../../consensus/cluster-error.ts'
import { IDENTITY_FILE_NAME, loadOrCreateIdentity } from '../../node/identity.ts'
import { withTempDir } from '../helpers/temp-dir.ts'

test('the identity is created once, private to its owner, and loaded the same afterwards', async () => {
  await withTempDir(async (directory) => {
    const dataDirectory = join(directory, 'data')
    const created = await loadOrCreateIdentity(dataDirectory)
    assert.is(created.type, 'Ed25519')
    const path = join(dataDirectory, IDENTITY_FILE_NAME)
    assert.is((await stat(path)).mode & 0o777, 0o600)
    const loaded = await loadOrCreateIdentity(dataDirectory)
    assert.is(peerIdFromPrivateKey(loaded).toString(), peerIdFromPrivateKey(created).toString())
    assert.equal(await readdir(dataDirectory), [IDENTITY_FILE_NAME])
  })
})

test('two processes creating at once end with one identity', async () => {
  await withTempDir(async (directory) => {
    const keys = await Promise.all(Array.from({ length: 4 }, () => loadOrCreateIdentity(directory)))
    const peerIds = new Set(keys.map((key) => peerIdFromPrivateKey(key).toString()))
    assert.is(peerIds.size, 1)
    assert.equal(await readdir(directory), [IDENTITY_FILE_NAME])
  })
})

test('a damaged identity file is reported, never replaced', async () => {
  const valid = privateKeyToProtobuf(await generateKeyPair('Ed25519'))
  const secp256k1 = privateKeyToProtobuf(await generateKeyPair('secp256k1'))
  const damages: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['truncated', valid.subarray(0, valid.byteLength - 9)],
    ['garbage', new TextEncoder().encode('not a key at all\n')],
    ['another key type', secp256k1],
  ]
  for (const [name, bytes] of damages) {
    await withTempDir(async (directory) => {
      const path = join(directory, IDENTITY_FILE_NAME)
      await writeFile(path, bytes)
      const error = await loadOrCreateIdentity(directory).then(
        () => null,
        (failure: unknown) => failure,
      )
      assert.ok(isClusterError(error, 'CORRUPT_STORE'), `${name}: ${String(error)}`)
      assert.match((error as Error).message, /identity key .* is damaged/)
      assert.not.match((error as Error).message, /\n/)
      assert.equal(
        new Uint8Array(await readFile(path)),
        bytes,
        `${name}: the file is left as it was`,
      )
    })
  }
})

test.run()
