//! The swarm, its event loop, and the commands that need the swarm.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{FutureExt, StreamExt};
use libp2p::{
    core::{multiaddr::Protocol, transport::ListenerId, ConnectedPoint},
    autonat, dcutr, identify, identity, noise, ping, relay,
    swarm::{
        behaviour::toggle::Toggle,
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, NetworkBehaviour, SwarmEvent,
    },
    tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};
use serde_json::{json, Map, Value};
use tokio::{io::AsyncBufReadExt, sync::oneshot};

use crate::{
    control::{self, arg_str, arg_timeout, arg_u64, event, millis, reply, ECHO_PROTOCOL},
    PeerOpts, RelayOpts,
};

/// Identify protocol version of rust-libp2p's relay-server example.
const RELAY_PROTOCOL_VERSION: &str = "/TODO/0.0.1";
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDENTIFY_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_ECHO_BYTES: u64 = 1024;
/// Swarm events handled in one go before stdin gets a turn, so that bursts (all addresses of a
/// reservation, all interfaces of a listener) are reported together.
const MAX_EVENT_BATCH: usize = 256;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    relay_client: Toggle<relay::client::Behaviour>,
    relay: Toggle<relay::Behaviour>,
    ping: ping::Behaviour,
    identify: identify::Behaviour,
    dcutr: Toggle<dcutr::Behaviour>,
    stream: libp2p_stream::Behaviour,
    autonat_server: Toggle<autonat::v2::server::Behaviour>,
    autonat_client: Toggle<autonat::v2::client::Behaviour>,
}

fn keypair(seed: Option<u8>) -> identity::Keypair {
    match seed {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[0] = seed;
            identity::Keypair::ed25519_from_bytes(bytes)
                .expect("32 bytes is a valid ed25519 secret")
        }
        None => identity::Keypair::generate_ed25519(),
    }
}

/// The system resolver, or (when /etc/resolv.conf has no name server, e.g. in a bare network
/// namespace) a resolver without servers, so the binary still starts and never asks a DNS server
/// it was not configured with.
fn dns_config() -> (libp2p::dns::ResolverConfig, libp2p::dns::ResolverOpts) {
    match hickory_resolver::system_conf::read_system_conf() {
        Ok(conf) => conf,
        Err(e) => {
            tracing::info!("no system DNS configuration ({e}); /dns addresses will not resolve");
            (
                libp2p::dns::ResolverConfig::from_name_servers(vec![]),
                libp2p::dns::ResolverOpts::default(),
            )
        }
    }
}

struct SwarmConfig {
    identify_protocol_version: String,
    relay_server: Option<relay::Config>,
    relay_client: bool,
    dcutr: bool,
    idle_timeout: Duration,
    ping_interval: Duration,
    autonat_server: bool,
    autonat_client: bool,
}

async fn build_swarm(key: identity::Keypair, cfg: SwarmConfig) -> anyhow::Result<Swarm<Behaviour>> {
    let certificate = libp2p_webrtc::tokio::Certificate::generate(&mut rand::rng())
        .map_err(|e| anyhow::anyhow!("cannot generate a WebRTC certificate: {e}"))?;
    let (dns_cfg, dns_opts) = dns_config();
    let SwarmConfig {
        identify_protocol_version,
        relay_server,
        relay_client,
        dcutr,
        idle_timeout,
        ping_interval,
        autonat_server,
        autonat_client,
    } = cfg;

    let make_behaviour = move |key: &identity::Keypair,
                               client: Option<relay::client::Behaviour>| {
        let peer_id = key.public().to_peer_id();
        Behaviour {
            relay_client: client.into(),
            relay: relay_server
                .map(|c| relay::Behaviour::new(peer_id, c))
                .into(),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(ping_interval)),
            identify: identify::Behaviour::new(identify::Config::new(
                identify_protocol_version,
                key.public(),
            )),
            dcutr: dcutr.then(|| dcutr::Behaviour::new(peer_id)).into(),
            stream: libp2p_stream::Behaviour::new(),
            autonat_server: autonat_server
                .then(autonat::v2::server::Behaviour::default)
                .into(),
            autonat_client: autonat_client
                .then(|| {
                    autonat::v2::client::Behaviour::new(
                        rand::make_rng::<rand::rngs::StdRng>(),
                        autonat::v2::client::Config::default()
                            .with_probe_interval(Duration::from_millis(200)),
                    )
                })
                .into(),
        }
    };

    let builder = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_other_transport(|key| libp2p_webrtc::tokio::Transport::new(key.clone(), certificate))?
        .with_dns_config(dns_cfg, dns_opts)
        .with_websocket(noise::Config::new, yamux::Config::default)
        .await?;
    let swarm = if relay_client {
        builder
            .with_relay_client(noise::Config::new, yamux::Config::default)?
            .with_behaviour(|key, client| make_behaviour(key, Some(client)))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
            .build()
    } else {
        builder
            .with_behaviour(|key| make_behaviour(key, None))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
            .build()
    };
    Ok(swarm)
}

pub async fn run_peer(opts: PeerOpts) -> anyhow::Result<()> {
    let swarm = build_swarm(
        keypair(opts.seed),
        SwarmConfig {
            identify_protocol_version: opts.protocol_version.clone(),
            relay_server: None,
            relay_client: true,
            dcutr: opts.dcutr,
            idle_timeout: Duration::from_secs(opts.idle_timeout),
            ping_interval: Duration::from_secs_f64(opts.ping_interval),
            autonat_server: opts.autonat_server,
            autonat_client: opts.autonat_client,
        },
    )
    .await?;
    let mut node = Node::new(swarm, Role::Peer);

    let mut incoming = node
        .control
        .accept(ECHO_PROTOCOL)
        .map_err(|e| anyhow::anyhow!("cannot serve {ECHO_PROTOCOL}: {e}"))?;
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(control::serve_echo(peer, stream));
        }
    });

    for addr in opts.listen {
        node.listen_initial(addr)?;
    }
    node.run().await
}

pub async fn run_relay(opts: RelayOpts) -> anyhow::Result<()> {
    let mut relay_config = relay::Config::default();
    if opts.no_limits {
        // Upstream sends the duration as u32 seconds and treats 0 bytes as "no limit" only on
        // its own side; the largest values mean "unlimited" to every client implementation.
        relay_config.max_circuit_duration = Duration::from_secs(u32::MAX as u64);
        relay_config.max_circuit_bytes = u64::MAX;
    }
    let swarm = build_swarm(
        keypair(opts.secret_key_seed),
        SwarmConfig {
            identify_protocol_version: RELAY_PROTOCOL_VERSION.to_string(),
            relay_server: Some(relay_config),
            relay_client: false,
            dcutr: false,
            idle_timeout: Duration::from_secs(opts.idle_timeout),
            ping_interval: Duration::from_secs_f64(opts.ping_interval),
            autonat_server: false,
            autonat_client: false,
        },
    )
    .await?;
    let mut node = Node::new(
        swarm,
        Role::Relay {
            listen_addrs_external: !opts.observed_addrs_only,
        },
    );

    let ip = Protocol::from(opts.ip());
    let base = Multiaddr::empty().with(ip);
    node.listen_initial(base.clone().with(Protocol::Tcp(opts.port)))?;
    if !opts.no_quic {
        node.listen_initial(
            base.clone()
                .with(Protocol::Udp(opts.port))
                .with(Protocol::QuicV1),
        )?;
    }
    if let Some(port) = opts.websocket_port {
        node.listen_initial(
            base.clone()
                .with(Protocol::Tcp(port))
                .with(Protocol::Ws("/".into())),
        )?;
    }
    if let Some(port) = opts.webrtc_port {
        node.listen_initial(
            base.clone()
                .with(Protocol::Udp(port))
                .with(Protocol::WebRTCDirect),
        )?;
    }
    node.run().await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Peer,
    Relay { listen_addrs_external: bool },
}

type Reply = oneshot::Sender<Result<Value, String>>;
/// Where the result of a dial, listen, ... arrives.
type Pending = oneshot::Receiver<Result<Value, String>>;

struct PendingDial {
    started: Instant,
    reply: Reply,
}

struct Node {
    swarm: Swarm<Behaviour>,
    role: Role,
    local_peer_id: PeerId,
    control: libp2p_stream::Control,
    /// Listeners from the command line; `ready` is printed once each reported an address.
    initial_listeners: Vec<(ListenerId, Multiaddr)>,
    ready_sent: bool,
    listen_addrs: HashMap<ListenerId, Vec<Multiaddr>>,
    pending_dials: HashMap<ConnectionId, PendingDial>,
    pending_listens: HashMap<ListenerId, Reply>,
    /// Relays that accepted a reservation whose `reservation` event is not printed yet.
    pending_reservation_events: HashSet<PeerId>,
    identify_info: HashMap<PeerId, Value>,
    identify_waiters: Vec<(PeerId, oneshot::Sender<Value>)>,
    connections: HashMap<ConnectionId, Value>,
}

impl Node {
    fn new(swarm: Swarm<Behaviour>, role: Role) -> Self {
        let local_peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        Self {
            swarm,
            role,
            local_peer_id,
            control,
            initial_listeners: Vec::new(),
            ready_sent: false,
            listen_addrs: HashMap::new(),
            pending_dials: HashMap::new(),
            pending_listens: HashMap::new(),
            pending_reservation_events: HashSet::new(),
            identify_info: HashMap::new(),
            identify_waiters: Vec::new(),
            connections: HashMap::new(),
        }
    }

    fn listen_initial(&mut self, addr: Multiaddr) -> anyhow::Result<()> {
        let id = self
            .swarm
            .listen_on(addr.clone())
            .with_context(|| format!("cannot listen on {addr}"))?;
        self.initial_listeners.push((id, addr));
        Ok(())
    }

    fn with_p2p(&self, addr: &Multiaddr) -> Multiaddr {
        match addr.iter().last() {
            Some(Protocol::P2p(p)) if p == self.local_peer_id => addr.clone(),
            _ => addr.clone().with(Protocol::P2p(self.local_peer_id)),
        }
    }

    fn all_listen_addrs(&self) -> Vec<String> {
        let mut ids: Vec<_> = self.listen_addrs.keys().copied().collect();
        // Command-line listeners first, in command-line order.
        ids.sort_by_key(|id| {
            self.initial_listeners
                .iter()
                .position(|(l, _)| l == id)
                .unwrap_or(usize::MAX)
        });
        ids.iter()
            .flat_map(|id| self.listen_addrs[id].iter())
            .map(|a| self.with_p2p(a).to_string())
            .collect()
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        self.flush(); // `ready` right away when there is nothing to listen on
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => {
                    self.on_swarm_event(ev)?;
                    for _ in 0..MAX_EVENT_BATCH {
                        match self.swarm.next().now_or_never() {
                            Some(Some(ev)) => self.on_swarm_event(ev)?,
                            _ => break,
                        }
                    }
                    self.flush();
                }
                line = stdin.next_line(), if stdin_open => match line {
                    Ok(Some(line)) => {
                        if !line.trim().is_empty() {
                            self.on_line(&line);
                            self.flush();
                        }
                    }
                    Ok(None) | Err(_) => {
                        stdin_open = false;
                        // A peer belongs to the process driving it; a relay may run detached.
                        if self.role == Role::Peer {
                            tracing::info!("stdin closed, exiting");
                            return Ok(());
                        }
                    }
                },
            }
        }
    }

    /// Print what waits for a complete batch of events: `ready`, listen replies, reservations.
    fn flush(&mut self) {
        if !self.ready_sent
            && self
                .initial_listeners
                .iter()
                .all(|(id, _)| self.listen_addrs.get(id).is_some_and(|a| !a.is_empty()))
        {
            self.ready_sent = true;
            event(
                "ready",
                json!({"peerId": self.local_peer_id.to_string(), "addrs": self.all_listen_addrs()}),
            );
        }

        let done: Vec<ListenerId> = self
            .pending_listens
            .keys()
            .filter(|id| self.listen_addrs.get(id).is_some_and(|a| !a.is_empty()))
            .copied()
            .collect();
        for id in done {
            if let Some(tx) = self.pending_listens.remove(&id) {
                let addrs: Vec<String> = self.listen_addrs[&id]
                    .iter()
                    .map(|a| self.with_p2p(a).to_string())
                    .collect();
                let _ = tx.send(Ok(json!({"addrs": addrs})));
            }
        }

        let relays: Vec<PeerId> = self.pending_reservation_events.iter().copied().collect();
        for relay in relays {
            let addrs = self.circuit_addrs(relay);
            if !addrs.is_empty() {
                self.pending_reservation_events.remove(&relay);
                event(
                    "reservation",
                    json!({"relay": relay.to_string(), "addrs": addrs}),
                );
            }
        }
    }

    /// Our `/p2p-circuit` listen addresses through `relay`.
    fn circuit_addrs(&self, relay: PeerId) -> Vec<String> {
        self.listen_addrs
            .values()
            .flatten()
            .filter(|a| {
                let protos: Vec<Protocol> = a.iter().collect();
                protos
                    .windows(2)
                    .any(|w| matches!(w, [Protocol::P2p(p), Protocol::P2pCircuit] if *p == relay))
            })
            .map(|a| self.with_p2p(a).to_string())
            .collect()
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) -> anyhow::Result<()> {
        match ev {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Role::Relay {
                    listen_addrs_external,
                } = self.role
                {
                    control::emit_text(&format!("Listening on {}", self.with_p2p(&address)));
                    if listen_addrs_external {
                        self.swarm.add_external_address(address.clone());
                    }
                }
                let addrs = self.listen_addrs.entry(listener_id).or_default();
                if !addrs.contains(&address) {
                    addrs.push(address.clone());
                }
                if self.ready_sent {
                    event(
                        "listen-addr",
                        json!({"addr": self.with_p2p(&address).to_string()}),
                    );
                }
            }
            SwarmEvent::ExpiredListenAddr {
                listener_id,
                address,
            } => {
                if let Some(addrs) = self.listen_addrs.get_mut(&listener_id) {
                    addrs.retain(|a| a != &address);
                }
                event(
                    "listen-addr-expired",
                    json!({"addr": self.with_p2p(&address).to_string()}),
                );
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                self.listen_addrs.remove(&listener_id);
                let reason = match reason {
                    Ok(()) => "closed".to_string(),
                    Err(e) => error_chain(&e),
                };
                self.listener_failed(listener_id, reason)?;
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                event("listener-error", json!({"error": error_chain(&error)}));
                tracing::warn!(?listener_id, "listener error: {}", error_chain(&error));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let info = connection_json(peer_id, connection_id, &endpoint);
                let mut ev = info.clone();
                ev["numEstablished"] = json!(num_established.get());
                event("connection", ev);
                self.connections.insert(connection_id, info.clone());
                if let Some(dial) = self.pending_dials.remove(&connection_id) {
                    let mut r = info;
                    r["ms"] = json!(millis(dial.started.elapsed()));
                    let _ = dial.reply.send(Ok(r));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
            } => {
                self.connections.remove(&connection_id);
                let mut ev = connection_json(peer_id, connection_id, &endpoint);
                ev["numEstablished"] = json!(num_established);
                ev["cause"] = match cause {
                    Some(e) => json!(error_chain(&e)),
                    None => Value::Null,
                };
                event("disconnection", ev);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                let msg = error_chain(&error);
                match self.pending_dials.remove(&connection_id) {
                    Some(dial) => {
                        let _ = dial.reply.send(Err(format!("dial failed: {msg}")));
                    }
                    None => event(
                        "dial-error",
                        json!({"peer": peer_id.map(|p| p.to_string()), "error": msg}),
                    ),
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                event(
                    "incoming-error",
                    json!({"remoteAddr": send_back_addr.to_string(), "error": error_chain(&error)}),
                );
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
        Ok(())
    }

    fn listener_failed(&mut self, listener_id: ListenerId, reason: String) -> anyhow::Result<()> {
        if let Some(tx) = self.pending_listens.remove(&listener_id) {
            let _ = tx.send(Err(format!("listener closed: {reason}")));
        }
        if let Some((_, addr)) = self
            .initial_listeners
            .iter()
            .find(|(id, _)| *id == listener_id)
        {
            if !self.ready_sent {
                anyhow::bail!("listening on {addr} failed: {reason}");
            }
        }
        event("listener-closed", json!({"reason": reason}));
        Ok(())
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if let Role::Relay { .. } = self.role {
                    // As rust-libp2p's relay-server: what peers observe becomes our external
                    // address, which fills the addresses of every reservation.
                    self.swarm.add_external_address(info.observed_addr.clone());
                }
                let v = json!({
                    "peer": peer_id.to_string(),
                    "agentVersion": info.agent_version,
                    "protocolVersion": info.protocol_version,
                    "protocols": info.protocols.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "listenAddrs": info.listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "observedAddr": info.observed_addr.to_string(),
                });
                event("identify", v.clone());
                self.identify_info.insert(peer_id, v.clone());
                let waiters = std::mem::take(&mut self.identify_waiters);
                for (peer, tx) in waiters {
                    if peer == peer_id {
                        let _ = tx.send(v.clone());
                    } else if !tx.is_closed() {
                        self.identify_waiters.push((peer, tx));
                    }
                }
            }
            BehaviourEvent::Identify(identify::Event::Error { peer_id, error, .. }) => {
                tracing::info!(%peer_id, "identify error: {}", error_chain(&error));
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event { peer, result, .. }) => match result {
                Ok(rtt) => event(
                    "ping",
                    json!({"peer": peer.to_string(), "rtt_ms": millis(rtt)}),
                ),
                Err(e) => event(
                    "ping-failure",
                    json!({"peer": peer.to_string(), "error": error_chain(&e)}),
                ),
            },
            BehaviourEvent::RelayClient(ev) => {
                if let relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } = &ev {
                    self.pending_reservation_events.insert(*relay_peer_id);
                }
                let (kind, detail) = describe(&ev);
                event("relay-client", json!({"kind": kind, "detail": detail}));
            }
            BehaviourEvent::Relay(ev) => {
                let (kind, detail) = describe(&ev);
                event("relay", json!({"kind": kind, "detail": detail}));
            }
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => {
                event(
                    "dcutr",
                    json!({
                        "peer": remote_peer_id.to_string(),
                        "ok": result.is_ok(),
                        "error": result.err().map(|e| error_chain(&e)),
                    }),
                );
            }
            BehaviourEvent::Stream(()) => {}
            BehaviourEvent::AutonatServer(ev) => event(
                "autonat-server",
                json!({
                    "client": ev.client.to_string(),
                    "all_addrs": ev.all_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "tested_addr": ev.tested_addr.to_string(),
                    "data_amount": ev.data_amount,
                    "ok": ev.result.is_ok(),
                    "error": ev.result.err().map(|e| error_chain(&e)),
                }),
            ),
            BehaviourEvent::AutonatClient(ev) => event(
                "autonat-client",
                json!({
                    "server": ev.server.to_string(),
                    "tested_addr": ev.tested_addr.to_string(),
                    "bytes_sent": ev.bytes_sent,
                    "ok": ev.result.is_ok(),
                    "error": ev.result.err().map(|e| e.to_string()),
                }),
            ),
        }
    }

    fn on_line(&mut self, line: &str) {
        let cmd = match control::parse_command(line) {
            Ok(cmd) => cmd,
            Err((id, e)) => {
                reply(&id, Err(e));
                return;
            }
        };
        let id = cmd.id.clone();
        if let Err(e) = self.on_command(cmd) {
            reply(&id, Err(e));
        }
    }

    /// Start a command. Immediate answers are sent here; the rest finish in a spawned task.
    fn on_command(&mut self, cmd: control::Command) -> Result<(), String> {
        let control::Command { id, cmd, args } = cmd;
        match cmd.as_str() {
            "dial" => {
                let addr = parse_addr(arg_str(&args, "addr")?)?;
                let timeout = arg_timeout(&args, DEFAULT_DIAL_TIMEOUT)?;
                let rx = self.dial(addr)?;
                spawn_reply(id, timeout, "dial", rx);
            }
            "ping" => {
                let (peer, dialing) = self.target(&args)?;
                let timeout = arg_timeout(&args, DEFAULT_STREAM_TIMEOUT)?;
                let control = self.control.clone();
                spawn_stream_op(
                    id,
                    timeout,
                    peer,
                    dialing,
                    control,
                    ping::PROTOCOL_NAME,
                    3,
                    |stream, opened, started| control::ping(stream, opened, started).boxed(),
                );
            }
            "echo" => {
                let (peer, dialing) = self.target(&args)?;
                let n = arg_u64(&args, "bytes")?.unwrap_or(DEFAULT_ECHO_BYTES);
                // Size of each write (then flushed); WebRTC peers may want < 8 KiB messages.
                let chunk = match arg_u64(&args, "chunk")? {
                    None => control::ECHO_CHUNK,
                    Some(c) if (1..=16 * 1024 * 1024).contains(&c) => c as usize,
                    Some(_) => return Err("field \"chunk\" must be 1..=16777216".into()),
                };
                let timeout = arg_timeout(&args, DEFAULT_STREAM_TIMEOUT)?;
                let control = self.control.clone();
                spawn_stream_op(
                    id,
                    timeout,
                    peer,
                    dialing,
                    control,
                    ECHO_PROTOCOL,
                    1,
                    move |stream, opened, started| {
                        control::echo(stream, n, chunk, opened, started).boxed()
                    },
                );
            }
            "identify" => {
                let peer = parse_peer(arg_str(&args, "peer")?)?;
                let timeout = arg_timeout(&args, DEFAULT_IDENTIFY_TIMEOUT)?;
                if let Some(info) = self.identify_info.get(&peer) {
                    reply(&id, Ok(info.clone()));
                } else {
                    let (tx, rx) = oneshot::channel();
                    self.identify_waiters.push((peer, tx));
                    tokio::spawn(async move {
                        let result = match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(v)) => Ok(v),
                            Ok(Err(_)) => Err("node stopped".to_string()),
                            Err(_) => {
                                Err(format!("no identify info from {peer} within {timeout:?}"))
                            }
                        };
                        reply(&id, result);
                    });
                }
            }
            "listen" | "listen_relay" => {
                let mut addr = parse_addr(arg_str(&args, "addr")?)?;
                if cmd == "listen_relay"
                    && !matches!(addr.iter().last(), Some(Protocol::P2pCircuit))
                {
                    if !addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
                        return Err("relay address must end with /p2p/<relay peer id>".into());
                    }
                    addr = addr.with(Protocol::P2pCircuit);
                }
                let timeout = arg_timeout(&args, DEFAULT_LISTEN_TIMEOUT)?;
                let listener = self
                    .swarm
                    .listen_on(addr.clone())
                    .map_err(|e| format!("cannot listen on {addr}: {}", error_chain(&e)))?;
                let (tx, rx) = oneshot::channel();
                self.pending_listens.insert(listener, tx);
                spawn_reply(id, timeout, &cmd, rx);
            }
            "connections" => {
                let list: Vec<Value> = self.connections.values().cloned().collect();
                reply(&id, Ok(json!({"connections": list})));
            }
            "addrs" => {
                reply(
                    &id,
                    Ok(
                        json!({"peerId": self.local_peer_id.to_string(), "addrs": self.all_listen_addrs()}),
                    ),
                );
            }
            "close" => {
                let peer = parse_peer(arg_str(&args, "peer")?)?;
                let was = self.swarm.disconnect_peer_id(peer).is_ok();
                reply(&id, Ok(json!({"wasConnected": was})));
            }
            "stop" => {
                reply(&id, Ok(Value::Null));
                std::process::exit(0);
            }
            other => return Err(format!("unknown command {other:?}")),
        }
        Ok(())
    }

    /// Dial `addr` as a new connection; the receiver gets the connection or the dial error.
    fn dial(&mut self, addr: Multiaddr) -> Result<Pending, String> {
        let opts = match peer_of(&addr) {
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let connection_id = opts.connection_id();
        self.swarm
            .dial(opts)
            .map_err(|e| format!("cannot dial {addr}: {}", error_chain(&e)))?;
        let (tx, rx) = oneshot::channel();
        self.pending_dials.insert(
            connection_id,
            PendingDial {
                started: Instant::now(),
                reply: tx,
            },
        );
        Ok(rx)
    }

    /// `peer` (a peer id or a multiaddr ending in /p2p/<id>) or `addr`: the peer to talk to, and
    /// a pending dial when we are not connected to it yet and have an address.
    fn target(&mut self, args: &Map<String, Value>) -> Result<(PeerId, Option<Pending>), String> {
        let text = match (args.get("addr"), args.get("peer")) {
            (Some(_), _) => arg_str(args, "addr")?,
            (None, Some(_)) => arg_str(args, "peer")?,
            (None, None) => return Err("missing field \"peer\" or \"addr\"".into()),
        };
        if !text.starts_with('/') {
            return Ok((parse_peer(text)?, None));
        }
        let addr = parse_addr(text)?;
        let peer =
            peer_of(&addr).ok_or_else(|| format!("{addr} does not end with /p2p/<peer id>"))?;
        if self.swarm.is_connected(&peer) {
            return Ok((peer, None));
        }
        Ok((peer, Some(self.dial(addr)?)))
    }
}

fn spawn_reply(id: Value, timeout: Duration, what: &str, rx: Pending) {
    let what = what.to_string();
    tokio::spawn(async move {
        let result = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(format!("{what}: node dropped the request")),
            Err(_) => Err(format!("{what}: no result within {timeout:?}")),
        };
        reply(&id, result);
    });
}

/// Open a stream (after the dial, if any) and run `op` on it; reply with its result. A failed
/// attempt is retried on a new stream up to `attempts` times (ping: rust's ping handler keeps one
/// inbound stream per connection and drops the older one when a newer arrives, so the
/// behaviour's own periodic ping can cut an explicit one).
#[allow(clippy::too_many_arguments)]
fn spawn_stream_op<F>(
    id: Value,
    timeout: Duration,
    peer: PeerId,
    dialing: Option<Pending>,
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    attempts: usize,
    op: F,
) where
    F: Fn(
            libp2p::Stream,
            Instant,
            Instant,
        ) -> futures::future::BoxFuture<'static, Result<Value, String>>
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let started = Instant::now();
        let work = async move {
            if let Some(rx) = dialing {
                rx.await
                    .map_err(|_| "node dropped the dial".to_string())??;
            }
            let mut last_error = String::new();
            for attempt in 1..=attempts {
                let stream = control
                    .open_stream(peer, protocol.clone())
                    .await
                    .map_err(|e| {
                        format!("cannot open {protocol} to {peer}: {}", error_chain(&e))
                    })?;
                match op(stream, Instant::now(), started).await {
                    Ok(mut v) => {
                        v["attempts"] = json!(attempt);
                        return Ok(v);
                    }
                    Err(e) => {
                        tracing::info!(%peer, %protocol, attempt, "stream operation failed: {e}");
                        last_error = e;
                    }
                }
            }
            Err(last_error)
        };
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("no result within {timeout:?}")),
        };
        reply(&id, result);
    });
}

fn connection_json(peer: PeerId, connection_id: ConnectionId, endpoint: &ConnectedPoint) -> Value {
    let mut v = json!({
        "peer": peer.to_string(),
        "connectionId": format!("{connection_id}"),
        "remoteAddr": endpoint.get_remote_address().to_string(),
        "direction": if endpoint.is_dialer() { "outbound" } else { "inbound" },
        "relayed": endpoint.is_relayed(),
    });
    if let ConnectedPoint::Listener { local_addr, .. } = endpoint {
        v["localAddr"] = json!(local_addr.to_string());
    }
    v
}

fn parse_addr(s: &str) -> Result<Multiaddr, String> {
    s.parse::<Multiaddr>()
        .map_err(|e| format!("{s:?} is not a multiaddr: {e}"))
}

fn parse_peer(s: &str) -> Result<PeerId, String> {
    if s.starts_with('/') {
        let addr = parse_addr(s)?;
        return peer_of(&addr).ok_or_else(|| format!("{addr} does not end with /p2p/<peer id>"));
    }
    s.parse::<PeerId>()
        .map_err(|e| format!("{s:?} is not a peer id: {e}"))
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) => Some(p),
        _ => None,
    }
}

/// An error and its sources, "outer: inner: innermost".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// Variant name and Debug text of an event we only report.
fn describe(ev: &impl std::fmt::Debug) -> (String, String) {
    let detail = format!("{ev:?}");
    let kind = detail
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string();
    (kind, detail)
}
