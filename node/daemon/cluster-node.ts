// One clusterreplica server: the libp2p node, the Raft driver over the topology state
// machine, the replication of datasets, joining, admin, status and the control socket,
// wired together. Everything reacts to the applied topology: who may talk to us, whom we
// keep connections to, what we replicate, whether we may campaign, and — on the leader —
// which Raft membership change comes next.
import { randomInt } from 'node:crypto'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ClusterError } from '../../consensus/cluster-error.ts'
import { DEFAULT_RAFT_LIMITS } from '../../consensus/raft-core.ts'
import { nodeId, type NodeId, type SoftState } from '../../consensus/types.ts'
import { NodeStore } from '../../storage/node-store.ts'
import { RaftLogStore } from '../../storage/raft-log-store.ts'
import { SystemClock } from '../clock.ts'
import { loadOrCreateIdentity } from '../identity.ts'
import { createP2pNode, type P2pNode } from '../p2p/p2p-node.ts'
import { RaftDriver } from '../raft-driver.ts'
import { ReplicationManager } from '../replication/replication-manager.ts'
import { RetentionRunner } from '../replication/retention-runner.ts'
import {
  canCampaign,
  entitledToDataset,
  isAdmitted,
  nodeByPeer,
  planMembership,
  TopologyMachine,
  type TopologyState,
} from '../topology/index.ts'
import { ChunkFetcher } from '../wire/chunk-fetcher.ts'
import { ChunkServer } from '../wire/chunk-server.ts'
import { LogReplication } from '../wire/log-replication.ts'
import { Libp2pRaftTransport } from '../wire/raft-transport.ts'
import { AdminService } from './admin-service.ts'
import { ControlServer } from '../control/control-server.ts'
import { registerControlMethods } from './control-methods.ts'
import {
  dataPaths,
  ensureDataDirectory,
  readSettings,
  writeSettings,
  type NodeSettings,
} from './data-directory.ts'
import { DEFAULT_LISTEN } from './init.ts'
import { JoinService } from './join-service.ts'
import { StatusService } from './status-service.ts'

/** Raft timing on a real network: 100 ms ticks, a 1 s election timeout, a 0.7 s lease. */
export const RAFT_TICK_MS = 100
export const RAFT_ELECTION_TICKS = 10
export const RAFT_HEARTBEAT_TICKS = 1
/** Clocks of two servers may run apart by at most this share (NTP keeps them far closer). */
export const CLOCK_DRIFT_BOUND = 0.05
/** The topology log is compacted into a snapshot after this many applied entries. */
const SNAPSHOT_ENTRIES_MIN = 1000
/** How often the leader looks for the next membership change, besides after every apply. */
const MEMBERSHIP_CHECK_MS = 1_000

export interface ClusterNodeOptions {
  readonly data: string
  readonly name?: string
  readonly listen?: readonly string[]
  readonly bootstrap?: readonly string[]
  readonly site?: string
  readonly mdns: boolean
  readonly log: (line: string) => void
}

/** A tick's randomness for election timeouts: crypto-seeded, as the simulator's is seeded by a seed. */
const systemRandom = { nextInt: (maxExclusive: number): number => randomInt(maxExclusive) }

export class ClusterNode {
  readonly self: NodeId
  readonly settings: NodeSettings
  readonly p2p: P2pNode
  readonly store: NodeStore
  readonly topology: TopologyMachine
  readonly driver: RaftDriver
  readonly replication: ReplicationManager
  readonly retention: RetentionRunner
  readonly admin: AdminService
  readonly joins: JoinService
  readonly status: StatusService
  readonly #raftStore: RaftLogStore
  readonly #transport: Libp2pRaftTransport
  readonly #logReplication: LogReplication
  readonly #chunkServer: ChunkServer
  readonly #control: ControlServer
  readonly #log: (line: string) => void
  #membershipTimer: NodeJS.Timeout | null = null
  #announcedAddresses = ''
  #stopped = false

  private constructor(parts: {
    self: NodeId
    settings: NodeSettings
    p2p: P2pNode
    store: NodeStore
    raftStore: RaftLogStore
    restored: Awaited<ReturnType<RaftLogStore['load']>>
    dataDirectory: string
    log: (line: string) => void
  }) {
    this.self = parts.self
    this.settings = parts.settings
    this.p2p = parts.p2p
    this.store = parts.store
    this.#raftStore = parts.raftStore
    this.#log = parts.log
    const topology = (this.topology = new TopologyMachine())
    this.#transport = new Libp2pRaftTransport({
      node: parts.p2p,
      authorize: (peer) => isAdmitted(topology.state, peer as NodeId) || this.joins.trusts(peer),
      onMessage: (message) => this.driver.receive(message),
      log: parts.log,
    })
    this.driver = new RaftDriver({
      raft: {
        ...DEFAULT_RAFT_LIMITS,
        id: parts.self,
        electionTicks: RAFT_ELECTION_TICKS,
        heartbeatTicks: RAFT_HEARTBEAT_TICKS,
        clockDriftBound: CLOCK_DRIFT_BOUND,
        canCampaign: false,
        random: systemRandom,
      },
      restored: parts.restored,
      tickMs: RAFT_TICK_MS,
      snapshotEntriesMin: SNAPSHOT_ENTRIES_MIN,
      storage: parts.raftStore,
      transport: this.#transport,
      clock: new SystemClock(),
      stateMachine: topology,
      onSoftStateChange: (state) => this.#onSoftState(state),
      onFatal: (error) => this.#fatal(error),
    })
    this.#logReplication = new LogReplication({
      node: parts.p2p,
      authorize: (peer, datasetId) => entitledToDataset(topology.state, peer as NodeId, datasetId),
      openCore: async (datasetId) => this.replication.core(datasetId),
      log: parts.log,
    })
    this.#chunkServer = new ChunkServer({
      node: parts.p2p,
      chunkStore: parts.store.chunkStore,
      authorize: (peer) => isAdmitted(topology.state, peer as NodeId),
      log: parts.log,
    })
    this.joins = new JoinService({
      self: parts.self,
      name: parts.settings.name,
      site: parts.settings.site,
      p2p: parts.p2p,
      topology,
      leader: () => this.driver.core.softState().leader,
      log: parts.log,
    })
    this.admin = new AdminService({
      self: parts.self,
      p2p: parts.p2p,
      driver: this.driver,
      topology,
      admitCommand: (name, roles) => this.joins.admitCommand(name, roles),
      onAdmitted: (name) => this.joins.forget(name),
    })
    this.replication = new ReplicationManager({
      self: parts.self,
      store: parts.store,
      logReplication: this.#logReplication,
      fetcher: new ChunkFetcher({
        node: parts.p2p,
        chunkStore: parts.store.chunkStore,
        log: parts.log,
      }),
      announceKey: async (id, key) => {
        await this.admin.execute({
          op: 'command',
          command: { type: 'setDatasetKey', id, key, by: parts.self },
        })
      },
      log: parts.log,
    })
    this.retention = new RetentionRunner({ self: parts.self, store: parts.store, log: parts.log })
    this.status = new StatusService({
      self: parts.self,
      p2p: parts.p2p,
      driver: this.driver,
      topology,
      replication: this.replication,
    })
    this.#control = new ControlServer(dataPaths(parts.dataDirectory).controlSocket)
    topology.onApplied((_index, _command, _result, state) => this.#topologyChanged(state))
    topology.onRestored((_index, state) => this.#topologyChanged(state))
  }

  static async start(options: ClusterNodeOptions): Promise<ClusterNode> {
    await ensureDataDirectory(options.data)
    const settings = await settle(options)
    const privateKey = await loadOrCreateIdentity(options.data)
    const self = nodeId(peerIdFromPrivateKey(privateKey).toString())
    const paths = dataPaths(options.data)
    const raftStore = await RaftLogStore.open(paths.raft)
    const restored = await raftStore.load()
    const store = await NodeStore.open(paths.store)
    const p2p = await createP2pNode({
      privateKey,
      listen: settings.listen,
      bootstrap: settings.bootstrap,
      mdns: options.mdns,
      log: options.log,
    })
    const node = new ClusterNode({
      self,
      settings,
      p2p,
      store,
      raftStore,
      restored,
      dataDirectory: options.data,
      log: options.log,
    })
    await node.#start()
    return node
  }

  async #start(): Promise<void> {
    await this.#transport.start()
    await this.#logReplication.start()
    await this.#chunkServer.start()
    await this.admin.start()
    await this.joins.start()
    await this.status.start()
    registerControlMethods(this.#control, this)
    await this.#control.start()
    this.driver.start()
    this.retention.start()
    this.#topologyChanged(this.topology.state)
    this.#membershipTimer = setInterval(() => this.#reconcileMembership(), MEMBERSHIP_CHECK_MS)
  }

  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    if (this.#membershipTimer !== null) clearInterval(this.#membershipTimer)
    this.driver.stop()
    await this.#control.stop()
    await this.retention.stop()
    await this.replication.stop()
    await this.joins.stop()
    await this.status.stop()
    await this.admin.stop()
    await this.#chunkServer.stop()
    await this.#logReplication.stop()
    await this.#transport.stop()
    await this.p2p.stop()
    await this.store.close()
    await this.#raftStore.close()
  }

  #onSoftState(state: SoftState): void {
    const leader =
      state.leader === null
        ? 'none'
        : (nodeByPeer(this.topology.state, state.leader)?.name ?? state.leader)
    this.#log(`raft: ${state.role} in term ${state.term}, leader ${leader}`)
    if (state.leader !== null) this.#announceAddresses(this.topology.state)
    if (state.role === 'leader') this.#reconcileMembership()
  }

  #topologyChanged(state: TopologyState): void {
    if (this.#stopped) return
    this.driver.setCanCampaign(canCampaign(state, this.self))
    void this.p2p
      .keepConnected(
        state.nodes
          .filter((node) => node.peerId !== this.self)
          .map((node) => ({ peerId: node.peerId, addresses: node.addresses })),
      )
      .catch((error: unknown) => this.#log(`connections: ${(error as Error).message}`))
    void this.replication.update(state)
    this.retention.update(state)
    this.#announceAddresses(state)
    this.#reconcileMembership()
  }

  /** A member tells the cluster where it listens whenever that differs from the topology. */
  #announceAddresses(state: TopologyState): void {
    const entry = nodeByPeer(state, this.self)
    if (entry === null) return
    const addresses = this.p2p.listenAddresses().slice(0, 16)
    const key = addresses.join(' ')
    if (key === entry.addresses.join(' ') || key === this.#announcedAddresses) return
    this.#announcedAddresses = key
    this.admin
      .execute({ op: 'command', command: { type: 'setAddresses', peerId: this.self, addresses } })
      .catch((error: unknown) => {
        this.#announcedAddresses = ''
        this.#log(`cannot announce this node's addresses yet: ${(error as Error).message}`)
      })
  }

  /** On the leader: propose the next single Raft membership change the topology calls for. */
  #reconcileMembership(): void {
    if (this.#stopped || this.driver.core.softState().role !== 'leader') return
    const plan = planMembership(this.topology.state, this.driver.core.membership(), this.self)
    if (plan.next === null) return
    const change = plan.next
    this.driver.proposeConfigChange(change, (outcome) => {
      if (outcome.ok)
        this.#log(
          `raft: membership ${change.type} ${nodeByPeer(this.topology.state, change.node)?.name ?? change.node}`,
        )
    })
  }

  #fatal(error: Error): void {
    this.#log(`fatal: the Raft log cannot be written (${error.message}); stopping`)
    void this.stop().finally(() => process.exit(1))
  }
}

/** Settings from the data directory, with this start's options applied and saved. */
async function settle(options: ClusterNodeOptions): Promise<NodeSettings> {
  const saved = await readSettings(options.data)
  const name = options.name ?? saved?.name
  if (name === undefined) {
    throw ClusterError.badArgument(
      `${options.data} holds no node yet: the first start needs --name NAME`,
    )
  }
  if (saved !== null && options.name !== undefined && options.name !== saved.name) {
    throw ClusterError.refused(`this node is named ${saved.name}; a node cannot be renamed`)
  }
  const settings: NodeSettings = {
    version: 1,
    name,
    site: options.site ?? saved?.site ?? 'default',
    listen:
      options.listen !== undefined && options.listen.length > 0
        ? [...options.listen]
        : (saved?.listen ?? DEFAULT_LISTEN),
    bootstrap: [...new Set([...(saved?.bootstrap ?? []), ...(options.bootstrap ?? [])])],
  }
  await writeSettings(options.data, settings)
  return settings
}
