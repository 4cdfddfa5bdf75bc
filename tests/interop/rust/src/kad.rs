//! `kad`: a rust-libp2p Kademlia node (TCP, noise, yamux, identify) driven over JSON lines,
//! for p2prtc's DHT interop tests (tests/interop/rustkad.py).
//!
//! Prints `{"peer", "addr"}`, then takes one command per stdin line and answers each with one
//! line (`{"ok": true, ...}` or `{"ok": false, "error"}`); keys and values in hex:
//! `connect {addr}`, `closest {key}`, `put {key, value}`, `get {key}`, `provide {key}`,
//! `providers {key}`, `stored {key}` (this node's record store).
//!
//! rust's kad validates no records: it stores what it is given (`StoreInserts::Unfiltered`).

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use libp2p::{
    identify,
    kad::{
        self, store::MemoryStore, store::RecordStore, GetClosestPeersOk, GetProvidersOk,
        GetRecordOk, Mode, QueryId, QueryResult, Quorum, Record, RecordKey,
    },
    noise,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, SwarmBuilder,
};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::KadOpts;

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

fn hex_arg(cmd: &Value, name: &str) -> anyhow::Result<Vec<u8>> {
    let s = cmd[name].as_str().ok_or_else(|| anyhow::anyhow!("missing {name}"))?;
    Ok(hex::decode(s)?)
}

fn out(v: Value) {
    println!("{v}");
}

enum Pending {
    Closest,
    Put,
    Get(Option<Vec<u8>>),
    Provide,
    Providers(Vec<String>),
}

pub async fn run_kad(opts: KadOpts) -> anyhow::Result<()> {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let mut cfg = kad::Config::new(kad::PROTOCOL_NAME);
            cfg.set_query_timeout(Duration::from_secs(20));
            Behaviour {
                kad: kad::Behaviour::with_config(peer, MemoryStore::new(peer), cfg),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/ipfs/id/1.0.0".into(),
                    key.public(),
                )),
            }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    swarm.behaviour_mut().kad.set_mode(Some(if opts.mode == "client" {
        Mode::Client
    } else {
        Mode::Server
    }));
    swarm.listen_on(format!("/ip4/{}/tcp/0", opts.ip).parse()?)?;
    let me = *swarm.local_peer_id();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut pending: HashMap<QueryId, Pending> = HashMap::new();
    let mut connecting: Option<PeerId> = None;
    let mut announced = false;
    loop {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } if !announced => {
                    announced = true;
                    out(json!({"peer": me.to_string(), "addr": format!("{address}/p2p/{me}")}));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                    peer_id, info, ..
                })) => {
                    if info.protocols.contains(&kad::PROTOCOL_NAME) {
                        for a in info.listen_addrs {
                            swarm.behaviour_mut().kad.add_address(&peer_id, a);
                        }
                    }
                    if connecting == Some(peer_id) {
                        connecting = None;
                        let speaks = info.protocols.contains(&kad::PROTOCOL_NAME);
                        out(json!({"ok": true, "kad": speaks}));
                    }
                }
                SwarmEvent::OutgoingConnectionError { error, .. } if connecting.is_some() => {
                    connecting = None;
                    out(json!({"ok": false, "error": error.to_string()}));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(
                    kad::Event::OutboundQueryProgressed { id, result, step, .. },
                )) => {
                    let Some(p) = pending.get_mut(&id) else { continue };
                    match (result, p) {
                        (QueryResult::GetClosestPeers(r), Pending::Closest) => {
                            out(match r {
                                Ok(GetClosestPeersOk { peers, .. }) => json!({"ok": true,
                                    "peers": peers.iter().map(|p| p.peer_id.to_string())
                                        .collect::<Vec<_>>()}),
                                Err(e) => json!({"ok": false, "error": e.to_string()}),
                            });
                        }
                        (QueryResult::PutRecord(r), Pending::Put) => out(match r {
                            Ok(_) => json!({"ok": true}),
                            Err(e) => json!({"ok": false, "error": e.to_string()}),
                        }),
                        (QueryResult::GetRecord(r), Pending::Get(found)) => {
                            if let Ok(GetRecordOk::FoundRecord(rec)) = r {
                                found.get_or_insert(rec.record.value);
                            }
                            if step.last || found.is_some() {
                                out(match found.take() {
                                    Some(v) => json!({"ok": true, "value": hex::encode(v)}),
                                    None => json!({"ok": false, "error": "not found"}),
                                });
                                if let Some(mut q) = swarm.behaviour_mut().kad.query_mut(&id) {
                                    q.finish();
                                }
                                pending.remove(&id);
                                continue;
                            }
                        }
                        (QueryResult::StartProviding(r), Pending::Provide) => out(match r {
                            Ok(_) => json!({"ok": true}),
                            Err(e) => json!({"ok": false, "error": e.to_string()}),
                        }),
                        (QueryResult::GetProviders(r), Pending::Providers(found)) => {
                            if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = r {
                                found.extend(providers.iter().filter(|p| **p != me)
                                    .map(|p| p.to_string()));
                            }
                            if step.last || !found.is_empty() {
                                out(json!({"ok": true, "providers": std::mem::take(found)}));
                                if let Some(mut q) = swarm.behaviour_mut().kad.query_mut(&id) {
                                    q.finish();
                                }
                                pending.remove(&id);
                                continue;
                            }
                        }
                        _ => {}
                    }
                    if step.last {
                        pending.remove(&id);
                    }
                }
                _ => {}
            },
            line = stdin.next_line() => {
                let Some(line) = line? else { return Ok(()) };
                let cmd: Value = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(e) => { out(json!({"ok": false, "error": e.to_string()})); continue }
                };
                if let Err(e) = command(&mut swarm, &cmd, &mut pending, &mut connecting) {
                    out(json!({"ok": false, "error": e.to_string()}));
                }
            }
        }
    }
}

fn command(
    swarm: &mut libp2p::Swarm<Behaviour>,
    cmd: &Value,
    pending: &mut HashMap<QueryId, Pending>,
    connecting: &mut Option<PeerId>,
) -> anyhow::Result<()> {
    let kad = &mut swarm.behaviour_mut().kad;
    match cmd["cmd"].as_str().unwrap_or("") {
        "connect" => {
            let addr: Multiaddr = cmd["addr"].as_str().unwrap_or("").parse()?;
            let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
                anyhow::bail!("the address must end with /p2p/<peer id>");
            };
            *connecting = Some(peer);
            swarm.dial(addr)?;
        }
        "closest" => {
            let id = kad.get_closest_peers(hex_arg(cmd, "key")?);
            pending.insert(id, Pending::Closest);
        }
        "put" => {
            let rec = Record::new(RecordKey::new(&hex_arg(cmd, "key")?), hex_arg(cmd, "value")?);
            let id = kad.put_record(rec, Quorum::One)?;
            pending.insert(id, Pending::Put);
        }
        "get" => {
            let id = kad.get_record(RecordKey::new(&hex_arg(cmd, "key")?));
            pending.insert(id, Pending::Get(None));
        }
        "provide" => {
            let id = kad.start_providing(RecordKey::new(&hex_arg(cmd, "key")?))?;
            pending.insert(id, Pending::Provide);
        }
        "providers" => {
            let id = kad.get_providers(RecordKey::new(&hex_arg(cmd, "key")?));
            pending.insert(id, Pending::Providers(Vec::new()));
        }
        "stored" => {
            let key = RecordKey::new(&hex_arg(cmd, "key")?);
            let value = kad.store_mut().get(&key).map(|r| hex::encode(&r.value));
            out(json!({"ok": true, "value": value}));
        }
        other => anyhow::bail!("unknown command {other:?}"),
    }
    Ok(())
}
