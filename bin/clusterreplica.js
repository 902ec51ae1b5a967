#!/usr/bin/env node
// The `clusterreplica` command: runs the TypeScript sources through tsx's loader, so an
// install needs no build step. Everything else lives in node/cli/main.ts.
import { register } from 'tsx/esm/api'

register()
await import('../node/cli/main.ts')
