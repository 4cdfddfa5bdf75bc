//! JSON-lines I/O and the stream-level operations (`echo`, explicit `ping`) of the control protocol.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub const ECHO_PROTOCOL: StreamProtocol = StreamProtocol::new("/echo/1.0.0");

/// Chunk size for echo writes and reads.
pub const ECHO_CHUNK: usize = 64 * 1024;
/// Ping payload size, fixed by the ping spec.
const PING_SIZE: usize = 32;

/// Write one JSON line to stdout. Errors (parent gone) are ignored: the process is ended by
/// stdin EOF or a signal, never by a panic on a closed pipe.
pub fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// A plain text line on stdout (the relay-server's `Listening on ...`).
pub fn emit_text(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn event(name: &str, fields: Value) {
    let mut m = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert("event".into(), Value::from(name));
    emit(&Value::Object(m));
}

pub fn reply(id: &Value, result: Result<Value, String>) {
    let mut m = Map::new();
    m.insert("id".into(), id.clone());
    match result {
        Ok(Value::Object(fields)) => {
            m.insert("ok".into(), Value::Bool(true));
            for (k, v) in fields {
                if k != "id" && k != "ok" {
                    m.insert(k, v);
                }
            }
        }
        Ok(Value::Null) => {
            m.insert("ok".into(), Value::Bool(true));
        }
        Ok(other) => {
            m.insert("ok".into(), Value::Bool(true));
            m.insert("result".into(), other);
        }
        Err(e) => {
            m.insert("ok".into(), Value::Bool(false));
            m.insert("error".into(), Value::from(e));
        }
    }
    emit(&Value::Object(m));
}

/// One parsed stdin line.
pub struct Command {
    pub id: Value,
    pub cmd: String,
    pub args: Map<String, Value>,
}

/// Parse a stdin line; on failure return the id (if any) and the error to reply with.
pub fn parse_command(line: &str) -> Result<Command, (Value, String)> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| (Value::Null, format!("invalid JSON: {e}")))?;
    let Value::Object(mut m) = v else {
        return Err((Value::Null, "a command must be a JSON object".into()));
    };
    let id = m.remove("id").unwrap_or(Value::Null);
    let cmd = match m.remove("cmd") {
        Some(Value::String(s)) => s,
        _ => return Err((id, "missing string field \"cmd\"".into())),
    };
    Ok(Command { id, cmd, args: m })
}

pub fn arg_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match args.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("field {key:?} must be a string")),
        None => Err(format!("missing field {key:?}")),
    }
}

pub fn arg_u64(args: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("field {key:?} must be a non-negative integer")),
    }
}

/// `timeout` argument (seconds, may be fractional) or the default.
pub fn arg_timeout(args: &Map<String, Value>, default: Duration) -> Result<Duration, String> {
    match args.get("timeout_s") {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_f64() {
            Some(s) if s > 0.0 && s < 1e6 => Ok(Duration::from_secs_f64(s)),
            _ => Err("field \"timeout_s\" must be a positive number of seconds".into()),
        },
    }
}

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Send `n` random bytes over an open `/echo/1.0.0` stream, half-close, read everything back.
/// Writing and reading run concurrently so flow control never deadlocks.
pub async fn echo(
    mut stream: Stream,
    n: u64,
    chunk: usize,
    opened: Instant,
    started: Instant,
) -> Result<Value, String> {
    // Send the lazily negotiated multistream-select header as a frame of its own (see below).
    stream
        .flush()
        .await
        .map_err(|e| format!("echo flush failed: {e}"))?;
    let (mut reader, mut writer) = stream.split();
    let send = async {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; chunk];
        let mut left = n;
        while left > 0 {
            let len = left.min(chunk as u64) as usize;
            rand::fill(&mut buf[..len]);
            hash.update(&buf[..len]);
            writer
                .write_all(&buf[..len])
                .await
                .map_err(|e| format!("echo write failed: {e}"))?;
            // Flush every chunk: rust-libp2p's WebRTC stream glues a small unflushed frame to the
            // next one and the data channel then rejects the >16 KiB message
            // ("outbound packet larger than maximum message size", rust-libp2p #6557).
            writer
                .flush()
                .await
                .map_err(|e| format!("echo flush failed: {e}"))?;
            left -= len as u64;
        }
        writer
            .close()
            .await
            .map_err(|e| format!("echo half-close failed: {e}"))?;
        Ok::<_, String>(hex::encode(hash.finalize()))
    };
    let receive = async {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; ECHO_CHUNK];
        let mut total: u64 = 0;
        loop {
            let got = reader
                .read(&mut buf)
                .await
                .map_err(|e| format!("echo read failed after {total} bytes: {e}"))?;
            if got == 0 {
                break;
            }
            hash.update(&buf[..got]);
            total += got as u64;
        }
        Ok::<_, String>((hex::encode(hash.finalize()), total))
    };
    let (sha_sent, (sha_received, received)) = futures::try_join!(send, receive)?;
    let done = Instant::now();
    let ms = millis(done - started);
    let transfer = (done - opened).as_secs_f64();
    Ok(json!({
        "bytes": n,
        "bytes_received": received,
        "sha_sent": sha_sent,
        "sha_received": sha_received,
        "match": sha_sent == sha_received && received == n,
        "ms": ms,
        "open_ms": millis(opened - started),
        "mib_per_s": if transfer > 0.0 { (n as f64 / 1048576.0) / transfer } else { 0.0 },
    }))
}

/// Serve one inbound `/echo/1.0.0` stream: copy input back until EOF, then close.
pub async fn serve_echo(peer: PeerId, stream: Stream) {
    let (mut reader, mut writer) = stream.split();
    let mut buf = vec![0u8; ECHO_CHUNK];
    let mut total: u64 = 0;
    let result: std::io::Result<()> = async {
        loop {
            let got = reader.read(&mut buf).await?;
            if got == 0 {
                break;
            }
            writer.write_all(&buf[..got]).await?;
            writer.flush().await?; // see `echo`: keeps WebRTC messages within 16 KiB
            total += got as u64;
        }
        writer.close().await
    }
    .await;
    match result {
        Ok(()) => tracing::debug!(%peer, total, "echo stream done"),
        Err(e) => tracing::info!(%peer, total, "echo stream failed: {e}"),
    }
}

/// One ping on a fresh `/ipfs/ping/1.0.0` stream. Never two on one stream: rust's own ping
/// handler (libp2p-ping 0.48) stores the next read after answering without polling it, so a
/// second ping on the same stream waits until something else wakes the connection (up to the
/// 15 s ping interval).
pub async fn ping(mut stream: Stream, opened: Instant, started: Instant) -> Result<Value, String> {
    let rtt = ping_once(&mut stream).await?;
    let _ = stream.close().await;
    Ok(json!({
        "rtt_ms": millis(rtt),
        "open_ms": millis(opened - started),
    }))
}

async fn ping_once(stream: &mut Stream) -> Result<Duration, String> {
    let mut payload = [0u8; PING_SIZE];
    rand::fill(&mut payload[..]);
    let t0 = Instant::now();
    stream
        .write_all(&payload)
        .await
        .map_err(|e| format!("ping write failed: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("ping flush failed: {e}"))?;
    let mut back = [0u8; PING_SIZE];
    stream
        .read_exact(&mut back)
        .await
        .map_err(|e| format!("ping read failed: {e}"))?;
    if back != payload {
        return Err("ping payload came back different".into());
    }
    Ok(t0.elapsed())
}
