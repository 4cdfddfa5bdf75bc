//! A rust `yamux` peer over plain TCP on loopback, no Noise. Driven by ../run_yamux_interop.py.
//!
//!   yamux-interop-peer client PORT   dial 127.0.0.1:PORT as the yamux client (odd ids)
//!   yamux-interop-peer server        listen on 127.0.0.1:0, print "LISTENING <port>"
//!
//! Echoes every inbound stream, opens STREAMS streams of its own with SIZE bytes each (checked
//! on the way back), and prints one JSON line when the connection ends.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Instant;

use futures::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::TokioAsyncReadCompatExt;
use yamux::{Config, Connection, Mode, Stream};

const STREAMS: usize = 4;
const SIZE: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn payload(seed: u64) -> Vec<u8> {
    // xorshift: random-looking bytes without a rand dependency
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn echo(mut stream: Stream) -> usize {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                if let Err(e) = stream.write_all(&buf[..n]).await {
                    eprintln!("[rust] echo write failed: {e}");
                    return total;
                }
            }
            Err(e) => {
                eprintln!("[rust] echo read failed: {e}");
                return total;
            }
        }
    }
    let _ = stream.close().await;
    total
}

async fn round_trip(stream: Stream, seed: u64) -> bool {
    let data = payload(seed);
    let (mut r, mut w) = stream.split();
    let write = async {
        for chunk in data.chunks(CHUNK) {
            w.write_all(chunk).await.unwrap();
        }
        w.close().await.unwrap();
    };
    let read = async {
        let mut got = Vec::with_capacity(SIZE);
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = futures::join!(write, read);
    got == data
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (socket, mode) = match args.get(1).map(String::as_str) {
        Some("client") => {
            let port: u16 = args[2].parse().unwrap();
            (TcpStream::connect(("127.0.0.1", port)).await.unwrap(), Mode::Client)
        }
        Some("server") => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!("LISTENING {}", listener.local_addr().unwrap().port());
            (listener.accept().await.unwrap().0, Mode::Server)
        }
        _ => {
            eprintln!("usage: yamux-interop-peer client PORT | server");
            std::process::exit(2);
        }
    };
    let role = if matches!(mode, Mode::Client) { "client" } else { "server" };
    let mut conn = Connection::new(socket.compat(), Config::default(), mode);

    // One task owns the connection and drives it; others ask it for outbound streams.
    let (open_tx, mut open_rx) = mpsc::unbounded_channel::<oneshot::Sender<Stream>>();
    let driver = tokio::spawn(async move {
        let mut inbound = Vec::new();
        let mut waiting: Option<oneshot::Sender<Stream>> = None;
        let end = poll_fn(|cx| loop {
            if waiting.is_none() {
                if let Poll::Ready(Some(tx)) = open_rx.poll_recv(cx) {
                    waiting = Some(tx);
                }
            }
            if let Some(tx) = waiting.take() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(Ok(s)) => {
                        let _ = tx.send(s);
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(format!("{e}")),
                    Poll::Pending => waiting = Some(tx),
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(s))) => inbound.push(tokio::spawn(echo(s))),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(format!("{e}")),
                Poll::Ready(None) => return Poll::Ready("closed".to_string()),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
        let mut echoed = Vec::new();
        for h in inbound {
            echoed.push(h.await.unwrap_or(0));
        }
        (end, echoed)
    });

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let (tx, rx) = oneshot::channel();
        open_tx.send(tx).unwrap();
        let stream = rx.await.unwrap();
        tasks.push(tokio::spawn(round_trip(stream, i as u64 + 1)));
    }
    let mut oks = Vec::new();
    for t in tasks {
        oks.push(t.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("[rust] own streams done in {seconds:.3}s");
    let (end, echoed) = driver.await.unwrap();
    let ok = oks.iter().all(|b| *b);
    println!(
        "{{\"role\":\"{role}\",\"yamux\":\"rust yamux 0.13\",\"streams_ok\":{oks:?},\"echoed\":{echoed:?},\"end\":\"{end}\",\"ok\":{ok}}}"
    );
}
