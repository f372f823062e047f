//! The agent's side of the event channel: opening the transport (a virtio-serial port
//! found by name under /sys/class/virtio-ports, or AF_VSOCK), and an outbox that keeps
//! every frame until the manager acknowledges it. After a disconnect the channel
//! reconnects and re-sends everything unacknowledged, in id order; the manager drops
//! ids it has already seen.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cocos_proto::frame::{self, Decoder, Origin, Record, AGENT_ID_MAX};

use crate::config::Transport;

/// Most frames kept while the manager is away (older ones are dropped first, and the
/// drop is reported in the next frame's log).
pub const MAX_PENDING: usize = 10_000;

/// Finds the character device of the virtio-serial port called `name`.
pub fn find_serial_port(sys_ports: &Path, dev: &Path, name: &str) -> Option<PathBuf> {
    let mut found = None;
    for e in std::fs::read_dir(sys_ports).ok()?.flatten() {
        let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            found = Some(dev.join(e.file_name()));
        }
    }
    found
}

/// Opens the transport.
pub fn open(t: &Transport) -> std::io::Result<File> {
    match t {
        Transport::Serial(name) => {
            let p = find_serial_port(Path::new("/sys/class/virtio-ports"), Path::new("/dev"), name)
                .ok_or_else(|| std::io::Error::other(format!("no virtio-serial port named {name:?} (is virtio_console loaded and the port configured?)")))?;
            std::fs::OpenOptions::new().read(true).write(true).open(p)
        }
        Transport::Vsock { cid, port } => {
            use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
            let fd = socket(
                AddressFamily::Vsock,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            connect(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &VsockAddr::new(*cid, *port),
            )?;
            Ok(File::from(fd))
        }
    }
}

/// Manager frame ids remembered to drop re-sends (the manager keeps at most 16
/// unacknowledged; this is far more).
const SEEN_FROM_MANAGER: usize = 4096;

#[derive(Debug, Default)]
struct State {
    /// Frames pushed so far: frame `seq` (1, 2, …, never wrapping) has the id
    /// [`frame_id`]`(seq)`, which wraps from [`AGENT_ID_MAX`] to 1.
    seq: u64,
    /// Unacknowledged frames by seq (so order survives the id wrap): (id, bytes).
    pending: BTreeMap<u64, (u32, Vec<u8>)>,
    /// id → seq of the pending frames (ids are unique within the window).
    by_id: std::collections::HashMap<u32, u64>,
    /// Frames up to this seq were written on the current connection.
    sent_up_to: u64,
    dropped: u64,
    seen_from_manager: std::collections::HashSet<u32>,
    seen_order: std::collections::VecDeque<u32>,
}

/// The frame id of the `seq`th frame: 1..=[`AGENT_ID_MAX`], then 1 again.
pub fn frame_id(seq: u64) -> u32 {
    let n = u64::from(AGENT_ID_MAX);
    u32::try_from((seq.saturating_sub(1)) % n + 1).unwrap_or(1)
}

/// The outbox shared by the producers and the connection thread.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// An outbox whose next frame is the `seq + 1`th (tests: start near the id wrap).
    pub fn starting_after(seq: u64) -> Self {
        let o = Self::default();
        o.inner.0.lock().unwrap_or_else(|p| p.into_inner()).seq = seq;
        o
    }

    /// Queues a payload; returns its frame id.
    pub fn push(&self, payload: &[u8]) -> Result<u32, frame::FrameError> {
        let (m, cv) = &*self.inner;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        let seq = s.seq + 1;
        let id = frame_id(seq);
        let bytes = frame::encode(id, payload)?;
        s.seq = seq;
        s.pending.insert(seq, (id, bytes));
        s.by_id.insert(id, seq);
        while s.pending.len() > MAX_PENDING {
            if let Some((_, (old_id, _))) = s.pending.pop_first() {
                s.by_id.remove(&old_id);
                s.dropped += 1;
            }
        }
        cv.notify_all();
        Ok(id)
    }

    /// Marks a frame acknowledged.
    pub fn ack(&self, id: u32) {
        let (m, _) = &*self.inner;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seq) = s.by_id.remove(&id) {
            s.pending.remove(&seq);
        }
    }

    /// Frames not yet acknowledged.
    pub fn pending(&self) -> usize {
        let (m, _) = &*self.inner;
        m.lock().unwrap_or_else(|p| p.into_inner()).pending.len()
    }

    /// Records a manager frame id; false if it was seen before (a re-send).
    pub fn first_sight(&self, id: u32) -> bool {
        let (m, _) = &*self.inner;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        if !s.seen_from_manager.insert(id) {
            return false;
        }
        s.seen_order.push_back(id);
        while s.seen_order.len() > SEEN_FROM_MANAGER {
            if let Some(old) = s.seen_order.pop_front() {
                s.seen_from_manager.remove(&old);
            }
        }
        true
    }

    /// Frames to write on this connection (everything after `sent_up_to`, in push
    /// order across the id wrap), waiting up to `wait` for new ones.
    fn unsent(&self, wait: Duration) -> Vec<(u32, Vec<u8>)> {
        let (m, cv) = &*self.inner;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        let has_new = |s: &State| {
            s.pending
                .range(s.sent_up_to.saturating_add(1)..)
                .next()
                .is_some()
        };
        if !has_new(&s) {
            s = cv
                .wait_timeout(s, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let out: Vec<(u64, u32, Vec<u8>)> = s
            .pending
            .range(s.sent_up_to.saturating_add(1)..)
            .map(|(k, (id, v))| (*k, *id, v.clone()))
            .collect();
        if let Some((last, _, _)) = out.last() {
            s.sent_up_to = *last;
        }
        out.into_iter().map(|(_, id, v)| (id, v)).collect()
    }

    fn restart(&self) {
        let (m, _) = &*self.inner;
        m.lock().unwrap_or_else(|p| p.into_inner()).sent_up_to = 0;
    }
}

/// Runs one connection until it fails: writes queued frames, reads acks and manager
/// frames (acknowledging each and passing first sightings to `on_frame`).
pub fn serve<C, F>(conn: C, reader: C, outbox: &Outbox, on_frame: F) -> std::io::Result<()>
where
    C: Read + Write + Send + 'static,
    F: Fn(u32, Vec<u8>) + Send + 'static,
{
    outbox.restart();
    let acks: Arc<Mutex<Vec<u32>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rd = {
        let (outbox, acks, failed) = (outbox.clone(), acks.clone(), failed.clone());
        let mut reader = reader;
        std::thread::spawn(move || {
            let mut dec = Decoder::new(Origin::Manager);
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dec.push(buf.get(..n).unwrap_or(&[])),
                }
                loop {
                    match dec.next_record() {
                        Ok(Some(Record::Ack(id))) => outbox.ack(id),
                        Ok(Some(Record::Frame { id, payload })) => {
                            acks.lock().unwrap_or_else(|p| p.into_inner()).push(id);
                            if outbox.first_sight(id) {
                                on_frame(id, payload);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            failed.store(true, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
            failed.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut conn = conn;
    let result = loop {
        if failed.load(std::sync::atomic::Ordering::SeqCst) {
            break Err(std::io::Error::other("connection closed"));
        }
        // Wait for frames first, then take the acks, so an answer's ack goes out no
        // later than the answer itself.
        let frames = outbox.unsent(Duration::from_millis(200));
        let mut out = Vec::new();
        for id in std::mem::take(&mut *acks.lock().unwrap_or_else(|p| p.into_inner())) {
            out.extend_from_slice(&frame::ack(id));
        }
        for (_, bytes) in frames {
            out.extend_from_slice(&bytes);
        }
        if !out.is_empty() {
            if let Err(e) = conn.write_all(&out).and_then(|_| conn.flush()) {
                break Err(e);
            }
        }
    };
    drop(conn);
    let _ = rd.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn finds_serial_ports_by_name() {
        let d = tempfile::tempdir().unwrap();
        for (port, name) in [("vport0p0", "other"), ("vport0p1", "cocos.events")] {
            std::fs::create_dir_all(d.path().join(port)).unwrap();
            std::fs::write(d.path().join(port).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_serial_port(d.path(), Path::new("/dev"), "cocos.events"),
            Some(PathBuf::from("/dev/vport0p1"))
        );
        assert_eq!(find_serial_port(d.path(), Path::new("/dev"), "nope"), None);
    }

    #[test]
    fn resends_unacked_frames_after_reconnect_and_dedupes_manager_frames() {
        let outbox = Outbox::new();
        outbox.push(b"one").unwrap();
        outbox.push(b"two").unwrap();
        // First connection: the manager reads both frames, acks only the first, hangs up.
        let (agent, mut mgr) = UnixStream::pair().unwrap();
        let ob = outbox.clone();
        let t =
            std::thread::spawn(move || serve(agent.try_clone().unwrap(), agent, &ob, |_, _| {}));
        let mut dec = Decoder::new(Origin::Agent);
        let mut frames = Vec::new();
        let mut buf = [0u8; 256];
        while frames.len() < 2 {
            let n = mgr.read(&mut buf).unwrap();
            dec.push(&buf[..n]);
            while let Some(r) = dec.next_record().unwrap() {
                frames.push(r);
            }
        }
        assert_eq!(
            frames[0],
            Record::Frame {
                id: 1,
                payload: b"one".to_vec()
            }
        );
        mgr.write_all(&frame::ack(1)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(mgr);
        assert!(t.join().unwrap().is_err());
        assert_eq!(outbox.pending(), 1);

        // Second connection: frame 2 comes again; a manager frame sent twice is
        // handled once and acknowledged both times.
        let (agent, mut mgr) = UnixStream::pair().unwrap();
        let ob = outbox.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let t = std::thread::spawn(move || {
            serve(agent.try_clone().unwrap(), agent, &ob, move |id, p| {
                s2.lock().unwrap().push((id, p))
            })
        });
        let req = frame::encode(0x8000_0001, b"req").unwrap();
        mgr.write_all(&req).unwrap();
        mgr.write_all(&req).unwrap();
        let mut dec = Decoder::new(Origin::Agent);
        let mut recs = Vec::new();
        while recs.len() < 3 {
            let n = mgr.read(&mut buf).unwrap();
            dec.push(&buf[..n]);
            while let Some(r) = dec.next_record().unwrap() {
                recs.push(r);
            }
        }
        assert!(recs.contains(&Record::Frame {
            id: 2,
            payload: b"two".to_vec()
        }));
        assert_eq!(
            recs.iter()
                .filter(|r| **r == Record::Ack(0x8000_0001))
                .count(),
            2
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
        mgr.write_all(&frame::ack(2)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(outbox.pending(), 0);
        drop(mgr);
        let _ = t.join();
    }

    /// Issue #15.15: frames keep their order across the id wrap (AGENT_ID_MAX → 1),
    /// are all sent on the same connection, and are acknowledged by id.
    #[test]
    fn ids_wrap_to_one_and_order_survives() {
        assert_eq!(
            (frame_id(1), frame_id(u64::from(AGENT_ID_MAX))),
            (1, AGENT_ID_MAX)
        );
        assert_eq!(frame_id(u64::from(AGENT_ID_MAX) + 1), 1);
        let ob = Outbox::starting_after(u64::from(AGENT_ID_MAX) - 2);
        let pushed: Vec<u32> = (0..5).map(|i| ob.push(&[i]).unwrap()).collect();
        assert_eq!(pushed, [AGENT_ID_MAX - 1, AGENT_ID_MAX, 1, 2, 3]);
        let sent: Vec<u32> = ob
            .unsent(Duration::ZERO)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(sent, pushed, "every frame is sent, in push order");
        ob.push(&[9]).unwrap();
        let more: Vec<u32> = ob
            .unsent(Duration::ZERO)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            more,
            [4],
            "frames pushed after the wrap go out on the same connection"
        );
        ob.ack(AGENT_ID_MAX);
        ob.ack(1);
        ob.restart();
        let again: Vec<u32> = ob
            .unsent(Duration::ZERO)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(again, [AGENT_ID_MAX - 1, 2, 3, 4]);
    }

    #[test]
    fn remembered_manager_ids_are_bounded() {
        let ob = Outbox::new();
        for id in 0..(SEEN_FROM_MANAGER as u32 + 10) {
            assert!(ob.first_sight(0x8000_0000 | id));
        }
        assert!(!ob.first_sight(0x8000_0000 | (SEEN_FROM_MANAGER as u32 + 9)));
        let n = ob.inner.0.lock().unwrap().seen_from_manager.len();
        assert_eq!(n, SEEN_FROM_MANAGER);
    }
}
