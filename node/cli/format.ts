// Human-readable output of the command line: tables for people, `--json` for scripts.
import Table from 'cli-table3'
import type { LocalStatus } from '../daemon/status-service.ts'
import type {
  DatasetListing,
  PendingNode,
  StatusReport,
  VersionListing,
} from '../daemon/status-types.ts'

const plain = {
  chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  style: { head: [], border: [] },
}

function table(head: string[], rows: (string | number)[][]): string {
  const output = new Table({ head, ...plain })
  output.push(...rows)
  return output.toString()
}

const dash = (value: string | number | null | undefined): string | number => value ?? '-'

export function formatBytes(bytes: number | null): string {
  if (bytes === null) return '-'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`
}

export function formatStatus(report: StatusReport): string {
  const nodes = table(
    ['name', 'peer id', 'addresses', 'roles', 'site', 'reachable', 'raft', 'term'],
    report.nodes.map((node) => [
      node.name,
      `${node.peerId.slice(0, 12)}…`,
      node.addresses.join('\n') || '-',
      node.roles.join(', '),
      node.site,
      node.reachable ? 'yes' : 'NO',
      dash(node.raftRole),
      dash(node.term),
    ]),
  )
  const lines = [
    `cluster ${dash(report.clusterId)}  leader ${dash(report.leader)}  term ${report.term}  (asked ${report.self})`,
    nodes,
  ]
  if (report.replication.length > 0) {
    lines.push(
      table(
        [
          'dataset',
          'replica',
          'mirror',
          'master log',
          'replica log',
          'versions behind',
          'bytes behind',
        ],
        report.replication.map((lag) => [
          lag.dataset,
          lag.replica,
          dash(lag.mirror),
          dash(lag.masterLength),
          dash(lag.replicaLength),
          dash(lag.versionsBehind),
          formatBytes(lag.bytesBehind),
        ]),
      ),
    )
  }
  return lines.join('\n')
}

export function formatLocalStatus(local: LocalStatus): string {
  const lines = [`node ${local.peerId}  raft ${local.raftRole}  term ${local.term}`]
  if (local.datasets.length === 0) lines.push('no datasets here')
  else
    lines.push(
      table(
        ['dataset', 'role', 'log', 'complete', 'mirrored', 'bytes pending', 'fetched'],
        local.datasets.map((dataset) => [
          dataset.id,
          dataset.role,
          dataset.logLength,
          dataset.completeLength,
          dash(dataset.mirroredLength),
          formatBytes(dataset.bytesPending),
          formatBytes(dataset.bytesFetched),
        ]),
      ),
    )
  return lines.join('\n')
}

export function formatDatasets(datasets: readonly DatasetListing[]): string {
  if (datasets.length === 0) return 'no datasets'
  return table(
    ['id', 'master', 'path', 'replicas'],
    datasets.map((dataset) => [
      dataset.id,
      dataset.master,
      dataset.path,
      dataset.replicas
        .map((replica) =>
          replica.mirror === null ? replica.name : `${replica.name}:${replica.mirror}`,
        )
        .join('\n') || '-',
    ]),
  )
}

export function formatVersions(versions: readonly VersionListing[]): string {
  if (versions.length === 0) return 'no versions'
  return table(
    ['version', 'recorded', 'kind', 'size', 'sha-256', 'kept'],
    versions.map((version) => [
      version.version,
      new Date(version.recordedAtMs).toISOString(),
      version.kind,
      formatBytes(version.size),
      version.hash === null ? '-' : `${version.hash.slice(0, 16)}…`,
      version.pruned ? 'pruned' : 'yes',
    ]),
  )
}

export function formatPending(pending: readonly PendingNode[]): string {
  if (pending.length === 0) return 'no node is waiting to be admitted'
  return table(
    ['name', 'peer id', 'site', 'addresses', 'asked'],
    pending.map((node) => [
      node.name,
      node.peerId,
      node.site,
      node.addresses.join('\n'),
      new Date(node.askedAtMs).toISOString(),
    ]),
  )
}
