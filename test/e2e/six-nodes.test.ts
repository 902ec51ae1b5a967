// The design's example cluster, as `npm start` runs it: `clusterreplica demo` starts six
// real processes (one Primary, two repli-masters, three replicas of which one is the
// Secondary), replicates a dataset from each master, changes a file and restores its
// earlier version. Afterwards every live mirror must equal its master's directory.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli } from '../../node/cli/local-node.ts'
import { removeDir } from '../helpers/temp-dir.ts'
import { treeDigest } from './helpers/cluster.ts'

test('the six-node demo replicates every dataset to every replica and restores an earlier version', async () => {
  const output = await runCli(['demo', '--no-wait', '--keep'])
  const root = /six nodes in (\S+)/.exec(output)?.[1]
  assert.ok(root !== undefined, output)
  try {
    assert.match(output, 'admitted secondary as secondary')
    assert.match(output, "replica-1's mirror now: finance: the second version")
    assert.match(output, /restored version 0 to .*: finance: the first version/)
    const mirrors = join(root, 'mirrors')
    let compared = 0
    for (const replica of await readdir(mirrors)) {
      // Beside each mirror lies its state file (.ID.clusterreplica-mirror.json), not part of it.
      const names = (await readdir(join(mirrors, replica))).filter((name) => !name.startsWith('.'))
      for (const dataset of names) {
        const master = { projects: 'primary', finance: 'master-b', media: 'master-c' }[dataset]
        assert.ok(master !== undefined, `unexpected mirror ${dataset}`)
        const expected = await treeDigest(join(root, 'files', master, dataset))
        assert.equal(
          await treeDigest(join(mirrors, replica, dataset)),
          expected,
          `${replica}/${dataset}`,
        )
        compared++
      }
    }
    assert.is(compared, 7, 'seven mirrors: three of projects, two of finance, two of media')
  } finally {
    await removeDir(root)
  }
})

test.run()
