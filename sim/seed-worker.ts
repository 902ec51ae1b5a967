// A child process of seed-runner.ts: runs the seeds it is sent and reports each result.
import { runSeedsHere, type WorkerReply, type WorkerRequest } from './seed-runner.ts'

process.once('message', (request: WorkerRequest) => {
  runSeedsHere(request.seeds, request.options, (result) =>
    process.send!({ result } satisfies WorkerReply),
  )
  process.send!({ done: true } satisfies WorkerReply, () => process.disconnect())
})
