// Loaded with `node --import` into a process the benchmark starts: records a CPU profile
// from start to exit and writes it as DIR/PID.cpuprofile (open it in Chrome's DevTools or
// summarise it with bench/profile-summary.ts). Node 20 refuses `--cpu-prof` in NODE_OPTIONS,
// so the inspector does it; a same-thread session answers synchronously, so the profile
// can still be taken in the 'exit' handler.
import { Session } from 'node:inspector'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const directory = process.env['CPU_PROFILE_DIR']
if (directory !== undefined) {
  const session = new Session()
  session.connect()
  session.post('Profiler.enable')
  session.post('Profiler.setSamplingInterval', { interval: 1000 })
  session.post('Profiler.start')
  process.once('exit', () => {
    session.post('Profiler.stop', (error, result) => {
      if (error !== null) return
      mkdirSync(directory, { recursive: true })
      writeFileSync(join(directory, `${process.pid}.cpuprofile`), JSON.stringify(result.profile))
    })
  })
}
