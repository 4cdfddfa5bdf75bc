// SHA-256 for the file transfer check.
//
// Browsers only expose crypto.subtle on secure contexts (https, localhost). A page served over
// plain http from another address (the "Network:" URL of `p2prtc web`) has none, so this file
// also carries a small incremental implementation of FIPS 180-4 to fall back on.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
])

const rotr = (x, n) => (x >>> n) | (x << (32 - n))

/** Incremental SHA-256: `new Sha256().update(bytes)...hex()`. */
export class Sha256 {
  constructor () {
    this.h = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
    ])
    this.w = new Uint32Array(64)
    this.block = new Uint8Array(64)
    this.used = 0 // bytes waiting in `block`
    this.length = 0 // total bytes hashed (a double: exact up to 2^53)
  }

  update (bytes) {
    let off = 0
    this.length += bytes.length
    if (this.used > 0) {
      const take = Math.min(64 - this.used, bytes.length)
      this.block.set(bytes.subarray(0, take), this.used)
      this.used += take
      off = take
      if (this.used < 64) return this
      this.compress(this.block, 0)
      this.used = 0
    }
    for (; off + 64 <= bytes.length; off += 64) this.compress(bytes, off)
    if (off < bytes.length) {
      this.block.set(bytes.subarray(off), 0)
      this.used = bytes.length - off
    }
    return this
  }

  compress (bytes, off) {
    const w = this.w
    for (let i = 0; i < 16; i++) {
      const j = off + i * 4
      w[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3]
    }
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15]
      const b = w[i - 2]
      const s0 = rotr(a, 7) ^ rotr(a, 18) ^ (a >>> 3)
      const s1 = rotr(b, 17) ^ rotr(b, 19) ^ (b >>> 10)
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0
    }
    const h = this.h
    let a = h[0]; let b = h[1]; let c = h[2]; let d = h[3]
    let e = h[4]; let f = h[5]; let g = h[6]; let k = h[7]
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0
      k = g; g = f; f = e; e = (d + t1) | 0
      d = c; c = b; b = a; a = (t1 + t2) | 0
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d
    h[4] += e; h[5] += f; h[6] += g; h[7] += k
  }

  /** Finish and return the digest as lowercase hex. The object cannot be reused afterwards. */
  hex () {
    const bits = this.length * 8
    const tail = new Uint8Array(this.used < 56 ? 64 - this.used : 128 - this.used)
    tail[0] = 0x80
    const view = new DataView(tail.buffer)
    view.setUint32(tail.length - 8, Math.floor(bits / 0x100000000))
    view.setUint32(tail.length - 4, bits >>> 0)
    this.length -= tail.length // update() counts the padding; keep `length` meaningful
    this.update(tail)
    return Array.from(this.h, (x) => x.toString(16).padStart(8, '0')).join('')
  }
}

export function hasWebCrypto () {
  return globalThis.crypto?.subtle != null
}

function toHex (buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('')
}

// WebCrypto needs the whole input in memory at once; above this the streaming fallback is used
// even where crypto.subtle exists, so hashing a big file does not double the page's memory.
const WEBCRYPTO_MAX = 256 * 1024 * 1024
const SLICE = 4 * 1024 * 1024

/** SHA-256 of a Blob/File as hex; `onProgress(doneBytes, totalBytes)` while hashing. */
export async function sha256Blob (blob, onProgress = () => {}) {
  if (hasWebCrypto() && blob.size <= WEBCRYPTO_MAX) {
    const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer())
    onProgress(blob.size, blob.size)
    return toHex(digest)
  }
  const h = new Sha256()
  for (let off = 0; off < blob.size; off += SLICE) {
    const part = new Uint8Array(await blob.slice(off, off + SLICE).arrayBuffer())
    h.update(part)
    onProgress(off + part.length, blob.size)
  }
  return h.hex()
}
