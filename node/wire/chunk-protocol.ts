// The chunk protocol's public face: a replica fetches the chunks it lacks by hash from
// any node that has them (ChunkFetcher), and every node serves what it holds (ChunkServer).
// Its frames are in chunk-messages.ts, its protocol id and limits in protocol-ids.ts.
export {
  ChunkFetcher,
  type FetchOptions,
  type FetchProgress,
  type FetchResult,
  type WantedChunk,
} from './chunk-fetcher.ts'
export { ChunkServer, type ChunkServerCounters } from './chunk-server.ts'
