//! A rust-libp2p peer and relay that p2prtc's interop tests drive over JSON lines.
//!
//! `peer`  - identify, ping, relay client, `/echo/1.0.0`; commands on stdin, events on stdout.
//! `relay` - the behaviour of rust-libp2p's `examples/relay-server` (relay server, ping,
//!           identify that turns observed addresses into external ones) plus the WebSocket and
//!           webrtc-direct listeners of rust-libp2p PR #6030.
//!
//! The control protocol is the one `tests/interop/control.py` speaks: one JSON object per line,
//! events carry `"event"`, replies carry the command's `"id"` and `"ok"`.

mod control;
mod kad;
mod node;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

#[derive(Debug, Parser)]
#[command(
    name = "p2prtc-interop-rust",
    version,
    about = "rust-libp2p peer/relay for p2prtc interop tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A peer driven over JSON lines on stdin/stdout.
    Peer(PeerOpts),
    /// A circuit relay v2 server (rust-libp2p examples/relay-server + WebSocket/webrtc-direct).
    Relay(RelayOpts),
    /// A Kademlia DHT node (libp2p-kad) driven over JSON lines (src/kad.rs).
    Kad(KadOpts),
}

#[derive(Debug, Args)]
pub struct KadOpts {
    /// server or client (rust's kad Mode)
    #[arg(long, default_value = "server")]
    pub mode: String,
    /// IP address to listen on (TCP)
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,
}

fn parse_multiaddr(s: &str) -> Result<Multiaddr, String> {
    s.parse::<Multiaddr>()
        .map_err(|e| format!("{s:?} is not a multiaddr: {e}"))
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1e6 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

#[derive(Debug, Args)]
pub struct PeerOpts {
    /// Address to listen on (repeatable), e.g. /ip4/127.0.0.1/tcp/0, /ip4/127.0.0.1/tcp/0/ws,
    /// /ip4/127.0.0.1/udp/0/webrtc-direct, /ip4/127.0.0.1/udp/0/quic-v1 or
    /// <relay multiaddr>/p2p-circuit.
    #[arg(long = "listen", value_parser = parse_multiaddr)]
    pub listen: Vec<Multiaddr>,
    /// Ed25519 secret key [N, 0, 0, ...] (as the rust relay-server example); random if absent.
    #[arg(long, alias = "secret-key-seed")]
    pub seed: Option<u8>,
    /// Identify protocol version string.
    #[arg(long, default_value = "/ipfs/id/1.0.0")]
    pub protocol_version: String,
    /// Enable DCUtR (hole punching) on relayed connections.
    #[arg(long)]
    pub dcutr: bool,
    /// Seconds an idle connection stays open.
    #[arg(long, default_value_t = 600)]
    pub idle_timeout: u64,
    /// Seconds between the ping behaviour's automatic pings (`ping` events).
    #[arg(long, default_value_t = 15.0, value_parser = parse_interval)]
    pub ping_interval: f64,
    /// Serve AutoNAT v2 (`libp2p::autonat::v2::server`; `autonat-server` events).
    #[arg(long)]
    pub autonat_server: bool,
    /// Probe our address candidates with AutoNAT v2 servers we are connected to
    /// (`libp2p::autonat::v2::client`, every 200 ms; `autonat-client` events).
    #[arg(long)]
    pub autonat_client: bool,
}

#[derive(Debug, Args)]
pub struct RelayOpts {
    /// Ed25519 secret key [N, 0, 0, ...] (same peer id as rust's relay-server); random if absent.
    #[arg(long, alias = "seed")]
    pub secret_key_seed: Option<u8>,
    /// TCP port (and UDP port for QUIC); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// TCP port for WebSocket (`/tcp/P/ws`).
    #[arg(long)]
    pub websocket_port: Option<u16>,
    /// UDP port for webrtc-direct (certificate generated at start).
    #[arg(long)]
    pub webrtc_port: Option<u16>,
    /// IP address to listen on [default: 127.0.0.1, or ::1 with --use-ipv6 true].
    #[arg(long)]
    pub listen_ip: Option<IpAddr>,
    /// Like the upstream example: `--use-ipv6 true` listens on ::1 unless --listen-ip is given.
    #[arg(long)]
    pub use_ipv6: Option<bool>,
    /// Lift the per-circuit duration and byte limits (default: 2 min, 128 KiB).
    #[arg(long)]
    pub no_limits: bool,
    /// Do not listen on QUIC (upstream listens on udp/<port>/quic-v1 too).
    #[arg(long)]
    pub no_quic: bool,
    /// Take external addresses only from identify (exactly like upstream). By default the relay
    /// also announces its listen addresses: rust's relay server speaks the hop protocol only once
    /// it has an external address, so upstream refuses reservations made before identify ran.
    #[arg(long)]
    pub observed_addrs_only: bool,
    /// Seconds an idle connection stays open (swarm default: 10).
    #[arg(long, default_value_t = 10)]
    pub idle_timeout: u64,
    /// Seconds between automatic pings (rust default 15).
    #[arg(long, default_value_t = 15.0, value_parser = parse_interval)]
    pub ping_interval: f64,
}

impl RelayOpts {
    pub fn ip(&self) -> IpAddr {
        match (self.listen_ip, self.use_ipv6) {
            (Some(ip), _) => ip,
            (None, Some(true)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            (None, _) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let cli = Cli::parse();
    // QUIC (libp2p-tls) enables rustls' aws-lc-rs backend and WebRTC's DTLS enables ring; with
    // both compiled in, rustls cannot pick a process default and DTLS panics. Pick ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Peer(opts) => node::run_peer(opts).await,
            Command::Relay(opts) => node::run_relay(opts).await,
            Command::Kad(opts) => kad::run_kad(opts).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
