//! The manager's embedded store (redb, one file, crash-safe transactions): VM records,
//! the event outbox, and per-VM agent high-water marks. Every event gets a sequence
//! number from one counter; an agent frame's event and its VM's new high-water mark
//! are committed in the same transaction, and only then acknowledged to the agent, so
//! a crash at any point neither loses nor duplicates an event.
//!
//! Outbox policy. With a control plane (`confirmed` mode), an event stays until the
//! control plane confirms it (`EventAck` on the seed stream); when `capacity` events
//! are unconfirmed, new agent frames are refused (not acknowledged, so the agent keeps
//! and re-sends them) while the manager's own events still go in. Confirmed events
//! stay as a replay window for WatchEvents (the newest [`REPLAY`]) and are then
//! dropped. Without a control plane (`ring` mode) the store is only that replay log:
//! it keeps the newest `capacity` events.
//!
//! Limits by bytes and per VM ([`Limits`], accounted by the `ledger` module): the events held
//! are bounded by bytes as well as by count, and each VM gets a share of both. In
//! confirmed mode a VM holding its share of the outbox has its agent frames refused
//! ([`Appended::Throttled`]: not acknowledged, the agent keeps them) while other VMs'
//! frames still go in; in ring mode a VM over its share loses its own oldest events
//! instead of everybody else's.

use std::path::Path;

use prost::Message;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const VMS: TableDefinition<&str, &[u8]> = TableDefinition::new("vms");
const AGENT_HW: TableDefinition<&str, u32> = TableDefinition::new("agent_hw");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

mod ledger;

use ledger::{Ledger, Verdict};
pub use ledger::{Limits, MIN_VM_BYTES};

const NEXT_SEQ: &str = "next_seq";
/// redb's page cache (its default grows to 1 GiB).
const CACHE_BYTES: usize = 4 << 20;
/// Confirmed events kept for WatchEvents replay (confirmed mode).
pub const REPLAY: u64 = 10_000;
const CONFIRMED: &str = "confirmed";

/// A counter in the meta table (0 when absent).
fn counter(t: &impl ReadableTable<&'static str, u64>, k: &str) -> Result<u64, StoreError> {
    Ok(t.get(k).map_err(e)?.map(|v| v.value()).unwrap_or(0))
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(String);

fn e(x: impl std::fmt::Display) -> StoreError {
    StoreError(x.to_string())
}

/// What happens when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep until confirmed; refuse agent frames when full.
    Confirmed,
    /// Keep the newest `capacity` events.
    Ring,
}

/// One event to append.
#[derive(Debug, Clone)]
pub struct Append {
    /// The VM.
    pub vm: String,
    /// The agent frame id it came in (None for the manager's own events).
    pub frame_id: Option<u32>,
    /// Encoded `ClientStreamMessage` (agent_event or agent_log).
    pub payload: Vec<u8>,
}

/// The result of appending one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored with this sequence number.
    Stored(u64),
    /// At or below the VM's high-water mark: stored before.
    Duplicate,
    /// Outbox full (confirmed mode): not stored; do not acknowledge.
    Refused,
    /// Its VM holds its share of the outbox (confirmed mode): not stored; do not
    /// acknowledge.
    Throttled,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    /// The open database (None only while being reopened).
    db: std::sync::RwLock<Option<std::sync::Arc<Database>>>,
    path: std::path::PathBuf,
    /// Why the last write failed, until a reopen succeeds (redb refuses every write
    /// after an I/O error until the database is opened again).
    failure: std::sync::Mutex<Option<String>>,
    limits: Limits,
    retention: Retention,
    /// What is held, per VM (see [`ledger`]).
    ledger: std::sync::Mutex<Ledger>,
}

/// The VM (computation id) a stored event belongs to ("" if it names none).
fn owner_of(payload: &[u8]) -> String {
    cocos_proto::grpc::ClientStreamMessage::decode(payload)
        .map(|m| crate::events::computation_of(&m).to_owned())
        .unwrap_or_default()
}

impl Store {
    /// Opens (or creates) the store at `path`, bounded by `capacity` events only.
    pub fn open(path: &Path, capacity: u64, retention: Retention) -> Result<Self, StoreError> {
        Self::open_checked(path, Limits::events_only(capacity), retention, false)
    }

    /// Opens the store without ever overwriting one that holds data: a new file is
    /// created 0600 whatever the umask; an existing one is tightened to 0600 (loudly);
    /// an empty (truncated to zero) or corrupt file is refused with what to do —
    /// unless `repair`, which lets redb repair a damaged file and re-creates an empty
    /// one (both logged). redb's own panics on damaged files are caught.
    pub fn open_checked(
        path: &Path,
        limits: Limits,
        retention: Retention,
        repair: bool,
    ) -> Result<Self, StoreError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let shown = path.display();
        let keep = "keep the file for inspection, and start with --state-dir elsewhere, or with --repair to let the manager repair it";
        match std::fs::metadata(path) {
            Err(x) if x.kind() == std::io::ErrorKind::NotFound => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|x| e(format!("{shown}: cannot create: {x}")))?;
            }
            Err(x) => return Err(e(format!("{shown}: {x}"))),
            Ok(m) if !m.is_file() => return Err(e(format!("{shown}: not a regular file"))),
            Ok(m) if m.len() == 0 && !repair => {
                return Err(e(format!(
                    "{shown} is empty (0 bytes): a store that was truncated, not a new one; {keep}"
                )))
            }
            Ok(m) => {
                if m.len() == 0 {
                    tracing::warn!("{shown} is empty: --repair starts a new store in it");
                }
                let mode = m.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    tracing::warn!("{shown} had mode {mode:04o}: other users could read the store; set to 0600");
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|x| e(format!("{shown}: cannot chmod 0600: {x}")))?;
                }
            }
        }
        // A small page cache: the store is written sequentially and read near its end.
        let mut builder = redb::Builder::new();
        builder.set_cache_size(CACHE_BYTES);
        if repair {
            builder.set_repair_callback(|_| tracing::warn!("repairing the store"));
        }
        let opened = {
            // redb panics on some damaged files; make that an error, silently.
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path)));
            std::panic::set_hook(hook);
            r
        };
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(x)) => return Err(e(format!("{shown} cannot be opened ({x}); {keep}"))),
            Err(_) => {
                return Err(e(format!(
                    "{shown} is damaged (the database library could not read it); {keep}"
                )))
            }
        };
        let w = db.begin_write().map_err(e)?;
        {
            w.open_table(EVENTS).map_err(e)?;
            w.open_table(VMS).map_err(e)?;
            w.open_table(AGENT_HW).map_err(e)?;
            w.open_table(META).map_err(e)?;
        }
        w.commit().map_err(e)?;
        let s = Self {
            db: std::sync::RwLock::new(Some(std::sync::Arc::new(db))),
            path: path.to_path_buf(),
            failure: std::sync::Mutex::new(None),
            limits,
            retention,
            ledger: std::sync::Mutex::new(Ledger::new(retention, 0)),
        };
        *s.ledger.lock().map_err(|_| e("ledger lock poisoned"))? = s.account()?;
        Ok(s)
    }

    /// Reads what is held back into a new account (at open, and after a failed write).
    fn account(&self) -> Result<Ledger, StoreError> {
        let r = self.db()?.begin_read().map_err(e)?;
        let confirmed = counter(&r.open_table(META).map_err(e)?, CONFIRMED)?;
        let mut l = Ledger::new(self.retention, confirmed);
        for row in r.open_table(EVENTS).map_err(e)?.iter().map_err(e)? {
            let (k, v) = row.map_err(e)?;
            let v = v.value();
            l.load(k.value(), v.len() as u64, &owner_of(v));
        }
        Ok(l)
    }

    /// The account, rebuilt first if a write failed since it was last right.
    fn ledger(&self) -> Result<std::sync::MutexGuard<'_, Ledger>, StoreError> {
        let mut g = self.ledger.lock().map_err(|_| e("ledger lock poisoned"))?;
        if !g.fresh {
            *g = self.account()?;
        }
        Ok(g)
    }

    fn db(&self) -> Result<std::sync::Arc<Database>, StoreError> {
        self.db
            .read()
            .map_err(|_| e("store lock poisoned"))?
            .clone()
            .ok_or_else(|| e("the store is being reopened"))
    }

    /// Notes a failed write: the store then reports itself unhealthy until
    /// [`reopen`](Self::reopen) succeeds.
    fn track<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(err) = &r {
            if let Ok(mut f) = self.failure.lock() {
                if f.is_none() {
                    tracing::error!("store write failed: {err}");
                }
                *f = Some(err.to_string());
            }
        }
        r
    }

    /// Why the store cannot commit, if it cannot (a write failed and no reopen has
    /// succeeded since).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Opens the database again (after an I/O error redb refuses writes until then)
    /// and checks that a write commits; clears the failure on success.
    pub fn reopen(&self) -> Result<(), StoreError> {
        {
            let mut g = self.db.write().map_err(|_| e("store lock poisoned"))?;
            if let Some(old) = g.take() {
                // Wait (briefly) for operations still holding the old handle.
                let mut old = old;
                for _ in 0..200 {
                    match std::sync::Arc::try_unwrap(old) {
                        Ok(db) => {
                            drop(db);
                            break;
                        }
                        Err(still) => {
                            old = still;
                            std::thread::sleep(std::time::Duration::from_millis(5));
                        }
                    }
                }
            }
            let mut builder = redb::Builder::new();
            builder.set_cache_size(CACHE_BYTES);
            let db = builder
                .create(&self.path)
                .map_err(|x| e(format!("{}: reopening: {x}", self.path.display())))?;
            *g = Some(std::sync::Arc::new(db));
        }
        // The account is read back from what the reopened file holds.
        if let Ok(mut l) = self.ledger.lock() {
            l.fresh = false;
        }
        // A write must commit before the store counts as healthy again.
        let w = self.db()?.begin_write().map_err(e)?;
        w.open_table(META).map_err(e)?;
        w.commit().map_err(e)?;
        if let Ok(mut f) = self.failure.lock() {
            if f.take().is_some() {
                tracing::info!("store reopened: writes commit again");
            }
        }
        Ok(())
    }

    /// Appends a batch in one transaction (group commit).
    pub fn append(&self, items: &[Append]) -> Result<Vec<Appended>, StoreError> {
        self.track(self.append_inner(items))
    }

    fn append_inner(&self, items: &[Append]) -> Result<Vec<Appended>, StoreError> {
        let mut led = self.ledger()?;
        // Until this transaction commits the account is ahead of the database.
        led.fresh = false;
        let w = self.db()?.begin_write().map_err(e)?;
        let mut out = Vec::with_capacity(items.len());
        {
            let mut events = w.open_table(EVENTS).map_err(e)?;
            let mut hw = w.open_table(AGENT_HW).map_err(e)?;
            let mut meta = w.open_table(META).map_err(e)?;
            let mut next = counter(&meta, NEXT_SEQ)?.max(1);
            // Once a VM's frame is refused, its later frames in this batch are refused
            // the same way, so its stored frames stay a prefix.
            let mut refused_vm: Vec<(&str, Appended)> = Vec::new();
            let mut touched: std::collections::HashSet<&str> = std::collections::HashSet::new();
            for it in items {
                let bytes = it.payload.len() as u64;
                if let Some(fid) = it.frame_id {
                    let mark = hw
                        .get(it.vm.as_str())
                        .map_err(e)?
                        .map(|v| v.value())
                        .unwrap_or(0);
                    if !crate::agent_channel::is_after(fid, mark) {
                        out.push(Appended::Duplicate);
                        continue;
                    }
                    if let Some((_, why)) = refused_vm.iter().find(|(v, _)| *v == it.vm) {
                        out.push(*why);
                        continue;
                    }
                    let why = match led.admit(&self.limits, &it.vm, bytes) {
                        Verdict::Fits => None,
                        Verdict::Full => Some(Appended::Refused),
                        Verdict::OverShare => Some(Appended::Throttled),
                    };
                    if let Some(why) = why {
                        refused_vm.push((&it.vm, why));
                        out.push(why);
                        continue;
                    }
                    hw.insert(it.vm.as_str(), fid).map_err(e)?;
                }
                events.insert(next, it.payload.as_slice()).map_err(e)?;
                led.add(next, bytes, &it.vm);
                touched.insert(&it.vm);
                out.push(Appended::Stored(next));
                next += 1;
            }
            meta.insert(NEXT_SEQ, next).map_err(e)?;
            match self.retention {
                Retention::Ring => {
                    for seq in led.trim_ring(&self.limits, touched) {
                        events.remove(seq).map_err(e)?;
                    }
                }
                Retention::Confirmed => {
                    if let Some(cut) = led.trim_replay(&self.limits, REPLAY) {
                        events.retain_in(..=cut, |_, _| false).map_err(e)?;
                    }
                }
            }
        }
        w.commit().map_err(e)?;
        led.fresh = true;
        Ok(out)
    }

    /// Up to `limit` events with sequence numbers above `after`, in order.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.events_after_within(after, limit, usize::MAX)
    }

    /// As [`events_after`](Self::events_after), stopping once `max_bytes` of payload
    /// were read (at least one event is returned if there is one): readers page by
    /// bytes, so large events cannot make a page large.
    pub fn events_after_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let r = self.db()?.begin_read().map_err(e)?;
        let t = r.open_table(EVENTS).map_err(e)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for row in t.range(after.saturating_add(1)..).map_err(e)?.take(limit) {
            let (k, v) = row.map_err(e)?;
            let v = v.value().to_vec();
            bytes = bytes.saturating_add(v.len());
            out.push((k.value(), v));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The control plane confirmed every event up to `seq` (capped at the last
    /// assigned): they no longer count against the capacity, and beyond the replay
    /// window they are dropped.
    pub fn confirm(&self, seq: u64) -> Result<(), StoreError> {
        self.track(self.confirm_inner(seq))
    }

    fn confirm_inner(&self, seq: u64) -> Result<(), StoreError> {
        let mut led = self.ledger()?;
        led.fresh = false;
        let w = self.db()?.begin_write().map_err(e)?;
        {
            let mut events = w.open_table(EVENTS).map_err(e)?;
            let mut meta = w.open_table(META).map_err(e)?;
            let last = counter(&meta, NEXT_SEQ)?.max(1) - 1;
            let now = counter(&meta, CONFIRMED)?.max(seq.min(last));
            meta.insert(CONFIRMED, now).map_err(e)?;
            led.confirm(now);
            if let Some(cut) = led.trim_replay(&self.limits, REPLAY) {
                events.retain_in(..=cut, |_, _| false).map_err(e)?;
            }
        }
        w.commit().map_err(e)?;
        led.fresh = true;
        Ok(())
    }

    /// Outbox events and bytes held by `vm` (what counts against its share).
    pub fn vm_usage(&self, vm: &str) -> Result<(u64, u64), StoreError> {
        Ok(self.ledger()?.vm_usage(vm))
    }

    /// Bytes of every event held (outbox and replay window).
    pub fn held_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.ledger()?.held_bytes())
    }

    /// The limits this store keeps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Events not yet confirmed (confirmed mode).
    pub fn unconfirmed(&self) -> Result<u64, StoreError> {
        Ok(self.last_seq()?.saturating_sub(self.confirmed()?))
    }

    /// The outbox as its policy counts it: events awaiting confirmation (confirmed
    /// mode) or events held (ring mode).
    pub fn outbox(&self) -> Result<u64, StoreError> {
        match self.retention {
            Retention::Confirmed => self.unconfirmed(),
            Retention::Ring => self.outbox_len(),
        }
    }

    /// The highest confirmed sequence number.
    pub fn confirmed(&self) -> Result<u64, StoreError> {
        self.meta(CONFIRMED)
    }

    /// The last assigned sequence number (0 if none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.meta(NEXT_SEQ)?.max(1) - 1)
    }

    fn meta(&self, k: &str) -> Result<u64, StoreError> {
        let r = self.db()?.begin_read().map_err(e)?;
        counter(&r.open_table(META).map_err(e)?, k)
    }

    /// Events held.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let r = self.db()?.begin_read().map_err(e)?;
        r.open_table(EVENTS).map_err(e)?.len().map_err(e)
    }

    /// A VM's agent high-water mark.
    pub fn agent_hw(&self, vm: &str) -> Result<u32, StoreError> {
        let r = self.db()?.begin_read().map_err(e)?;
        let t = r.open_table(AGENT_HW).map_err(e)?;
        Ok(t.get(vm).map_err(e)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Saves a VM record.
    pub fn put_vm(&self, id: &str, record: &[u8]) -> Result<(), StoreError> {
        self.track(self.put_vm_inner(id, record))
    }

    fn put_vm_inner(&self, id: &str, record: &[u8]) -> Result<(), StoreError> {
        let w = self.db()?.begin_write().map_err(e)?;
        w.open_table(VMS)
            .map_err(e)?
            .insert(id, record)
            .map_err(e)?;
        w.commit().map_err(e)
    }

    /// Forgets a VM (record and high-water mark).
    pub fn delete_vm(&self, id: &str) -> Result<(), StoreError> {
        self.track(self.delete_vm_inner(id))
    }

    fn delete_vm_inner(&self, id: &str) -> Result<(), StoreError> {
        let w = self.db()?.begin_write().map_err(e)?;
        w.open_table(VMS).map_err(e)?.remove(id).map_err(e)?;
        w.open_table(AGENT_HW).map_err(e)?.remove(id).map_err(e)?;
        w.commit().map_err(e)
    }

    /// Every VM record.
    pub fn vms(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let r = self.db()?.begin_read().map_err(e)?;
        let t = r.open_table(VMS).map_err(e)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(e)? {
            let (k, v) = row.map_err(e)?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(vm: &str, fid: Option<u32>) -> Append {
        Append {
            vm: vm.into(),
            frame_id: fid,
            payload: format!("{vm}:{fid:?}").into_bytes(),
        }
    }

    #[test]
    fn sequences_dedupes_and_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.redb");
        {
            let s = Store::open(&p, 100, Retention::Confirmed).unwrap();
            let r = s
                .append(&[item("a", Some(1)), item("b", Some(1)), item("a", None)])
                .unwrap();
            assert_eq!(
                r,
                vec![
                    Appended::Stored(1),
                    Appended::Stored(2),
                    Appended::Stored(3)
                ]
            );
            let r = s.append(&[item("a", Some(1)), item("a", Some(2))]).unwrap();
            assert_eq!(r, vec![Appended::Duplicate, Appended::Stored(4)]);
        }
        let s = Store::open(&p, 100, Retention::Confirmed).unwrap();
        assert_eq!(s.agent_hw("a").unwrap(), 2);
        assert_eq!(s.last_seq().unwrap(), 4);
        assert_eq!(
            s.append(&[item("a", Some(2))]).unwrap(),
            vec![Appended::Duplicate]
        );
        let ev = s.events_after(2, 10).unwrap();
        assert_eq!(ev.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 4]);
        s.confirm(3).unwrap();
        assert_eq!(s.events_after(0, 10).unwrap().len(), 4, "kept for replay");
        assert_eq!(s.confirmed().unwrap(), 3);
        assert_eq!(s.unconfirmed().unwrap(), 1);
        s.confirm(99).unwrap();
        assert_eq!(s.confirmed().unwrap(), 4, "capped at the last assigned");
    }

    #[test]
    fn confirmed_mode_refuses_agent_frames_when_full() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.redb"), 2, Retention::Confirmed).unwrap();
        let r = s
            .append(&[
                item("a", Some(1)),
                item("a", Some(2)),
                item("a", Some(3)),
                item("b", None),
                item("a", Some(4)),
            ])
            .unwrap();
        assert_eq!(
            r,
            vec![
                Appended::Stored(1),
                Appended::Stored(2),
                Appended::Refused,
                Appended::Stored(3),
                Appended::Refused
            ]
        );
        assert_eq!(
            s.agent_hw("a").unwrap(),
            2,
            "refused frames do not move the mark"
        );
        s.confirm(2).unwrap();
        assert_eq!(
            s.append(&[item("a", Some(3))]).unwrap(),
            vec![Appended::Stored(4)]
        );
    }

    #[test]
    fn confirmed_events_leave_after_the_replay_window() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.redb"), 1_000_000, Retention::Confirmed).unwrap();
        let batch: Vec<Append> = (1..=REPLAY as u32 + 500)
            .map(|i| item("a", Some(i)))
            .collect();
        s.append(&batch).unwrap();
        assert_eq!(
            s.outbox_len().unwrap(),
            REPLAY + 500,
            "nothing confirmed, nothing dropped"
        );
        s.confirm(300).unwrap();
        assert_eq!(s.outbox_len().unwrap(), REPLAY + 200);
        assert_eq!(s.events_after(0, 1).unwrap()[0].0, 301);
    }

    #[test]
    fn ring_mode_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.redb"), 3, Retention::Ring).unwrap();
        for i in 1..=10 {
            s.append(&[item("a", Some(i))]).unwrap();
        }
        let ev = s.events_after(0, 100).unwrap();
        assert_eq!(ev.iter().map(|x| x.0).collect::<Vec<_>>(), vec![8, 9, 10]);
    }

    /// An event as the manager stores it (the owner is read back from it at open).
    fn real(vm: &str, fid: Option<u32>, size: usize) -> Append {
        use cocos_proto::grpc::{client_stream_message::Message as M, ClientStreamMessage};
        use cocos_proto::messages::AgentLog;
        Append {
            vm: vm.into(),
            frame_id: fid,
            payload: ClientStreamMessage {
                message: Some(M::AgentLog(AgentLog {
                    message: "x".repeat(size),
                    computation_id: vm.into(),
                    level: "info".into(),
                    timestamp: None,
                })),
                seq: 0,
            }
            .encode_to_vec(),
        }
    }

    /// Issue #15.4: in confirmed mode a VM at its share is throttled while another VM's
    /// frames still go in, and the manager's own events always do; the account is read
    /// back the same after a reopen.
    #[test]
    fn a_vm_at_its_share_is_throttled_and_others_are_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.redb");
        let limits = Limits::new(100, 1 << 30, 10);
        {
            let s = Store::open_checked(&p, limits, Retention::Confirmed, false).unwrap();
            let flood: Vec<Append> = (1..=15).map(|i| real("flood", Some(i), 10)).collect();
            let r = s.append(&flood).unwrap();
            assert!(r[..10].iter().all(|x| matches!(x, Appended::Stored(_))));
            assert!(r[10..].iter().all(|x| *x == Appended::Throttled), "{r:?}");
            assert_eq!(s.agent_hw("flood").unwrap(), 10);
            let r = s
                .append(&[real("quiet", Some(1), 10), real("flood", None, 10)])
                .unwrap();
            assert!(r.iter().all(|x| matches!(x, Appended::Stored(_))), "{r:?}");
            assert_eq!(s.vm_usage("flood").unwrap().0, 11);
        }
        let s = Store::open_checked(&p, limits, Retention::Confirmed, false).unwrap();
        assert_eq!(s.vm_usage("flood").unwrap().0, 11);
        assert_eq!(s.vm_usage("quiet").unwrap().0, 1);
        assert_eq!(
            s.append(&[real("flood", Some(11), 10)]).unwrap(),
            vec![Appended::Throttled]
        );
        // Confirmation frees the share.
        s.confirm(5).unwrap();
        assert_eq!(s.vm_usage("flood").unwrap().0, 6);
        assert!(matches!(
            s.append(&[real("flood", Some(11), 10)]).unwrap()[0],
            Appended::Stored(_)
        ));
    }

    /// Issue #15.5: ring mode is bounded by bytes, and a flooding VM loses its own
    /// oldest events, not the quiet VM's.
    #[test]
    fn the_ring_is_bounded_by_bytes_and_per_vm() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.redb");
        let limits = Limits::new(1_000_000, 8 * MIN_VM_BYTES, 25);
        let s = Store::open_checked(&p, limits, Retention::Ring, false).unwrap();
        s.append(&[real("quiet", Some(1), 100), real("quiet", None, 100)])
            .unwrap();
        let mut fid = 0;
        for _ in 0..40 {
            let batch: Vec<Append> = (0..10)
                .map(|_| {
                    fid += 1;
                    real("flood", Some(fid), 16 << 10)
                })
                .collect();
            s.append(&batch).unwrap();
        }
        let (_, flood_bytes) = s.vm_usage("flood").unwrap();
        assert!(flood_bytes <= limits.vm_bytes(), "{flood_bytes}");
        assert!(flood_bytes > limits.vm_bytes() / 2, "{flood_bytes}");
        assert_eq!(
            s.vm_usage("quiet").unwrap().0,
            2,
            "the quiet VM keeps its events"
        );
        let held: Vec<(u64, Vec<u8>)> = s.events_after(0, usize::MAX).unwrap();
        let on_disk: u64 = held.iter().map(|(_, v)| v.len() as u64).sum();
        assert_eq!(on_disk, s.held_bytes().unwrap());
        assert_eq!(held[0].0, 1, "the quiet VM's first event is still there");
        drop(s);
        let s = Store::open_checked(&p, limits, Retention::Ring, false).unwrap();
        assert_eq!(
            s.held_bytes().unwrap(),
            on_disk,
            "the same account after reopen"
        );
    }

    #[test]
    fn vm_records() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.redb"), 3, Retention::Ring).unwrap();
        s.put_vm("x", b"{}").unwrap();
        s.append(&[item("x", Some(5))]).unwrap();
        assert_eq!(s.vms().unwrap(), vec![("x".to_owned(), b"{}".to_vec())]);
        s.delete_vm("x").unwrap();
        assert!(s.vms().unwrap().is_empty());
        assert_eq!(s.agent_hw("x").unwrap(), 0);
    }

    /// A damaged store is refused, never overwritten or re-initialised: a zero-length
    /// file, a store truncated at every length tried, and garbage all give an error
    /// naming the file and --repair, and the bytes on disk stay as they were.
    #[test]
    fn damaged_stores_are_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good.redb");
        {
            let s = Store::open(&good, 100, Retention::Ring).unwrap();
            s.put_vm("vm", b"record").unwrap();
            s.append(&[Append {
                vm: "vm".into(),
                frame_id: Some(1),
                payload: vec![7; 100],
            }])
            .unwrap();
        }
        let bytes = std::fs::read(&good).unwrap();
        let p = d.path().join("s.redb");
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), b"not a database at all".to_vec()];
        for cut in [1, 100, 511, 4096, bytes.len() / 2, bytes.len() - 1] {
            cases.push(bytes[..cut.min(bytes.len() - 1)].to_vec());
        }
        for case in cases {
            std::fs::write(&p, &case).unwrap();
            match Store::open(&p, 100, Retention::Ring) {
                Err(err) => {
                    let m = err.to_string();
                    assert!(m.contains("s.redb") && m.contains("--repair"), "{m}");
                    assert_eq!(std::fs::read(&p).unwrap(), case, "the file was changed");
                }
                // redb may open a prefix that still holds a complete database; then
                // it must still hold what was committed.
                Ok(s) => assert_eq!(
                    s.vms().unwrap(),
                    vec![("vm".to_owned(), b"record".to_vec())]
                ),
            }
        }
        // --repair: an empty file becomes a new store.
        std::fs::write(&p, b"").unwrap();
        let s = Store::open_checked(&p, Limits::events_only(100), Retention::Ring, true).unwrap();
        assert!(s.vms().unwrap().is_empty());
    }

    #[test]
    fn store_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.redb");
        drop(Store::open(&p, 10, Retention::Ring).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&p, 10, Retention::Ring).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
