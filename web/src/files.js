// File transfer, `/p2prtc/file/1.0.0` (spec: src/p2prtc/protocols/filetransfer.py).
//
// The sender opens a stream and writes a uvarint-length-prefixed JSON header {name, size, sha256},
// then exactly `size` bytes, then closes its write side. The receiver checks the size and the
// SHA-256 and answers with one length-prefixed JSON {ok: true, sha256} or {ok: false, error}.

import { byteStream } from '@libp2p/utils'
import { errorText } from './explain.js'
import { Sha256, hasWebCrypto, sha256Blob } from './sha256.js'

export const FILE_PROTOCOL = '/p2prtc/file/1.0.0'
const MAX_HEADER = 4096 // same limit as the Python side
const CHUNK = 256 * 1024 // same as the Python side; progress updates per chunk
// Received files are kept in memory until saved: refuse what a tab cannot reasonably hold.
export const MAX_RECEIVE = 1024 * 1024 * 1024
// byteStream's default buffer (4 MiB) is too small for a fast sender while the page is busy.
const READ_BUFFER = 64 * 1024 * 1024

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export class FileTransferError extends Error {}

function encodeUvarint (n) {
  const out = []
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80)
    n = Math.floor(n / 128)
  }
  out.push(n)
  return Uint8Array.from(out)
}

async function readUvarint (bytes, signal) {
  let value = 0
  let scale = 1
  for (let i = 0; i < 9; i++) {
    const b = (await bytes.read({ bytes: 1, signal })).subarray()[0]
    value += (b & 0x7f) * scale
    if ((b & 0x80) === 0) return value
    scale *= 128
  }
  throw new FileTransferError('length prefix too long')
}

async function readJson (bytes, signal) {
  const len = await readUvarint(bytes, signal)
  if (len > MAX_HEADER) throw new FileTransferError(`header of ${len} bytes is too long`)
  const raw = (await bytes.read({ bytes: len, signal })).subarray()
  try {
    return JSON.parse(decoder.decode(raw))
  } catch {
    throw new FileTransferError('the header is not valid JSON')
  }
}

async function writeJson (bytes, obj) {
  const body = encoder.encode(JSON.stringify(obj))
  const frame = new Uint8Array(body.length + 10)
  const prefix = encodeUvarint(body.length)
  frame.set(prefix, 0)
  frame.set(body, prefix.length)
  await bytes.write(frame.subarray(0, prefix.length + body.length))
}

/** A file name that cannot be a path. */
export function safeName (name) {
  const base = String(name).replaceAll('\\', '/').split('/').pop().trim()
  // eslint-disable-next-line no-control-regex
  const clean = base.replace(/[\x00-\x1f]/g, '_')
  return clean === '' || clean === '.' || clean === '..' ? 'file' : clean
}

/**
 * Send `file` (a File/Blob with a name) on `connection`.
 * `progress(phase, done, total)` with phase 'hashing' | 'sending' | 'waiting'.
 * Resolves to {sha256, ms}; throws FileTransferError with a readable message.
 */
export async function sendFile (connection, file, progress = () => {}) {
  const sha256 = await sha256Blob(file, (done, total) => progress('hashing', done, total))
  const t0 = performance.now()
  const stream = await connection.newStream(FILE_PROTOCOL)
  const bytes = byteStream(stream)
  try {
    await writeJson(bytes, { name: file.name ?? 'file', size: file.size, sha256 })
    let sent = 0
    for (let off = 0; off < file.size; off += CHUNK) {
      const part = new Uint8Array(await file.slice(off, off + CHUNK).arrayBuffer())
      await bytes.write(part) // waits for 'drain' when the channel's buffer is full
      sent += part.length
      progress('sending', sent, file.size)
    }
    progress('waiting', sent, file.size)
    await stream.close() // closes our write side; the receiver then checks and answers
    const answer = await readJson(bytes)
    if (answer.ok !== true) {
      throw new FileTransferError(`the other side rejected the file: ${answer.error ?? 'no reason given'}`)
    }
    if (answer.sha256 !== sha256) {
      throw new FileTransferError('the other side received different bytes (sha256 mismatch)')
    }
    return { sha256, ms: performance.now() - t0 }
  } catch (err) {
    stream.abort(err)
    if (err instanceof FileTransferError) throw err
    throw new FileTransferError(`the transfer broke off: ${errorText(err)}`)
  }
}

/**
 * Serve one inbound file stream. `hooks.start({name, size})` returns a progress callback
 * `(done, total)`; resolves to {name, size, sha256, blob, ms}; throws FileTransferError.
 */
export async function receiveFile (stream, hooks = {}) {
  const bytes = byteStream(stream, { maxBufferSize: READ_BUFFER })
  const t0 = performance.now()
  const reject = async (error) => {
    try {
      await writeJson(bytes, { ok: false, error })
      await stream.close()
    } catch {
      stream.abort(new Error(error))
    }
    throw new FileTransferError(error)
  }
  let header
  try {
    header = await readJson(bytes)
  } catch (err) {
    stream.abort(err)
    throw new FileTransferError(`bad file header: ${errorText(err)}`)
  }
  const name = safeName(header.name ?? 'file')
  const size = Number(header.size)
  const expected = String(header.sha256 ?? '').toLowerCase()
  if (!Number.isSafeInteger(size) || size < 0) return reject(`bad size ${header.size}`)
  if (size > MAX_RECEIVE) {
    return reject(`file of ${size} bytes is over the browser's limit of ${MAX_RECEIVE} bytes`)
  }
  const progress = hooks.start?.({ name, size }) ?? (() => {})
  // Without WebCrypto, hash while receiving rather than in one go at the end.
  const incremental = hasWebCrypto() ? null : new Sha256()
  const parts = []
  let got = 0
  try {
    while (got < size) {
      const chunk = await bytes.read()
      if (chunk == null) break
      for (const buf of chunk) {
        const part = buf.slice() // own copy: the stream may reuse its buffers
        parts.push(part)
        incremental?.update(part)
        got += part.length
      }
      progress(got, size)
    }
    if (got !== size) return reject(`expected ${size} bytes, got ${got}`)
    // The sender closes its write side right after the data: anything else is an error.
    if ((await bytes.read()) != null) return reject(`more than the announced ${size} bytes`)
  } catch (err) {
    if (err instanceof FileTransferError) throw err
    stream.abort(err)
    throw new FileTransferError(`the transfer broke off after ${got} of ${size} bytes: ${errorText(err)}`)
  }
  const blob = new Blob(parts)
  const sha256 = incremental != null ? incremental.hex() : await sha256Blob(blob)
  if (expected !== '' && expected !== sha256) return reject('sha256 mismatch')
  await writeJson(bytes, { ok: true, sha256 })
  await stream.close()
  return { name, size, sha256, blob, ms: performance.now() - t0 }
}
