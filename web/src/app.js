// The browser peer served by `p2prtc web`: js-libp2p configured like the js-libp2p
// "webrtc-private-to-private" example (same element ids, same output lines, same chat protocol),
// plus what a real deployment needs: the relay address and ICE servers from /config.json, a
// copyable own address, connection kinds with RTTs, file transfer and plain-language errors.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify, identifyPush } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { byteStream } from '@libp2p/utils'
import { webRTC } from '@libp2p/webrtc'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import encodeQR from '@paulmillr/qr'
import { Circuit, WebRTC } from '@multiformats/multiaddr-matcher'
import { createLibp2p } from 'libp2p'
import { errorText, explainError, limitsAtOpen, noDirectPath, relayedEndReason } from './explain.js'
import { FILE_PROTOCOL, receiveFile, sendFile } from './files.js'
import { chooseRelay, chooseRelays, dialLink, dialTarget, mixedContentProblem, relayKind, usableFrom } from './links.js'
import { hasWebCrypto } from './sha256.js'
import { TurnCache, iceServersFrom, selectedPath, turnHosts } from './turn.js'

const CHAT_PROTOCOL = '/libp2p/examples/chat/1.0.0'
const PING_PROTOCOL = '/ipfs/ping/1.0.0'
const PEER_DIAL_TIMEOUT = 5000 // as in the example: a /webrtc upgrade takes ~0.3-1 s
const RELAY_DIAL_TIMEOUT = 10000 // a relay across the internet, maybe over wss
const RESERVATION_WAIT = 10000
const REFRESH_INTERVAL = 5000
const MEASURE_DELAY = 1000

const $ = (id) => document.getElementById(id)
const output = $('output')
const sendSection = $('send-section')
const encoder = new TextEncoder()

function appendOutput (line, kind) {
  const div = document.createElement('div')
  div.appendChild(document.createTextNode(line))
  if (kind != null) div.className = kind
  output.append(div)
  div.scrollIntoView({ block: 'nearest' })
}

function explain (err, fallback = null) {
  const why = explainError(err) ?? fallback
  if (why != null) appendOutput(why, 'hint')
}

const RELAY_UNREACHABLE = 'Could not reach the relay: check the address, that the relay runs, ' +
  'and that its port is reachable from this network.'


/** The last /p2p/ component: the peer an address leads to. */
const peerIdOf = (addr) => addr.getComponents().findLast((c) => c.name === 'p2p')?.value

const short = (peer) => {
  const s = peer.toString()
  return `${s.slice(0, 8)}…${s.slice(-6)}`
}

function formatBytes (n) {
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${(n / 1024 / 1024).toFixed(1)} MiB`
}

async function loadConfig () {
  const config = { relay: null, iceServers: [], demoPeer: null }
  try {
    const response = await fetch('./config.json', { cache: 'no-store' })
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    Object.assign(config, await response.json())
  } catch (err) {
    appendOutput(`Could not load config.json (${err.message}): enter the relay address by hand.`, 'error')
  }
  const query = new URLSearchParams(location.search)
  if (!Array.isArray(config.relays)) config.relays = config.relay != null ? [config.relay] : []
  if (query.get('relay')) config.relays = [query.get('relay')]
  // an https page cannot use a ws:// relay (mixed content): take what this page can use
  const choice = chooseRelay(config.relays, location.protocol)
  config.relay = choice.relay
  // `p2prtc web --relay A --relay B`: reserve on each relay (our address through each)
  config.usableRelays = chooseRelays(config.relays, location.protocol)
  config.relayProblem = choice.problem
  config.autoConnect = query.get('auto') !== '0'
  if (!Array.isArray(config.iceServers)) config.iceServers = []
  return config
}

const config = await loadConfig()

// TURN credentials from the relays we are connected to (/p2prtc/turn-credentials/1.0.0): their
// TURN servers join the ICE servers of every WebRTC connection set up after (ICE still prefers
// direct candidate pairs); relays that do not hand them out cost one refused stream.
const relayConns = new Map() // relay peer id -> our (unlimited) connection to it
const turnCache = new TurnCache({
  onError: (relay, err) => console.info(`no TURN credentials from relay ${relay}: ${err.message}`)
})

async function iceServersNow () {
  // fetch again for relays whose credentials are about to expire (bounded by FETCH_TIMEOUT)
  await Promise.all([...relayConns].filter(([, c]) => c.status === 'open')
    .map(([relay, c]) => turnCache.refresh(relay, c)))
  return [...config.iceServers, ...turnCache.iceServers()]
}

let node
try {
  node = await createLibp2p({
    addresses: {
      // one '/p2p-circuit' per reservation wanted: js-libp2p reserves on as many relays
      listen: [
        ...Array(Math.max(1, config.usableRelays.length)).fill('/p2p-circuit'),
        '/webrtc'
      ]
    },
    transports: [
      webSockets(),
      // never fall back to @libp2p/webrtc's default public STUN servers: use the deployment's
      webRTC({ rtcConfiguration: async () => ({ iceServers: await iceServersNow() }) }),
      circuitRelayTransport()
    ],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: {
      // the relay and the peers may well be on private or loopback addresses here
      denyDialMultiaddr: () => false
    },
    services: {
      identify: identify(),
      identifyPush: identifyPush(),
      ping: ping()
    }
  })
  await node.start()
} catch (err) {
  appendOutput(`Could not start libp2p in this browser - ${errorText(err)}`, 'error')
  if (!window.isSecureContext) {
    appendOutput('This page was opened over plain http from another machine, where browsers ' +
      'withhold some of the cryptography libp2p needs: open it over https, or as ' +
      'http://localhost on the machine that runs `p2prtc web`.', 'hint')
  }
  throw err
}

// -- state ----------------------------------------------------------------------------------

const relayPeers = new Set() // peer ids (strings) of the relays we dialled
const chatStreams = new Map() // peer id -> the stream our messages go out on
const measuredRtt = new Map() // connection id -> ms (our own ping when the connection opened)
const setupMs = new Map() // connection id -> ms from click to direct connection
const openedLimits = new Map() // connection id -> the relay's limits when it opened
const webrtcPaths = new Map() // connection id -> {path: 'direct'|'turn', relay} (selectedPath)
let reservationTimer = null

const isDirectWebRTC = (conn) => WebRTC.matches(conn.remoteAddr)
const isRelayed = (conn) => conn.limits != null || Circuit.matches(conn.remoteAddr)

function connectionKind (conn) {
  if (isDirectWebRTC(conn)) {
    const p = webrtcPaths.get(conn.id)
    return p == null ? 'WebRTC' : p.path === 'turn' ? 'WebRTC via TURN' : 'direct WebRTC'
  }
  if (isRelayed(conn)) return 'relayed'
  if (relayPeers.has(conn.remotePeer.toString())) return 'relay server'
  return 'direct'
}

/** What the connection list shows for a kind. */
function kindLabel (conn, kind) {
  if (kind === 'WebRTC via TURN') return `WebRTC via TURN (relay ${webrtcPaths.get(conn.id).relay})`
  if (kind === 'relayed') return 'relayed circuit (limited)'
  return kind
}

// Stats right after the connection opened may have no selected pair yet; and the browser may
// start on a pair through TURN (the first that works) and move to a direct one within a second
// as its checks succeed: give it this long before calling the connection "via TURN".
const PATH_SETTLE_MS = 2000
const PATH_RETRY_MS = 100

async function currentPath (conn) {
  // js-libp2p keeps the RTCPeerConnection on the connection's multiaddr connection
  try {
    return await selectedPath(conn.maConn?.peerConnection, turnHosts(turnCache.iceServers()))
  } catch (err) {
    console.info(`no candidate pair stats: ${err.message}`)
    return null
  }
}

/** The candidate pair js-libp2p's RTCPeerConnection selected: direct or through TURN. */
async function resolvePath (conn) {
  if (webrtcPaths.has(conn.id)) return webrtcPaths.get(conn.id)
  const deadline = performance.now() + PATH_SETTLE_MS
  let p = null
  while (conn.status === 'open') {
    p = await currentPath(conn)
    if (p?.path === 'direct' || (p != null && performance.now() >= deadline)) break
    if (performance.now() >= deadline + PATH_SETTLE_MS) break // no pair at all: give up
    await new Promise((resolve) => setTimeout(resolve, PATH_RETRY_MS))
  }
  if (p != null) webrtcPaths.set(conn.id, p)
  return p
}

/** Paths can change (ICE moves to a better pair): look again with every list refresh. */
async function refreshPaths () {
  await Promise.all(openConnections().filter((c) => isDirectWebRTC(c) && webrtcPaths.has(c.id))
    .map(async (c) => {
      const p = await currentPath(c)
      if (p != null) webrtcPaths.set(c.id, p)
    }))
  updateConnList()
}

function openConnections () {
  return node.getConnections().filter((c) => c.status === 'open')
}

/** One direct WebRTC connection per peer (the newest). */
function directPeers () {
  const byPeer = new Map()
  for (const conn of openConnections()) {
    if (isDirectWebRTC(conn)) byPeer.set(conn.remotePeer.toString(), conn)
  }
  return byPeer
}

// -- UI: connections and own addresses ---------------------------------------------------------

function updateConnList () {
  const items = openConnections().map((conn) => {
    if (isDirectWebRTC(conn)) sendSection.style.display = 'block'
    const kind = connectionKind(conn)
    const li = document.createElement('li')
    li.dataset.kind = kind
    li.dataset.peer = conn.remotePeer.toString()
    const path = webrtcPaths.get(conn.id)
    if (path != null) li.dataset.path = path.path
    if (path?.relay != null) li.dataset.turnRelay = path.relay
    const badge = document.createElement('span')
    badge.className = `badge ${kind.replace(/\s+/g, '-')}`
    badge.textContent = kindLabel(conn, kind)
    const addr = document.createElement('code')
    addr.textContent = conn.remoteAddr.toString()
    li.append(badge, ' ', addr)
    const rtt = conn.rtt ?? measuredRtt.get(conn.id)
    const facts = []
    if (setupMs.has(conn.id)) {
      li.dataset.setupMs = String(Math.round(setupMs.get(conn.id)))
      facts.push(`set up in ${Math.round(setupMs.get(conn.id))} ms`)
    }
    if (rtt != null) {
      li.dataset.rtt = String(Math.round(rtt))
      facts.push(`RTT ${Math.round(rtt)} ms`)
    }
    if (conn.limits != null) {
      const l = conn.limits
      const parts = []
      if (l.seconds != null) parts.push(`${l.seconds} s`)
      if (l.bytes != null) parts.push(formatBytes(Number(l.bytes)))
      if (parts.length > 0) facts.push(`limited to ${parts.join(' / ')}`)
    }
    if (facts.length > 0) {
      const span = document.createElement('span')
      span.className = 'facts'
      span.textContent = ` — ${facts.join(', ')}`
      li.append(span)
    }
    return li
  })
  $('connections').replaceChildren(...items)
}

function updateOwnAddresses () {
  const addrs = node.getMultiaddrs().filter((a) => WebRTC.matches(a))
  $('multiaddrs').replaceChildren(...addrs.map((a) => {
    const li = document.createElement('li')
    li.textContent = a.toString()
    return li
  }))
  // the address to share: preferably the one through the configured relay, and one that a page
  // like this one (http or https) can dial
  const preferred = addrs.find((a) => config.relay != null && a.toString().startsWith(config.relay)) ??
    addrs.find((a) => usableFrom(a, location.protocol)) ?? addrs[0]
  $('me-section').hidden = preferred == null
  $('my-address').value = preferred?.toString() ?? ''
  showLink(preferred?.toString())
  if (preferred != null && reservationTimer != null) {
    clearTimeout(reservationTimer)
    reservationTimer = null
  }
}

let shownLink = null

/** A link that opens this page and dials our address, and its QR code. */
function showLink (addr) {
  const link = addr != null ? dialLink(location.href, addr) : null
  if (link === shownLink) return
  shownLink = link
  $('my-link').href = link ?? ''
  $('my-link').textContent = link ?? ''
  $('my-qr').innerHTML = link != null ? encodeQR(link, 'svg', { ecc: 'low', border: 2 }) : ''
  $('my-qr').dataset.text = link ?? ''
}

async function pingConnection (conn) {
  const signal = AbortSignal.timeout(PEER_DIAL_TIMEOUT)
  const stream = await conn.newStream(PING_PROTOCOL, { signal, runOnLimitedConnection: true })
  try {
    const bytes = byteStream(stream)
    const data = crypto.getRandomValues(new Uint8Array(32))
    const t0 = performance.now()
    await bytes.write(data)
    const back = (await bytes.read({ bytes: 32, signal })).subarray()
    const rtt = performance.now() - t0
    if (!back.every((b, i) => b === data[i])) throw new Error('wrong ping reply')
    await stream.close()
    return rtt
  } catch (err) {
    stream.abort(err)
    throw err
  }
}

// The ping service allows one outbound ping stream per connection, and a dial's own ping or
// the connection monitor's may be running: measure a moment later, and once more on failure.
function measure (conn, attempt = 0) {
  setTimeout(() => {
    if (conn.status !== 'open' || measuredRtt.has(conn.id)) return
    pingConnection(conn)
      .then((rtt) => { measuredRtt.set(conn.id, rtt); updateConnList() })
      .catch(() => { if (attempt === 0) measure(conn, 1) })
  }, MEASURE_DELAY * (attempt + 1))
}

node.addEventListener('connection:open', (event) => {
  const conn = event.detail
  if (conn.limits != null) openedLimits.set(conn.id, limitsAtOpen(conn.limits))
  updateConnList()
  measure(conn)
  if (isDirectWebRTC(conn)) resolvePath(conn).then(() => updateConnList())
})

/** The relay peer a relayed connection runs through: the /p2p/ before /p2p-circuit. */
function relayOf (conn) {
  const parts = conn.remoteAddr.getComponents()
  const circuit = parts.findIndex((c) => c.name === 'p2p-circuit')
  return circuit > 0 ? parts.slice(0, circuit).findLast((c) => c.name === 'p2p')?.value : undefined
}

/** Why a relayed connection ended, in words (the relay gives no reason: see explain.js). */
function relayedEnd (conn) {
  const relay = relayOf(conn)
  const relayGone = relay != null && !openConnections().some((c) =>
    c.remotePeer.toString() === relay && !isRelayed(c))
  const why = relayedEndReason(openedLimits.get(conn.id), conn.limits, relayGone)
  openedLimits.delete(conn.id)
  return why
}

node.addEventListener('connection:close', (event) => {
  const conn = event.detail
  updateConnList()
  measuredRtt.delete(conn.id)
  setupMs.delete(conn.id)
  webrtcPaths.delete(conn.id)
  if (relayConns.get(conn.remotePeer.toString()) === conn) relayConns.delete(conn.remotePeer.toString())
  const ended = isRelayed(conn) ? relayedEnd(conn) : null
  const peer = conn.remotePeer.toString()
  const stillOpen = openConnections().filter((c) => c.remotePeer.toString() === peer)
  if (relayPeers.has(peer) && !isRelayed(conn) && stillOpen.length === 0) {
    appendOutput('Lost the connection to the relay: peers already connected directly keep ' +
      'chatting, new peers cannot reach you until you connect to the relay again.', 'hint')
    $('connect-relay').textContent = 'Reconnect to relay'
  } else if (isDirectWebRTC(conn) && !stillOpen.some(isDirectWebRTC)) {
    appendOutput(`The direct connection to ${short(conn.remotePeer)} closed.`, 'hint')
  } else if (isRelayed(conn) && stillOpen.length === 0) {
    appendOutput(`The relayed connection to ${short(conn.remotePeer)} ended: ${ended}. Relays ` +
      'keep these short (typically 2 minutes or 128 KiB) and browsers chat only over a direct ' +
      'WebRTC connection, so connect again to retry the upgrade.', 'hint')
  } else if (isRelayed(conn)) {
    const direct = stillOpen.some(isDirectWebRTC) ? '; the direct connection stays' : ''
    appendOutput(`The relayed connection to ${short(conn.remotePeer)} ended: ${ended}${direct}.`, 'hint')
  }
})

node.addEventListener('self:peer:update', () => updateOwnAddresses())
// self:peer:update is debounced by a second; a new reservation is announced at once here
node.addEventListener('transport:listening', () => setTimeout(updateOwnAddresses, 0))
node.addEventListener('transport:close', () => setTimeout(updateOwnAddresses, 0))

setInterval(refreshPaths, REFRESH_INTERVAL) // picks up the connection monitor's RTTs and path changes

// -- dialling -------------------------------------------------------------------------------------

function watchReservation () {
  if (reservationTimer != null || node.getMultiaddrs().some((a) => WebRTC.matches(a))) return
  reservationTimer = setTimeout(() => {
    reservationTimer = null
    if (!node.getMultiaddrs().some((a) => WebRTC.matches(a))) {
      appendOutput(`Connected to the relay, but it gave us no reservation within ${RESERVATION_WAIT / 1000} s: ` +
        'its reservation limits may be reached (try again later), or it is not a circuit relay v2 ' +
        'server. Without a reservation other peers cannot dial you; you can still dial them.', 'error')
    }
  }, RESERVATION_WAIT)
}

async function dial (text) {
  let target
  try {
    target = multiaddr(text.trim())
  } catch (err) {
    appendOutput(`'${text}' is not a multiaddr - ${err.message}`, 'error')
    return
  }
  appendOutput(`Dialing '${target}'`)
  if (!usableFrom(target, location.protocol) && relayKind(target) === 'ws') {
    appendOutput(mixedContentProblem([target.toString()], location.protocol), 'error')
    return
  }
  if (Circuit.matches(target) && !WebRTC.matches(target)) {
    appendOutput('Browsers chat only over direct WebRTC: dial the peer\'s address that ends in ' +
      '/p2p-circuit/webrtc/p2p/<peer id>.', 'error')
    return
  }
  const isPeer = WebRTC.matches(target)
  const signal = AbortSignal.timeout(isPeer ? PEER_DIAL_TIMEOUT : RELAY_DIAL_TIMEOUT)
  const t0 = performance.now()
  try {
    if (isPeer) {
      const conn = await node.dial(target, { signal })
      setupMs.set(conn.id, performance.now() - t0)
      const rtt = await node.services.ping.ping(target, { signal })
      measuredRtt.set(conn.id, rtt)
      const path = await resolvePath(conn)
      appendOutput(`Connected to '${target}'`)
      appendOutput(`RTT to ${peerIdOf(target)} was ${rtt}ms`)
      if (path?.path === 'turn') {
        appendOutput(`WebRTC connection to ${short(conn.remotePeer)} via TURN (relay ${path.relay}) ` +
          `set up in ${Math.round(setupMs.get(conn.id))} ms: no direct path between your ` +
          'networks, so the packets go through the relay\'s TURN server, without the relayed ' +
          'circuit\'s limits.', 'hint')
      } else {
        appendOutput(`Direct WebRTC connection to ${short(conn.remotePeer)} set up in ` +
          `${Math.round(setupMs.get(conn.id))} ms: the relay is no longer needed for this chat.`, 'hint')
      }
      updateConnList()
    } else {
      const conn = await node.dial(target, { signal })
      relayPeers.add(conn.remotePeer.toString())
      relayConns.set(conn.remotePeer.toString(), conn)
      appendOutput('Connected to relay')
      fetchTurn(conn)
      $('connect-relay').textContent = 'Connected to relay'
      updateConnList()
      watchReservation()
    }
  } catch (err) {
    if (signal.aborted) {
      appendOutput(`Timed out connecting to '${target}'`, 'error')
      explainTimeout(target, isPeer)
    } else {
      appendOutput(`Connecting to '${target}' failed - ${errorText(err)}`, 'error')
      explain(err, isPeer ? null : RELAY_UNREACHABLE)
    }
  }
}

/** Ask the relay for TURN credentials once connected: the next WebRTC connections can use them. */
async function fetchTurn (conn) {
  const creds = await turnCache.refresh(conn.remotePeer.toString(), conn)
  if (creds == null) return
  const urls = iceServersFrom(creds).flatMap((s) => s.urls)
  document.documentElement.dataset.turn = urls.join(' ')
  appendOutput(`The relay offers TURN (${urls.join(', ')}): peers that cannot connect directly ` +
    'get a WebRTC connection through it.', 'hint')
}

function explainTimeout (target, isPeer) {
  if (!isPeer) {
    appendOutput(RELAY_UNREACHABLE, 'hint')
    return
  }
  const peer = peerIdOf(target)
  const relayed = openConnections().some((c) => c.remotePeer.toString() === peer && isRelayed(c))
  if (relayed) {
    appendOutput(noDirectPath(), 'hint')
  } else {
    appendOutput('The peer did not answer through the relay: is its page still open and ' +
      'connected to the same relay? (Its address changes when it reloads.)', 'hint')
  }
}

window.connect.onclick = () => dial(window.peer.value)
window.peer.addEventListener('keydown', (e) => { if (e.key === 'Enter') dial(window.peer.value) })

$('connect-relay').onclick = () => {
  if (config.relay == null) return
  dialRelays()
}

/** Connect to every relay this page can use (each then gives us a reservation). */
function dialRelays () {
  return Promise.all(config.usableRelays.map((relay) => dial(relay)))
}

$('copy-address').onclick = async () => {
  const input = $('my-address')
  let copied = false
  try {
    await navigator.clipboard.writeText(input.value) // secure contexts only
    copied = true
  } catch {
    input.select()
    copied = document.execCommand('copy')
  }
  $('copy-address').textContent = copied ? 'Copied!' : 'Select and copy by hand'
  setTimeout(() => { $('copy-address').textContent = 'Copy' }, 2000)
}

// -- chat: the example's protocol, one stream per peer --------------------------------------

function attachChat (peer, stream) {
  chatStreams.set(peer, stream)
  const decoder = new TextDecoder()
  stream.addEventListener('message', (evt) => {
    appendOutput(`Received message '${decoder.decode(evt.data.subarray(), { stream: true })}'`)
  })
  return new Promise((resolve) => {
    stream.addEventListener('close', () => {
      if (chatStreams.get(peer) === stream) chatStreams.delete(peer)
      resolve()
    })
  })
}

// the listener keeps the inbound stream and answers on it
node.handle(CHAT_PROTOCOL, (stream, connection) => attachChat(connection.remotePeer.toString(), stream))

async function sendMessage () {
  const peers = directPeers()
  if (peers.size === 0) {
    appendOutput('No direct WebRTC connection to send on: connect to a peer first.', 'error')
    return
  }
  const streams = []
  for (const [peer, conn] of peers) {
    let stream = chatStreams.get(peer)
    if (stream == null) {
      // the dialer opens the chat stream on its first message
      appendOutput('Opening chat stream')
      const signal = AbortSignal.timeout(PEER_DIAL_TIMEOUT)
      try {
        stream = await conn.newStream(CHAT_PROTOCOL, { signal })
        attachChat(peer, stream)
      } catch (err) {
        appendOutput(signal.aborted ? 'Timed out opening chat stream' : `Opening chat stream failed - ${errorText(err)}`, 'error')
        continue
      }
    }
    streams.push(stream)
  }
  const message = window.message.value.toString().trim()
  if (message === '' || streams.length === 0) return
  appendOutput(`Sending message '${message}'`)
  for (const stream of streams) {
    try {
      if (!stream.send(encoder.encode(message))) await stream.onDrain()
    } catch (err) {
      appendOutput(`Error sending message - ${errorText(err)}`, 'error')
    }
  }
}

window.send.onclick = sendMessage
window.message.addEventListener('keydown', (e) => { if (e.key === 'Enter') sendMessage() })

// -- files ----------------------------------------------------------------------------------

function transferRow (direction, name, size, peer) {
  const row = document.createElement('div')
  row.className = `transfer ${direction}`
  row.dataset.state = 'running'
  const title = document.createElement('div')
  title.className = 'title'
  title.textContent = `${direction === 'out' ? 'Sending' : 'Receiving'} ${name} (${formatBytes(size)}) ` +
    `${direction === 'out' ? 'to' : 'from'} ${short(peer)}`
  const bar = document.createElement('progress')
  bar.max = Math.max(size, 1)
  bar.value = 0
  const status = document.createElement('div')
  status.className = 'status'
  row.append(title, bar, status)
  $('files').prepend(row)
  return {
    row,
    progress (phase, done, total) {
      bar.value = done
      status.textContent = `${phase} ${formatBytes(done)} / ${formatBytes(total)}`
    },
    done (text, sha256) {
      row.dataset.state = 'done'
      bar.value = bar.max
      status.textContent = text
      if (sha256 != null) {
        row.dataset.sha256 = sha256
        const code = document.createElement('code')
        code.className = 'sha256'
        code.textContent = sha256
        status.append(' sha256 ', code, ' ✓ verified')
      }
    },
    failed (text) {
      row.dataset.state = 'failed'
      status.textContent = text
      status.className = 'status error'
    }
  }
}

async function sendSelectedFile () {
  const file = $('file').files?.[0]
  if (file == null) {
    appendOutput('Choose a file first.', 'error')
    return
  }
  const peers = directPeers()
  if (peers.size === 0) {
    appendOutput('No direct WebRTC connection to send the file on: connect to a peer first.', 'error')
    return
  }
  for (const [peer, conn] of peers) {
    const ui = transferRow('out', file.name, file.size, peer)
    appendOutput(`Sending file '${file.name}' (${file.size} bytes) to ${short(peer)}`)
    try {
      const { sha256, ms } = await sendFile(conn, file, ui.progress)
      ui.done(`sent in ${(ms / 1000).toFixed(1)} s, the receiver confirmed`, sha256)
      appendOutput(`Sent file '${file.name}' to ${short(peer)}, sha256 ${sha256} verified by the receiver`)
    } catch (err) {
      ui.failed(`failed: ${err.message}`)
      appendOutput(`Sending file '${file.name}' failed - ${err.message}`, 'error')
    }
  }
}

$('send-file').onclick = sendSelectedFile

node.handle(FILE_PROTOCOL, async (stream, connection) => {
  const peer = connection.remotePeer.toString()
  let ui = null
  try {
    const result = await receiveFile(stream, {
      start: ({ name, size }) => {
        ui = transferRow('in', name, size, peer)
        appendOutput(`Receiving file '${name}' (${size} bytes) from ${short(peer)}`)
        return (done, total) => ui.progress('received', done, total)
      }
    })
    ui.done(`received in ${(result.ms / 1000).toFixed(1)} s,`, result.sha256)
    const link = document.createElement('a')
    link.href = URL.createObjectURL(result.blob)
    link.download = result.name
    link.className = 'download'
    link.textContent = `Save ${result.name}`
    ui.row.append(link)
    appendOutput(`Received file '${result.name}' (${result.size} bytes), sha256 ${result.sha256} verified`)
  } catch (err) {
    ui?.failed(`failed: ${err.message}`)
    appendOutput(`Receiving a file from ${short(peer)} failed - ${err.message}`, 'error')
  }
})

// -- start ----------------------------------------------------------------------------------

$('peer-id').textContent = node.peerId.toString()
if (!hasWebCrypto()) $('crypto-note').hidden = false
if (config.relayProblem != null) {
  $('relay-section').hidden = false
  $('relay-addr').textContent = config.relays.join(' ')
  $('connect-relay').disabled = true
  appendOutput(config.relayProblem, 'error')
}
if (config.relay != null) {
  $('relay-section').hidden = false
  $('relay-addr').textContent = config.usableRelays.join(' ')
  window.peer.placeholder = 'the other peer\'s address: /…/p2p-circuit/webrtc/p2p/12D3KooW…'
}
if (config.demoPeer != null) {
  $('demo-section').hidden = false
  $('chat-python').onclick = () => {
    window.peer.value = config.demoPeer
    dial(config.demoPeer)
  }
}
updateOwnAddresses()

document.documentElement.dataset.ready = 'true'

/** A link (#/dial/<addr>) asks to dial: connect to the relay first (our address needs it too). */
async function dialFromLink () {
  const target = dialTarget(location.hash)
  if (target == null) return
  window.peer.value = target
  appendOutput('Opened a link to a peer: connecting…', 'hint')
  if (relayDial != null) await relayDial
  await dial(target)
}

const relayDial = config.relay != null && config.autoConnect ? dialRelays() : null
dialFromLink()
window.addEventListener('hashchange', () => dialFromLink())
