// `clusterreplica start`: runs one node in the foreground until SIGINT or SIGTERM, printing
// its peer id and addresses first and then one line per event worth an operator's eye.
import { ClusterNode } from './cluster-node.ts'
import { nodeByPeer } from '../topology/index.ts'

export interface DaemonOptions {
  readonly data: string
  readonly name?: string
  readonly listen: readonly string[]
  readonly bootstrap: readonly string[]
  readonly site?: string
  readonly mdns: boolean
}

function timestamped(line: string): void {
  process.stdout.write(`${new Date().toISOString()} ${line}\n`)
}

export async function runDaemon(options: DaemonOptions): Promise<void> {
  const node = await ClusterNode.start({
    data: options.data,
    ...(options.name === undefined ? {} : { name: options.name }),
    listen: options.listen,
    bootstrap: options.bootstrap,
    ...(options.site === undefined ? {} : { site: options.site }),
    mdns: options.mdns,
    log: timestamped,
  })
  const member = nodeByPeer(node.topology.state, node.self)
  console.log(`clusterreplica node ${node.settings.name}`)
  console.log(`peer id: ${node.self}`)
  for (const address of node.p2p.listenAddresses()) console.log(`listening: ${address}`)
  console.log(
    member === null
      ? 'not in a cluster yet: asking the peers it can reach to be admitted'
      : `member of cluster ${node.topology.state.clusterId} as ${member.roles.join(', ')}`,
  )
  await new Promise<void>((resolve) => {
    const finish = (signal: string): void => {
      timestamped(`${signal}: stopping`)
      resolve()
    }
    process.once('SIGINT', () => finish('SIGINT'))
    process.once('SIGTERM', () => finish('SIGTERM'))
  })
  await node.stop()
}
