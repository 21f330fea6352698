//! A private Kafka-protocol broker (tansu) that a test can take off the network: the broker
//! advertises a TCP proxy's address, so every client connection (bootstrap and leader) goes
//! through the proxy, and [`CutProxy::cut`] stops listening and resets every open connection,
//! as a stopped broker does. The broker process keeps its (in-memory) log, as a restarted
//! broker keeps its disk, so what was committed before the outage is still there after it.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::AbortHandle;

/// A TCP proxy on loopback that can be cut (connections refused and reset) and restored on
/// the same address.
pub struct CutProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    /// The accept loop and every tunnel: aborting them closes their sockets.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl CutProxy {
    /// A proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let mut proxy = Self {
            addr: "127.0.0.1:0".parse()?,
            upstream,
            tasks: Arc::default(),
        };
        proxy.addr = proxy.listen_on(proxy.addr).await?;
        Ok(proxy)
    }

    /// `127.0.0.1:port` of the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn listen_on(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let socket = TcpSocket::new_v4()?;
        // The same port again after a cut, while the cut connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket
            .bind(addr)
            .with_context(|| format!("binding the proxy to {addr}"))?;
        let listener = socket.listen(1024)?;
        let bound = listener.local_addr()?;
        let upstream = self.upstream;
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let tunnel = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let mut client = client;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                lock(&tasks).push(tunnel.abort_handle());
            }
        });
        lock(&self.tasks).push(accept.abort_handle());
        Ok(bound)
    }

    /// Stops listening (new connections are refused) and closes every open connection.
    pub fn cut(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restore(&self) -> anyhow::Result<()> {
        self.listen_on(self.addr).await.map(|_| ())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A tansu broker of the test's own, reachable only through its [`CutProxy`]. Killed on drop.
pub struct PrivateBroker {
    child: Child,
    /// What clients connect to: the proxy.
    pub proxy: CutProxy,
    /// `host:port` for `bootstrap.servers`.
    pub brokers: String,
    _log: tempfile::NamedTempFile,
}

impl PrivateBroker {
    /// Starts tansu (`bin`) with in-memory storage on a free port, advertising the proxy, and
    /// waits until it answers through the proxy.
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        let upstream = free_port()?;
        let proxy = CutProxy::start(upstream).await?;
        let brokers = proxy.addr().to_string();
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new(bin)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{upstream}"),
                "--advertised-listener-url",
                &format!("tcp://{brokers}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let child = Mutex::new(child);
        let probe = crate::unique_topic("private-broker-probe");
        let listening = crate::poll_until(
            Duration::from_secs(30),
            "the private broker to listen",
            || async {
                if let Some(status) = lock(&child).try_wait()? {
                    bail!("tansu exited: {status}");
                }
                Ok(TcpStream::connect(upstream).await.ok().map(|_| ()))
            },
        )
        .await;
        let mut child = child.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = listening {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(log.path()).unwrap_or_default();
            return Err(e.context(format!("tansu's output:\n{output}")));
        }
        let broker = Self {
            child,
            proxy,
            brokers,
            _log: log,
        };
        crate::kafka::create_topic(&broker.brokers, &probe, 1).await?;
        Ok(broker)
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
