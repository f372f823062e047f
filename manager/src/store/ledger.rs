//! The store's in-memory account of what it holds: per VM, the events of the outbox
//! (held events in ring mode, unconfirmed ones in confirmed mode) with their sizes, the
//! ring's eviction order (each VM by its oldest event), and the replay window of
//! confirmed events. It decides which agent frames a VM may still
//! add (its share of the outbox) and which events leave (ring mode: a VM over its share
//! loses its own oldest, then the outbox over its limits loses the oldest held;
//! confirmed mode: confirmed events beyond the replay window or the byte limit). Rebuilt
//! from the database at open and after any failed write, so it never drifts from what
//! was committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::Retention;

/// Smallest per-VM byte share: room for the largest stored event (evidence up to the
/// frame limit) twice over, so a small share never blocks an attestation for good.
pub const MIN_VM_BYTES: u64 = 2 * cocos_proto::frame::MAX_PAYLOAD as u64;

/// How much the outbox may hold, in all and per VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events in the outbox.
    pub events: u64,
    /// Most bytes of event payloads held (outbox and replay window).
    pub bytes: u64,
    /// A VM's share of both, in percent (1–100).
    pub vm_share_pct: u8,
}

impl Limits {
    /// `events` and `bytes` in all, each VM at most `vm_share_pct` percent of both.
    pub fn new(events: u64, bytes: u64, vm_share_pct: u8) -> Self {
        Self {
            events: events.max(1),
            bytes: bytes.max(MIN_VM_BYTES),
            vm_share_pct: vm_share_pct.clamp(1, 100),
        }
    }

    /// Only a count (no byte limit, no per-VM share): the store's tests.
    pub fn events_only(events: u64) -> Self {
        Self::new(events, u64::MAX, 100)
    }

    /// Most outbox events one VM may hold.
    pub fn vm_events(&self) -> u64 {
        (u128::from(self.events) * u128::from(self.vm_share_pct) / 100)
            .clamp(1, u128::from(u64::MAX)) as u64
    }

    /// Most outbox bytes one VM may hold.
    pub fn vm_bytes(&self) -> u64 {
        ((u128::from(self.bytes) * u128::from(self.vm_share_pct) / 100).min(u128::from(u64::MAX))
            as u64)
            .max(MIN_VM_BYTES)
    }
}

/// Why an agent frame may not be added now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It fits.
    Fits,
    /// The outbox is full (events or bytes).
    Full,
    /// Its VM holds its share of the outbox.
    OverShare,
}

#[derive(Debug, Default)]
struct Usage {
    q: VecDeque<(u64, u64)>,
    bytes: u64,
    /// Identifies this VM's entry in the ring's eviction order (a VM that leaves
    /// and comes back gets a new one, so old entries are recognised as stale).
    epoch: u64,
}

/// The ring's eviction order: each VM with events, by its oldest event.
type Oldest = std::collections::BinaryHeap<std::cmp::Reverse<(u64, u64, Arc<str>)>>;

/// The account (see the module doc). Memory: 16 bytes per outbox event (its VM's
/// queue), plus the replay window in confirmed mode.
#[derive(Debug)]
pub struct Ledger {
    retention: Retention,
    vms: HashMap<Arc<str>, Usage>,
    /// Outbox totals (sums over `vms`).
    events: u64,
    bytes: u64,
    /// Ring mode: one entry per VM holding events, keyed by its oldest.
    oldest: Oldest,
    next_epoch: u64,
    /// Confirmed mode: confirmed events still held (the replay window), in order.
    replay: VecDeque<(u64, u64)>,
    replay_bytes: u64,
    /// The highest confirmed sequence number (confirmed mode).
    confirmed: u64,
    /// False while a write is in flight or after one failed: rebuild before use.
    pub fresh: bool,
}

impl Ledger {
    /// An empty account.
    pub fn new(retention: Retention, confirmed: u64) -> Self {
        Self {
            retention,
            vms: HashMap::new(),
            events: 0,
            bytes: 0,
            oldest: Oldest::new(),
            next_epoch: 0,
            replay: VecDeque::new(),
            replay_bytes: 0,
            confirmed,
            fresh: true,
        }
    }

    /// Counts a held event (in sequence order), as read back from the database.
    pub fn load(&mut self, seq: u64, bytes: u64, vm: &str) {
        if self.retention == Retention::Confirmed && seq <= self.confirmed {
            self.replay.push_back((seq, bytes));
            self.replay_bytes += bytes;
        } else {
            self.add(seq, bytes, vm);
        }
    }

    /// Whether `vm` may add an agent frame of `bytes` now (confirmed mode; ring mode
    /// always takes it and makes room afterwards).
    pub fn admit(&self, limits: &Limits, vm: &str, bytes: u64) -> Verdict {
        if self.retention == Retention::Ring {
            return Verdict::Fits;
        }
        if self.events >= limits.events || self.bytes.saturating_add(bytes) > limits.bytes {
            return Verdict::Full;
        }
        match self.vms.get(vm) {
            Some(u)
                if u.q.len() as u64 >= limits.vm_events()
                    || u.bytes.saturating_add(bytes) > limits.vm_bytes() =>
            {
                Verdict::OverShare
            }
            _ => Verdict::Fits,
        }
    }

    /// Counts an event just stored (in the outbox).
    pub fn add(&mut self, seq: u64, bytes: u64, vm: &str) {
        let u = match self.vms.get_mut(vm) {
            Some(u) => u,
            None => {
                let key: Arc<str> = Arc::from(vm);
                self.next_epoch += 1;
                let epoch = self.next_epoch;
                if self.retention == Retention::Ring {
                    self.oldest
                        .push(std::cmp::Reverse((seq, epoch, key.clone())));
                }
                self.vms.entry(key).or_insert(Usage {
                    epoch,
                    ..Usage::default()
                })
            }
        };
        u.q.push_back((seq, bytes));
        u.bytes += bytes;
        self.events += 1;
        self.bytes += bytes;
    }

    /// Drops `vm`'s oldest event from the account; returns it.
    fn pop_oldest_of(&mut self, vm: &str) -> Option<u64> {
        let u = self.vms.get_mut(vm)?;
        let (s, b) = u.q.pop_front()?;
        u.bytes -= b;
        self.events -= 1;
        self.bytes -= b;
        if u.q.is_empty() {
            self.vms.remove(vm);
        }
        Some(s)
    }

    /// Ring mode: makes the outbox fit `limits` after an append, returning the sequence
    /// numbers to delete. First every VM in `touched` over its share drops its own
    /// oldest events; then, while the outbox is over its limits, the oldest held event
    /// goes. A flooding VM thus rotates within its share and cannot push other VMs'
    /// events out.
    pub fn trim_ring<'a>(
        &mut self,
        limits: &Limits,
        touched: impl IntoIterator<Item = &'a str>,
    ) -> Vec<u64> {
        let mut gone = Vec::new();
        for vm in touched {
            while self.vms.get(vm).is_some_and(|u| {
                u.q.len() as u64 > limits.vm_events() || u.bytes > limits.vm_bytes()
            }) {
                match self.pop_oldest_of(vm) {
                    Some(s) => gone.push(s),
                    None => break,
                }
            }
        }
        while self.events > limits.events || self.bytes > limits.bytes {
            let Some(std::cmp::Reverse((seq, epoch, vm))) = self.oldest.pop() else {
                break;
            };
            let front = match self.vms.get(&vm) {
                Some(u) if u.epoch == epoch => u.q.front().map(|f| f.0),
                // A VM that left since: a stale entry.
                _ => continue,
            };
            match front {
                Some(f) if f == seq => {
                    if let Some(s) = self.pop_oldest_of(&vm) {
                        gone.push(s);
                    }
                    if let Some(next) = self.vms.get(&vm).and_then(|u| u.q.front()) {
                        self.oldest.push(std::cmp::Reverse((next.0, epoch, vm)));
                    }
                }
                // Its oldest went meanwhile (over its share): re-queue by the new one.
                Some(f) => self.oldest.push(std::cmp::Reverse((f, epoch, vm))),
                None => {}
            }
        }
        gone
    }

    /// Confirmed mode: everything up to `seq` is confirmed: it leaves the outbox for the
    /// replay window.
    pub fn confirm(&mut self, seq: u64) {
        if seq <= self.confirmed {
            return;
        }
        self.confirmed = seq;
        let mut moved = Vec::new();
        let mut emptied = Vec::new();
        for (vm, u) in &mut self.vms {
            while let Some(&(s, b)) = u.q.front() {
                if s > seq {
                    break;
                }
                u.q.pop_front();
                u.bytes -= b;
                self.events -= 1;
                self.bytes -= b;
                moved.push((s, b));
            }
            if u.q.is_empty() {
                emptied.push(vm.clone());
            }
        }
        for vm in emptied {
            self.vms.remove(&vm);
        }
        // Every newly confirmed event follows those confirmed before.
        moved.sort_unstable();
        for (s, b) in moved {
            self.replay.push_back((s, b));
            self.replay_bytes += b;
        }
    }

    /// Confirmed mode: the confirmed events that leave (more than `replay` events held
    /// in all, or more than the byte limit), as the last sequence number to delete from
    /// the front (None: nothing leaves). Unconfirmed events never leave.
    pub fn trim_replay(&mut self, limits: &Limits, replay: u64) -> Option<u64> {
        let mut cut = None;
        while !self.replay.is_empty()
            && (self.replay.len() as u64 + self.events > replay
                || self.replay_bytes + self.bytes > limits.bytes)
        {
            if let Some((s, b)) = self.replay.pop_front() {
                self.replay_bytes -= b;
                cut = Some(s);
            }
        }
        cut
    }

    /// Outbox events held by `vm`, and their bytes.
    pub fn vm_usage(&self, vm: &str) -> (u64, u64) {
        self.vms
            .get(vm)
            .map(|u| (u.q.len() as u64, u.bytes))
            .unwrap_or((0, 0))
    }

    /// Outbox events and bytes in all.
    #[cfg(test)]
    pub fn outbox(&self) -> (u64, u64) {
        (self.events, self.bytes)
    }

    /// Bytes of every held event (outbox and replay window).
    pub fn held_bytes(&self) -> u64 {
        self.bytes + self.replay_bytes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn shares_round_sensibly() {
        let l = Limits::new(1000, 100 << 20, 10);
        assert_eq!(l.vm_events(), 100);
        assert_eq!(l.vm_bytes(), 10 << 20);
        assert_eq!(Limits::new(5, 1, 1).vm_events(), 1);
        assert_eq!(Limits::new(5, 1, 1).vm_bytes(), MIN_VM_BYTES);
        assert_eq!(Limits::events_only(7).vm_events(), 7);
    }

    /// Ring: a flooding VM rotates within its share; the quiet VM keeps everything.
    #[test]
    fn a_flooding_vm_drops_its_own_oldest() {
        let limits = Limits::new(100, u64::MAX, 10);
        let mut l = Ledger::new(Retention::Ring, 0);
        l.add(1, 10, "quiet");
        let mut gone = Vec::new();
        for s in 2..=1000 {
            l.add(s, 10, "flood");
            gone.extend(l.trim_ring(&limits, ["flood"]));
        }
        assert_eq!(l.vm_usage("quiet"), (1, 10));
        assert_eq!(l.vm_usage("flood"), (10, 100));
        assert_eq!(gone.len(), 989);
        assert_eq!(gone.first(), Some(&2));
        assert!(l.oldest.len() <= 2, "one eviction entry per VM");
    }

    /// Ring: over the global limits, the oldest held event goes, whoever owns it.
    #[test]
    fn the_ring_drops_the_oldest_when_everyone_is_within_share() {
        let limits = Limits::new(4, u64::MAX, 100);
        let mut l = Ledger::new(Retention::Ring, 0);
        let mut gone = Vec::new();
        for s in 1..=6 {
            let vm = if s % 2 == 0 { "a" } else { "b" };
            l.add(s, 1, vm);
            gone.extend(l.trim_ring(&limits, [vm]));
        }
        assert_eq!(gone, vec![1, 2]);
        assert_eq!(l.outbox(), (4, 4));
    }

    #[test]
    fn confirmed_mode_admits_within_share_and_limits() {
        let limits = Limits::new(10, 100 << 20, 50);
        let mut l = Ledger::new(Retention::Confirmed, 0);
        for s in 1..=5 {
            assert_eq!(l.admit(&limits, "a", 1), Verdict::Fits);
            l.add(s, 1, "a");
        }
        assert_eq!(l.admit(&limits, "a", 1), Verdict::OverShare);
        for s in 6..=10 {
            assert_eq!(l.admit(&limits, "b", 1), Verdict::Fits);
            l.add(s, 1, "b");
        }
        assert_eq!(l.admit(&limits, "c", 1), Verdict::Full);
        l.confirm(3);
        assert_eq!(l.vm_usage("a"), (2, 2));
        assert_eq!(l.admit(&limits, "a", 1), Verdict::Fits);
        // Confirmed events stay for replay until the window or the bytes say otherwise.
        assert_eq!(l.trim_replay(&limits, 100), None);
        assert_eq!(l.trim_replay(&limits, 8), Some(2));
        assert_eq!(l.replay.len() as u64 + l.outbox().0, 8);
        l.confirm(10);
        assert_eq!(l.outbox(), (0, 0));
        assert!(l.vms.is_empty());
    }

    #[test]
    fn bytes_bound_the_outbox_and_the_replay_window() {
        let limits = Limits::new(1000, MIN_VM_BYTES * 2, 100);
        let mut l = Ledger::new(Retention::Confirmed, 0);
        let big = MIN_VM_BYTES / 2;
        for s in 1..=4 {
            assert_eq!(l.admit(&limits, "a", big), Verdict::Fits);
            l.add(s, big, "a");
        }
        assert_eq!(l.admit(&limits, "a", 1), Verdict::Full);
        l.confirm(2);
        assert_eq!(l.admit(&limits, "a", 1), Verdict::Fits);
        l.add(5, 1, "a");
        assert_eq!(l.trim_replay(&limits, 10_000), Some(1));
        assert!(l.held_bytes() <= limits.bytes);
    }
}
