//! A TCP relay that injects faults between a client and a server (a proxy
//! and its Redis): delays, replies cut off mid-way with a reset, a server
//! that stops answering, or every command answered with a Redis error
//! (`READONLY`, `LOADING`…) without reaching the server. The fault can change
//! at any time and applies to connections already open, as a real fault
//! would. Runs on its own thread and runtime, stopped on drop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the relay does to the traffic now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Relays faithfully.
    None,
    /// Holds every chunk of the server's answers this long.
    Delay(Duration),
    /// Relays this many bytes of the next answer, then resets the connection.
    CutReply(usize),
    /// The connections open now go dead: nothing passes either way, ever
    /// again, though none is closed (a vanished host, a dropped NAT entry).
    /// Connections made once the fault is gone work.
    Blackhole,
    /// Answers every command with this Redis error (`READONLY You can't…`),
    /// without passing it on.
    RedisError(String),
}

pub struct Relay {
    pub port: u16,
    /// `redis://127.0.0.1:PORT/`
    pub redis_url: String,
    fault: Arc<Mutex<Fault>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("port", &self.port).finish()
    }
}

impl Relay {
    /// Relays a free loopback port to `127.0.0.1:target`.
    pub fn start(target: u16) -> anyhow::Result<Relay> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let f = fault.clone();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                let accept = async {
                    while let Ok((client, _)) = listener.accept().await {
                        let f = f.clone();
                        tokio::spawn(async move {
                            if let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await {
                                relay(client, server, f).await;
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = rx => {}
                }
            });
        });
        Ok(Relay {
            port,
            redis_url: format!("redis://127.0.0.1:{port}/"),
            fault,
            _shutdown: tx,
        })
    }

    pub fn set(&self, fault: Fault) {
        if let Ok(mut f) = self.fault.lock() {
            *f = fault;
        }
    }
}

fn now(fault: &Mutex<Fault>) -> Fault {
    fault.lock().map(|f| f.clone()).unwrap_or(Fault::None)
}

/// The number of complete RESP commands (arrays of bulk strings) at the
/// start of `buf`, and the bytes they take.
fn commands(buf: &[u8]) -> (usize, usize) {
    let line = |at: usize| -> Option<(i64, usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    };
    let (mut count, mut used) = (0, 0);
    'outer: while used < buf.len() && buf[used] == b'*' {
        let Some((items, mut at)) = line(used) else {
            break;
        };
        for _ in 0..items.max(0) {
            if buf.get(at) != Some(&b'$') {
                break 'outer;
            }
            let Some((len, data)) = line(at) else {
                break 'outer;
            };
            at = data + len.max(0) as usize + 2;
            if at > buf.len() {
                break 'outer;
            }
        }
        count += 1;
        used = at;
    }
    (count, used)
}

async fn relay(client: TcpStream, server: TcpStream, fault: Arc<Mutex<Fault>>) {
    let (mut client_r, client_w) = client.into_split();
    let (server_r, mut server_w) = server.into_split();
    let client_w = Arc::new(tokio::sync::Mutex::new(client_w));
    // Once dead (a blackhole), always dead.
    let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Answers: server → client, with delays and cuts.
    let answers = {
        let (fault, client_w, dead) = (fault.clone(), client_w.clone(), dead.clone());
        tokio::spawn(async move {
            let mut server_r = server_r;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match server_r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                match now(&fault) {
                    Fault::Delay(d) => tokio::time::sleep(d).await,
                    Fault::Blackhole => {
                        dead.store(true, std::sync::atomic::Ordering::SeqCst);
                        continue;
                    }
                    _ if dead.load(std::sync::atomic::Ordering::SeqCst) => continue,
                    Fault::CutReply(keep) => {
                        let mut w = client_w.lock().await;
                        let _ = w.write_all(&buf[..keep.min(n)]).await;
                        let _ = w.flush().await;
                        // Dropping both halves with linger 0 sends a reset.
                        return;
                    }
                    _ => {}
                }
                if client_w.lock().await.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        })
    };
    // Requests: client → server, unless a Redis error answers them.
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if answers.is_finished() {
            break;
        }
        let n = tokio::select! {
            r = client_r.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
        };
        match now(&fault) {
            Fault::Blackhole => {
                dead.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            _ if dead.load(std::sync::atomic::Ordering::SeqCst) => {}
            Fault::RedisError(e) => {
                pending.extend_from_slice(&buf[..n]);
                let (count, used) = commands(&pending);
                pending.drain(..used);
                let reply = format!("-{e}\r\n").repeat(count);
                if client_w
                    .lock()
                    .await
                    .write_all(reply.as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            _ => {
                pending.clear();
                if server_w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    answers.abort();
    // Reset rather than close: a fault, not a goodbye.
    if let Ok(w) = Arc::try_unwrap(client_w) {
        let w = w.into_inner();
        if let Ok(stream) = client_r.reunite(w) {
            // A zero linger never blocks: the close is a reset at once.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_whole_commands_only() {
        let two = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(commands(two), (2, two.len()));
        assert_eq!(commands(&two[..20]), (1, 14));
        assert_eq!(commands(b""), (0, 0));
        assert_eq!(commands(b"*2\r\n$3\r\nGET"), (0, 0));
    }
}
