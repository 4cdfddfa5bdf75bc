// The peer API shared by the Node peer (peer.mjs) and the browser peer (browser.mjs).
//
// Everything here takes plain JSON-able arguments and returns JSON-able results, so the same
// commands work over the JSON-lines control protocol (tests/interop/control.py) and over
// Playwright's page.evaluate. Only the hash and the platform name differ between the two
// builds; they are injected through `createHarness`.

import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'

export const ECHO_PROTOCOL = '/echo/1.0.0'
export const PERF_PROTOCOL = '/perf/1.0.0'

// Streams per connection for our own protocols; js's default of 32 is too few for tests that
// open many echo streams in parallel on one connection.
const MAX_STREAMS = 1024
const DEFAULT_CHUNK = 64 * 1024
const PERF_BLOCK = new Uint8Array(64 * 1024)

export class CommandError extends Error {}

function toBytes (data) {
  // stream 'message' events carry Uint8Array or Uint8ArrayList
  return data instanceof Uint8Array ? data : data.subarray()
}

function errorText (err) {
  if (err == null) return 'unknown error'
  const name = err.name && err.name !== 'Error' ? `${err.name}: ` : ''
  let text = `${name}${err.message ?? String(err)}`
  if (Array.isArray(err.errors) && err.errors.length > 0) {
    text += ' [' + err.errors.map(errorText).join('; ') + ']'
  }
  return text
}

export { errorText }

function randomChunk (n) {
  const buf = new Uint8Array(n)
  // getRandomValues fills at most 65536 bytes per call
  for (let off = 0; off < n; off += 65536) {
    globalThis.crypto.getRandomValues(buf.subarray(off, Math.min(n, off + 65536)))
  }
  return buf
}

/**
 * Read a stream until the remote closes its write side, calling onChunk for each chunk.
 * Uses events rather than the async iterator: the iterator only ends on a 'remoteCloseWrite'
 * event it may have missed if the remote's FIN arrived before we started reading.
 */
export function readAll (stream, onChunk) {
  return new Promise((resolve, reject) => {
    let done = false
    const finish = (err) => {
      if (done) return
      done = true
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('end', onEnd)
      stream.removeEventListener('close', onClose)
      if (err) reject(err)
      else resolve()
    }
    const onMessage = (evt) => {
      try {
        onChunk(toBytes(evt.data))
      } catch (err) {
        finish(err)
      }
    }
    const onEnd = () => finish()
    const onClose = (evt) => {
      if (evt.error) finish(evt.error)
      else if (stream.readBufferLength === 0) finish()
    }
    stream.addEventListener('message', onMessage)
    stream.addEventListener('end', onEnd)
    stream.addEventListener('close', onClose)
    if (stream.readableEnded) finish()
    else if (stream.status !== 'open' && stream.readBufferLength === 0 && stream.readStatus === 'closed') finish()
  })
}

/** Send bytes honouring backpressure: wait for 'drain' whenever send() says the buffer is full. */
export async function sendAll (stream, buf) {
  if (!stream.send(buf)) {
    await stream.onDrain()
  }
}

/** Read exactly n bytes (for headers), leaving anything after them unread in the stream. */
function readExactly (stream, n) {
  return new Promise((resolve, reject) => {
    const parts = []
    let have = 0
    let done = false
    const finish = (err, value) => {
      if (done) return
      done = true
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('end', onEnd)
      stream.removeEventListener('close', onClose)
      if (err) reject(err)
      else resolve(value)
    }
    const onMessage = (evt) => {
      const bytes = toBytes(evt.data)
      const need = n - have
      if (bytes.byteLength > need) {
        parts.push(bytes.subarray(0, need))
        stream.unshift(bytes.subarray(need))
        have = n
      } else {
        parts.push(bytes)
        have += bytes.byteLength
      }
      if (have === n) {
        const out = new Uint8Array(n)
        let off = 0
        for (const p of parts) { out.set(p, off); off += p.byteLength }
        // Remove our listener before the unshifted remainder is dispatched.
        finish(null, out)
      }
    }
    const onEnd = () => finish(new CommandError(`stream ended after ${have} of ${n} header bytes`))
    const onClose = (evt) => finish(evt.error ?? new CommandError(`stream closed after ${have} of ${n} header bytes`))
    stream.addEventListener('message', onMessage)
    stream.addEventListener('end', onEnd)
    stream.addEventListener('close', onClose)
    if (stream.readableEnded) onEnd()
  })
}

/** /echo/1.0.0: write back everything read, with backpressure, and close when the remote does. */
export async function serveEcho (stream) {
  try {
    stream.addEventListener('message', (evt) => {
      let ok
      try {
        ok = stream.send(evt.data)
      } catch (err) {
        stream.abort(err)
        return
      }
      if (!ok && stream.readStatus === 'readable') {
        stream.pause()
        stream.onDrain().then(() => {
          if (stream.readStatus === 'paused') stream.resume()
        }, (err) => stream.abort(err))
      }
    })
    await new Promise((resolve, reject) => {
      if (stream.readableEnded) { resolve(); return }
      stream.addEventListener('end', () => resolve(), { once: true })
      stream.addEventListener('close', (evt) => (evt.error ? reject(evt.error) : resolve()), { once: true })
    })
    if (stream.writeStatus === 'writable') await stream.close()
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
  }
}

/** /perf/1.0.0 server (libp2p/specs perf/perf.md): u64 BE reply size, drain upload, reply. */
export async function servePerf (stream) {
  try {
    const header = await readExactly(stream, 8)
    const toSend = new DataView(header.buffer, header.byteOffset, 8).getBigUint64(0, false)
    await readAll(stream, () => {})
    let left = toSend
    while (left > 0n) {
      const n = left > BigInt(PERF_BLOCK.byteLength) ? PERF_BLOCK.byteLength : Number(left)
      await sendAll(stream, n === PERF_BLOCK.byteLength ? PERF_BLOCK : PERF_BLOCK.subarray(0, n))
      left -= BigInt(n)
    }
    await stream.close()
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
  }
}

export async function registerProtocols (node) {
  const opts = { maxInboundStreams: MAX_STREAMS, maxOutboundStreams: MAX_STREAMS, runOnLimitedConnection: true }
  await node.handle(ECHO_PROTOCOL, (stream) => { serveEcho(stream) }, opts)
  await node.handle(PERF_PROTOCOL, (stream) => { servePerf(stream) }, opts)
}

export function connectionInfo (conn) {
  return {
    connId: conn.id,
    peer: conn.remotePeer.toString(),
    remoteAddr: conn.remoteAddr.toString(),
    direction: conn.direction,
    status: conn.status,
    limited: conn.limits != null,
    limits: conn.limits == null
      ? null
      : { bytes: conn.limits.bytes == null ? null : Number(conn.limits.bytes), seconds: conn.limits.seconds ?? null },
    direct: conn.direct,
    multiplexer: conn.multiplexer ?? null,
    encryption: conn.encryption ?? null,
    streams: conn.streams.map(s => s.protocol ?? null)
  }
}

/**
 * Wire libp2p events to `emit(obj)` and return the command table.
 *
 * @param {object} node - a started libp2p node
 * @param {object} opts
 * @param {(obj: object) => void} opts.emit - sends one event object to the controller
 * @param {() => {update(b: Uint8Array): void, digest(): Promise<string>}} opts.newHasher - SHA-256
 */
export function createHarness (node, { emit, newHasher }) {
  const identified = new Map() // peer id string -> last IdentifyResult
  const identifyWaiters = new Map() // peer id string -> Set<resolve>

  node.addEventListener('connection:open', (evt) => {
    const c = evt.detail
    emit({ event: 'connection', ...connectionInfo(c) })
  })
  node.addEventListener('connection:close', (evt) => {
    const c = evt.detail
    emit({ event: 'disconnection', ...connectionInfo(c) })
  })
  node.addEventListener('peer:identify', (evt) => {
    const r = evt.detail
    const peer = r.peerId.toString()
    identified.set(peer, r)
    for (const resolve of identifyWaiters.get(peer) ?? []) resolve(r)
    identifyWaiters.delete(peer)
    emit({
      event: 'identify',
      peer,
      agentVersion: r.agentVersion ?? null,
      protocolVersion: r.protocolVersion ?? null,
      protocols: [...r.protocols].sort(),
      listenAddrs: r.listenAddrs.map(a => a.toString()),
      observedAddr: r.observedAddr?.toString() ?? null
    })
  })
  node.addEventListener('self:peer:update', () => {
    emit({ event: 'addrs', addrs: node.getMultiaddrs().map(a => a.toString()) })
  })

  function target (args) {
    if (args.addr != null) {
      try {
        return multiaddr(args.addr)
      } catch (err) {
        throw new CommandError(`bad multiaddr ${JSON.stringify(args.addr)}: ${errorText(err)}`)
      }
    }
    if (args.peer != null) return parsePeer(args.peer)
    throw new CommandError('need "addr" or "peer"')
  }

  function parsePeer (s) {
    try {
      return peerIdFromString(String(s))
    } catch (err) {
      throw new CommandError(`bad peer id ${JSON.stringify(s)}: ${errorText(err)}`)
    }
  }

  function signalFor (args, defaultMs) {
    return AbortSignal.timeout(Number(args.timeout_ms ?? defaultMs))
  }

  // Streams opened by `flood`, held open until `release`.
  let held = []

  /** The open, direct WebRTC (not limited) connection to args.peer. */
  function directConnection (args) {
    const peer = parsePeer(args.peer)
    const conn = node.getConnections(peer).find(c => c.status === 'open' && c.limits == null &&
      /\/webrtc(-direct)?(\/|$)/.test(c.remoteAddr.toString()))
    if (conn == null) throw new CommandError(`no direct WebRTC connection to ${peer}`)
    return conn
  }

  function count (n, name) {
    const v = Number(n)
    if (!Number.isSafeInteger(v) || v < 0) throw new CommandError(`"${name}" must be a non-negative integer`)
    return v
  }

  function waitIdentify (peer, ms) {
    const have = identified.get(peer)
    if (have) return Promise.resolve(have)
    return new Promise((resolve, reject) => {
      const set = identifyWaiters.get(peer) ?? new Set()
      identifyWaiters.set(peer, set)
      const timer = setTimeout(() => {
        set.delete(resolve)
        reject(new CommandError(`no identify from ${peer} within ${ms} ms`))
      }, ms)
      set.add((r) => { clearTimeout(timer); resolve(r) })
    })
  }

  const commands = {
    async info () {
      return {
        peerId: node.peerId.toString(),
        addrs: node.getMultiaddrs().map(a => a.toString()),
        protocols: node.getProtocols().sort()
      }
    },

    async addrs () {
      return { addrs: node.getMultiaddrs().map(a => a.toString()) }
    },

    async dial (args) {
      const t0 = performance.now()
      const conn = await node.dial(target(args), { signal: signalFor(args, 30000) })
      return { ms: performance.now() - t0, ...connectionInfo(conn) }
    },

    async ping (args) {
      const rtt = await node.services.ping.ping(target(args), { signal: signalFor(args, 30000) })
      return { rtt_ms: rtt }
    },

    async identify (args) {
      const peer = parsePeer(args.peer).toString()
      const ms = Number(args.timeout_ms ?? 15000)
      let r = identified.get(peer)
      if (r == null) {
        try {
          r = await waitIdentify(peer, Math.min(ms, 5000))
        } catch (err) {
          // no automatic identify seen yet: run it ourselves on an open connection
          const conn = node.getConnections(parsePeer(peer)).find(c => c.status === 'open')
          if (conn == null) throw new CommandError(`not connected to ${peer} and no identify seen`)
          r = await node.services.identify.identify(conn, { signal: AbortSignal.timeout(ms) })
        }
      }
      let stored = null
      try {
        const p = await node.peerStore.get(parsePeer(peer))
        const dec = new TextDecoder()
        stored = {
          protocols: [...p.protocols].sort(),
          addrs: p.addresses.map(a => a.multiaddr.toString()),
          agentVersion: p.metadata.has('AgentVersion') ? dec.decode(p.metadata.get('AgentVersion')) : null,
          protocolVersion: p.metadata.has('ProtocolVersion') ? dec.decode(p.metadata.get('ProtocolVersion')) : null
        }
      } catch {}
      return {
        peer,
        agentVersion: stored?.agentVersion ?? r.agentVersion ?? null,
        protocolVersion: stored?.protocolVersion ?? r.protocolVersion ?? null,
        protocols: stored?.protocols ?? [...r.protocols].sort(),
        listenAddrs: r.listenAddrs.map(a => a.toString()),
        observedAddr: r.observedAddr?.toString() ?? null,
        peerStore: stored
      }
    },

    async echo (args) {
      const total = Number(args.bytes ?? 0)
      const chunk = Number(args.chunk ?? DEFAULT_CHUNK)
      if (!Number.isSafeInteger(total) || total < 0) throw new CommandError('"bytes" must be a non-negative integer')
      if (!Number.isSafeInteger(chunk) || chunk <= 0) throw new CommandError('"chunk" must be a positive integer')
      const protocol = args.protocol ?? ECHO_PROTOCOL
      const t0 = performance.now()
      const stream = await node.dialProtocol(target(args), protocol, {
        signal: signalFor(args, 30000), runOnLimitedConnection: true
      })
      const tOpen = performance.now()
      const sent = newHasher()
      const received = newHasher()
      let receivedBytes = 0
      const reading = readAll(stream, (b) => { received.update(b); receivedBytes += b.byteLength })
      reading.catch(() => {}) // awaited below; avoid an unhandled rejection while writing
      try {
        for (let off = 0; off < total; off += chunk) {
          const buf = randomChunk(Math.min(chunk, total - off))
          sent.update(buf)
          await sendAll(stream, buf)
        }
        await stream.close()
        await reading
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)))
        throw err
      }
      const ms = performance.now() - t0
      return {
        sha_sent: await sent.digest(),
        sha_received: await received.digest(),
        bytes_sent: total,
        bytes_received: receivedBytes,
        open_ms: tOpen - t0,
        ms,
        protocol: stream.protocol
      }
    },

    async perf (args) {
      const up = Number(args.upload_bytes ?? 0)
      const down = Number(args.download_bytes ?? 0)
      if (!Number.isSafeInteger(up) || up < 0 || !Number.isSafeInteger(down) || down < 0) {
        throw new CommandError('"upload_bytes"/"download_bytes" must be non-negative integers')
      }
      const t0 = performance.now()
      const stream = await node.dialProtocol(target(args), PERF_PROTOCOL, {
        signal: signalFor(args, 30000), runOnLimitedConnection: true
      })
      const tOpen = performance.now()
      let got = 0
      let tFirst = null
      const reading = readAll(stream, (b) => { if (tFirst == null) tFirst = performance.now(); got += b.byteLength })
      reading.catch(() => {})
      try {
        const header = new Uint8Array(8)
        new DataView(header.buffer).setBigUint64(0, BigInt(down), false)
        await sendAll(stream, header)
        for (let left = up; left > 0; left -= PERF_BLOCK.byteLength) {
          await sendAll(stream, left >= PERF_BLOCK.byteLength ? PERF_BLOCK : PERF_BLOCK.subarray(0, left))
        }
        await stream.close()
        const tClosed = performance.now()
        await reading
        const tEnd = performance.now()
        if (got !== down) throw new CommandError(`perf: asked for ${down} bytes, received ${got}`)
        // The server replies only after it has read our whole upload (perf.md), so the upload is
        // over when the first reply byte (or, with nothing to download, the server's FIN) arrives.
        const tServerDone = tFirst ?? tEnd
        return {
          upload_bytes: up,
          download_bytes: down,
          open_ms: tOpen - t0,
          upload_ms: tServerDone - tOpen,
          download_ms: tEnd - tServerDone,
          write_ms: tClosed - tOpen, // until our FIN was handed to the muxer
          total_ms: tEnd - t0
        }
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)))
        throw err
      }
    },

    // Abuse, for the listener's bounds (tests/interop/test_webrtc_stream_limits.py): open
    // `streams` streams of `protocol` at once on the direct connection to `peer` and hold the
    // ones that open (until `release`); report how many opened and how many failed, and why.
    async flood (args) {
      const n = count(args.streams ?? 0, 'streams')
      const conn = directConnection(args)
      const signal = signalFor(args, 60000)
      const results = await Promise.allSettled(Array.from({ length: n }, () =>
        conn.newStream(args.protocol, { signal, maxOutboundStreams: n + 64, runOnLimitedConnection: true })))
      const errors = new Map()
      let opened = 0
      for (const r of results) {
        if (r.status === 'fulfilled') {
          held.push(r.value)
          opened++
        } else {
          const text = errorText(r.reason)
          errors.set(text, (errors.get(text) ?? 0) + 1)
        }
      }
      return { opened, failed: n - opened, held: held.length, errors: Object.fromEntries(errors) }
    },

    async release () {
      const streams = held
      held = []
      for (const s of streams) s.abort(new Error('released'))
      return { released: streams.length }
    },

    // Write `bytes` into a new stream of `protocol` (with backpressure) until all is written or
    // the stream fails; report how much went into it and the error, if any.
    async push (args) {
      const total = count(args.bytes ?? 0, 'bytes')
      const conn = directConnection(args)
      const signal = signalFor(args, 120000)
      const stream = await conn.newStream(args.protocol, { signal, runOnLimitedConnection: true })
      const t0 = performance.now()
      let sent = 0
      let error = null
      try {
        while (sent < total) {
          const n = Math.min(PERF_BLOCK.byteLength, total - sent)
          if (!stream.send(n === PERF_BLOCK.byteLength ? PERF_BLOCK : PERF_BLOCK.subarray(0, n))) {
            await stream.onDrain({ signal })
          }
          sent += n
        }
        await stream.close({ signal })
      } catch (err) {
        error = errorText(err)
      }
      return { sent, error, status: stream.status, ms: performance.now() - t0 }
    },

    async connections () {
      return { connections: node.getConnections().map(connectionInfo) }
    },

    async hangup (args) {
      await node.hangUp(target(args), { signal: signalFor(args, 10000) })
      return {}
    },

    async peers () {
      return { peers: node.getPeers().map(p => p.toString()) }
    }
  }

  /** Run one command object {cmd, ...args}; always resolves to a JSON-able reply (no id). */
  async function run (msg) {
    try {
      if (msg == null || typeof msg !== 'object' || Array.isArray(msg)) {
        throw new CommandError('a command must be a JSON object')
      }
      const fn = Object.hasOwn(commands, msg.cmd) ? commands[msg.cmd] : null
      if (fn == null) throw new CommandError(`unknown command ${JSON.stringify(msg.cmd)}`)
      const result = await fn(msg)
      return { ok: true, ...result }
    } catch (err) {
      return { ok: false, error: errorText(err) }
    }
  }

  return { commands, run }
}
