//! A shaping TCP relay: one per simulated edge and control-plane endpoint,
//! between the edge's sync client and the control plane, so each edge sees
//! its own network — one-way delay, jitter, bandwidth, loss — and can be made
//! to flap.
//!
//! Each direction of a relayed connection is a reader and a writer joined by
//! a queue bounded in bytes ([`Shape::buffer`]): the reader stamps every chunk
//! with the time it may be delivered, the writer sleeps until then. When the
//! queue is full the reader stops reading, so a slow link pushes back into the
//! sender's TCP window exactly as a congested path does.
//!
//! - **Bandwidth**: a chunk occupies the link for `len / bandwidth`; chunks
//!   queue behind each other (serialisation delay).
//! - **Delay and jitter**: delivery = end of serialisation + `delay` + a draw
//!   in `[0, jitter]`, never before the previous chunk (TCP delivers in order).
//! - **Loss**: TCP never loses bytes, it retransmits; a "lost" chunk (drawn
//!   with probability `loss`) arrives one retransmission timeout late
//!   (200 ms + one RTT, Linux's minimum RTO plus the round trip), and holds up
//!   everything behind it (head-of-line blocking).
//! - **Flapping**: with `flap` set, every connection is cut that long after it
//!   was accepted; the edge reconnects through the same relay.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Most bytes read at once.
const CHUNK: usize = 16 << 10;
/// Chunks remembered per direction for latency breakdowns.
const DELIVERIES: usize = 512;

/// How one edge's path to the control plane behaves, in each direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// One-way delay (half the round trip).
    pub delay: Duration,
    /// Extra one-way delay drawn uniformly in `[0, jitter]` per chunk.
    pub jitter: Duration,
    /// Bytes per second in each direction; 0: unlimited.
    pub bandwidth: u64,
    /// Probability that a chunk needs a retransmission.
    pub loss: f64,
    /// Cut every connection this long after it was accepted.
    pub flap: Option<Duration>,
    /// Bytes queued in the relay per direction before it stops reading.
    pub buffer: usize,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape { delay: Duration::ZERO, jitter: Duration::ZERO, bandwidth: 0, loss: 0.0, flap: None, buffer: 256 << 10 }
    }
}

impl Shape {
    /// The round trip without jitter.
    pub fn rtt(&self) -> Duration {
        self.delay * 2
    }

    /// The retransmission penalty of a lost chunk.
    fn rto(&self) -> Duration {
        Duration::from_millis(200) + self.rtt()
    }
}

/// What crossed one relay, for the report.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Control plane → edge bytes delivered.
    pub down: AtomicU64,
    /// Edge → control plane bytes delivered.
    pub up: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections cut by flapping or [`Relay::cut`].
    pub cut: AtomicU64,
    /// Connections relayed now (both sides connected, neither closed yet).
    pub open: AtomicU64,
    /// Recent edge → control plane chunks (newest last).
    up_chunks: Mutex<VecDeque<Chunk>>,
    /// Recent control plane → edge chunks (newest last).
    down_chunks: Mutex<VecDeque<Chunk>>,
}

/// When one chunk crossed a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The relay read it from the sender.
    pub read: Instant,
    /// When the shaped link would deliver it (read + serialisation + delay + jitter [+ loss penalty]).
    pub due: Instant,
    /// The relay wrote it to the receiver (`due` plus however late the relay's runtime was).
    pub delivered: Instant,
}

impl Chunk {
    /// Time the shaped link itself took (delay, jitter, bandwidth, loss).
    pub fn wire(&self) -> Duration {
        self.due.saturating_duration_since(self.read)
    }

    /// How late the relay delivered it past `due` (its runtime's scheduling).
    pub fn late(&self) -> Duration {
        self.delivered.saturating_duration_since(self.due)
    }
}

impl Traffic {
    /// The first edge → control plane chunk read at or after `t` (once delivered).
    pub fn first_up_after(&self, t: Instant) -> Option<Chunk> {
        let d = lock(&self.up_chunks);
        let i = d.partition_point(|c| c.read < t);
        d.get(i).copied()
    }

    /// The first edge → control plane delivery at or after `t`, if any yet.
    pub fn first_up_delivery_after(&self, t: Instant) -> Option<Instant> {
        let d = lock(&self.up_chunks);
        let i = d.partition_point(|c| c.delivered < t);
        d.get(i).map(|c| c.delivered)
    }

    /// The last control plane → edge chunk delivered at or before `t`.
    pub fn last_down_before(&self, t: Instant) -> Option<Chunk> {
        let d = lock(&self.down_chunks);
        let i = d.partition_point(|c| c.delivered <= t);
        i.checked_sub(1).and_then(|i| d.get(i)).copied()
    }

    fn delivered(&self, dir: Direction, chunk: Chunk, n: usize) {
        let (bytes, chunks) = match dir {
            Direction::Up => (&self.up, &self.up_chunks),
            Direction::Down => (&self.down, &self.down_chunks),
        };
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        let mut d = lock(chunks);
        if d.len() == DELIVERIES {
            d.pop_front();
        }
        d.push_back(chunk);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A relay listening on loopback, forwarding to one upstream address.
#[derive(Debug)]
pub struct Relay {
    /// Where edges connect.
    pub addr: SocketAddr,
    /// Its counters.
    pub traffic: Arc<Traffic>,
    shape: Arc<Mutex<Shape>>,
    /// Cuts every open connection when notified (waiters only).
    cut: Arc<Notify>,
    /// While set, new connections are refused (closed at once).
    refusing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Binds 127.0.0.1:0 and relays every accepted connection to `upstream`.
    /// Must be called inside the runtime that is to carry the relay's work.
    pub async fn start(upstream: SocketAddr, shape: Shape) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let traffic = Arc::new(Traffic::default());
        let shape = Arc::new(Mutex::new(shape));
        let cut = Arc::new(Notify::new());
        let refusing = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            Arc::clone(&shape),
            Arc::clone(&traffic),
            Arc::clone(&cut),
            Arc::clone(&refusing),
        ));
        Ok(Relay { addr, traffic, shape, cut, refusing, task })
    }

    /// The shape connections opened from now on get.
    pub fn set_shape(&self, shape: Shape) {
        *self.shape.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = shape;
    }

    /// The current shape.
    pub fn shape(&self) -> Shape {
        *self.shape.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cuts every open connection now.
    pub fn cut(&self) {
        self.cut.notify_waiters();
    }

    /// Refuses (`true`) or accepts again (`false`) new connections.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::Release);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shape: Arc<Mutex<Shape>>,
    traffic: Arc<Traffic>,
    cut: Arc<Notify>,
    refusing: Arc<AtomicBool>,
) {
    loop {
        let Ok((edge, _)) = listener.accept().await else { continue };
        if refusing.load(Ordering::Acquire) {
            drop(edge);
            continue;
        }
        traffic.connections.fetch_add(1, Ordering::Relaxed);
        let shape = *shape.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (traffic, cut) = (Arc::clone(&traffic), Arc::clone(&cut));
        tokio::spawn(async move {
            // The control plane refusing the connection looks like a reset to the edge.
            let Ok(cp) = TcpStream::connect(upstream).await else { return };
            let _ = edge.set_nodelay(true);
            let _ = cp.set_nodelay(true);
            traffic.open.fetch_add(1, Ordering::Relaxed);
            relay(edge, cp, shape, Arc::clone(&traffic), cut).await;
            traffic.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Pumps both directions until either side closes, the flap timer fires or
/// the relay is cut.
async fn relay(edge: TcpStream, cp: TcpStream, shape: Shape, traffic: Arc<Traffic>, cut: Arc<Notify>) {
    let (edge_r, edge_w) = edge.into_split();
    let (cp_r, cp_w) = cp.into_split();
    let mut pumps = JoinSet::new();
    pumps.spawn(pump(edge_r, cp_w, shape, Arc::clone(&traffic), Direction::Up));
    pumps.spawn(pump(cp_r, edge_w, shape, Arc::clone(&traffic), Direction::Down));
    let flap = async {
        match shape.flap {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        // One direction ending (EOF or error) ends the connection: both halves drop.
        _ = pumps.join_next() => {}
        () = flap => { traffic.cut.fetch_add(1, Ordering::Relaxed); }
        () = cut.notified() => { traffic.cut.fetch_add(1, Ordering::Relaxed); }
    }
    pumps.abort_all();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Edge → control plane.
    Up,
    /// Control plane → edge.
    Down,
}

/// One direction: a reader stamping chunks with their delivery time, a
/// writer delivering them then, and between them at most `shape.buffer` bytes.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shape: Shape, traffic: Arc<Traffic>, dir: Direction) {
    let room = Arc::new(Semaphore::new(shape.buffer.max(CHUNK)));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Instant, Vec<u8>)>();
    let reader = {
        let room = Arc::clone(&room);
        async move {
            let mut link_free = Instant::now();
            let mut last_due = Instant::now();
            // One read buffer; each chunk queued is a copy of what was read (a
            // small read must not hold, or zero, a whole CHUNK while it waits).
            let mut read_buf = vec![0u8; CHUNK];
            loop {
                let n = match from.read(&mut read_buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let buf = read_buf[..n].to_vec();
                // Bounded: wait for room before queueing (and before reading more).
                let Ok(permit) = room.acquire_many(n as u32).await else { return };
                permit.forget();
                let now = Instant::now();
                let serialised = if shape.bandwidth > 0 {
                    let start = link_free.max(now);
                    link_free = start + Duration::from_secs_f64(n as f64 / shape.bandwidth as f64);
                    link_free
                } else {
                    now
                };
                let mut due = serialised + shape.delay;
                let mut rng = rand::rng();
                if !shape.jitter.is_zero() {
                    due += shape.jitter.mul_f64(rng.random::<f64>());
                }
                if shape.loss > 0.0 && rng.random::<f64>() < shape.loss {
                    due += shape.rto();
                }
                last_due = last_due.max(due);
                if tx.send((now, last_due, buf)).is_err() {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some((read, due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // Stamped as the write starts: the receiver may read it before `write_all` returns here.
            let delivered = Instant::now();
            if to.write_all(&buf).await.is_err() {
                return;
            }
            traffic.delivered(dir, Chunk { read, due, delivered }, buf.len());
            room.add_permits(buf.len());
        }
        let _ = to.shutdown().await;
    };
    // The writer ends after the reader (the queue closes) and has delivered what was queued.
    tokio::join!(reader, writer);
}
