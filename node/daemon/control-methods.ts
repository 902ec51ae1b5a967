// The calls the command line makes on its own daemon (see node/cli/main.ts): topology
// changes go through the admin service (forwarded to the Primary when needed); versions
// and restore are answered from this node's own copy of a dataset.
import { z } from 'zod'
import { ClusterError } from '../../consensus/cluster-error.ts'
import { datasetPath } from '../../storage/version-record.ts'
import { retentionPolicy, type RetentionPolicyInput } from '../../storage/retention-policy.ts'
import type { Point } from '../../storage/dataset-reader.ts'
import type { ControlServer } from '../control/control-server.ts'
import { datasetById, nodeByPeer } from '../topology/index.ts'
import type { ClusterNode } from './cluster-node.ts'
import type { DatasetListing, VersionListing } from './status-types.ts'

const name = z.string().min(1).max(256)
const replicas = z.array(z.strictObject({ name, mirror: z.string().max(4096).nullable() })).max(64)

export function registerControlMethods(control: ControlServer, node: ClusterNode): void {
  const command = (value: Parameters<ClusterNode['admin']['execute']>[0]) =>
    node.admin.execute(value)

  control.register('status', { params: z.strictObject({}), handle: () => node.status.report() })
  control.register('localStatus', {
    params: z.strictObject({}),
    handle: async () => node.status.local(),
  })
  control.register('pending', {
    params: z.strictObject({}),
    handle: async () => node.joins.pending(),
  })
  control.register('admit', {
    params: z.strictObject({ name, roles: z.array(z.string().max(64)).min(1).max(8) }),
    handle: (params) => command({ op: 'admit', name: params.name, roles: params.roles }),
  })
  control.register('setRoles', {
    params: z.strictObject({ name, roles: z.array(z.string().max(64)).min(1).max(8) }),
    handle: (params) =>
      command({
        op: 'command',
        command: { type: 'setRoles', name: params.name, roles: params.roles as never },
      }),
  })
  control.register('remove', {
    params: z.strictObject({ name }),
    handle: (params) =>
      command({ op: 'command', command: { type: 'removeNode', name: params.name } }),
  })
  control.register('datasetAdd', {
    params: z.strictObject({ id: name, master: name, path: z.string().max(4096), replicas }),
    handle: (params) =>
      command({
        op: 'command',
        command: {
          type: 'addDataset',
          id: params.id,
          master: params.master,
          path: params.path,
          replicas: params.replicas,
        },
      }),
  })
  control.register('datasetSetReplicas', {
    params: z.strictObject({ id: name, replicas }),
    handle: (params) =>
      command({
        op: 'command',
        command: { type: 'setReplicas', id: params.id, replicas: params.replicas },
      }),
  })
  control.register('datasetSetRetention', {
    params: z.strictObject({
      id: name,
      policy: z
        .strictObject({
          keepAllWithin: z.union([z.string().max(64), z.number()]),
          keepHourly: z.number().optional(),
          keepDaily: z.number().optional(),
          keepWeekly: z.number().optional(),
          keepMonthly: z.number().optional(),
          maxAge: z
            .union([z.string().max(64), z.number()])
            .nullable()
            .optional(),
        })
        .nullable(),
    }),
    handle: (params) => {
      // Checked here first, so that a bad policy is refused with the reason before it is proposed.
      if (params.policy !== null) retentionPolicy(params.policy as RetentionPolicyInput)
      return command({
        op: 'command',
        command: { type: 'setRetention', id: params.id, policy: params.policy },
      })
    },
  })
  control.register('prune', { params: z.strictObject({}), handle: () => node.retention.pruneNow() })
  control.register('datasetRemove', {
    params: z.strictObject({ id: name }),
    handle: (params) =>
      command({ op: 'command', command: { type: 'removeDataset', id: params.id } }),
  })
  control.register('datasetList', {
    params: z.strictObject({}),
    handle: async (): Promise<DatasetListing[]> => {
      const state = node.topology.state
      const nameOf = (peer: string): string => nodeByPeer(state, peer as never)?.name ?? peer
      return state.datasets.map((dataset) => ({
        id: dataset.id,
        master: nameOf(dataset.master),
        path: dataset.path,
        replicas: dataset.replicas.map((replica) => ({
          name: nameOf(replica.node),
          mirror: replica.mirror,
        })),
        coreKey: dataset.key,
      }))
    },
  })
  control.register('versions', {
    params: z.strictObject({ dataset: name, path: z.string().max(4096) }),
    handle: async (params): Promise<VersionListing[]> => {
      const dataset = await localDataset(node, params.dataset)
      await dataset.refresh()
      const versions = await dataset.reader.versions(datasetPath(params.path))
      return versions.map((version) => ({
        version: version.seq,
        kind: version.kind,
        recordedAtMs: version.recordedAtMs,
        size: version.kind === 'file' ? version.sizeBytes : null,
        hash: version.kind === 'file' ? version.fileHash : null,
        pruned: version.pruned,
      }))
    },
  })
  control.register('restore', {
    params: z.strictObject({
      dataset: name,
      path: z.string().max(4096),
      atMs: z.number().nullable(),
      version: z.number().int().nonnegative().nullable(),
      to: z.string().min(1).max(4096),
    }),
    handle: async (params) => {
      const dataset = await localDataset(node, params.dataset)
      await dataset.refresh()
      // Version N is the record at N: the point just after it holds it.
      const point: Point =
        params.version !== null
          ? { length: params.version + 1 }
          : params.atMs !== null
            ? { timeMs: params.atMs }
            : { length: dataset.index.indexedLength }
      const result = await dataset.restore({ point, path: params.path, destination: params.to })
      return { files: result.files, bytes: result.bytes, skipped: result.skipped }
    },
  })
}

/** This node's copy of a dataset (as its master or a replica), or a clear error naming who keeps one. */
async function localDataset(node: ClusterNode, id: string) {
  const state = node.topology.state
  const dataset = datasetById(state, id)
  if (dataset === null) throw ClusterError.notFound(`there is no dataset ${id}`)
  const keepers = [dataset.master, ...dataset.replicas.map((replica) => replica.node)]
  if (!keepers.includes(node.self)) {
    const names = keepers.map((peer) => nodeByPeer(state, peer)?.name ?? peer).join(', ')
    throw ClusterError.refused(
      `this node keeps no copy of dataset ${id}; ask one that does: ${names}`,
    )
  }
  if (dataset.master === node.self) return node.store.ownDataset(id)
  if (dataset.key === null)
    throw ClusterError.refused(`dataset ${id} has not started replicating yet`)
  return node.store.replicaDataset(id, Buffer.from(dataset.key, 'hex'))
}
