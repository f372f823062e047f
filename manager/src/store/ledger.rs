//! The store's in-memory account of what it holds: per VM, the events of the outbox
//! (held events in ring mode, unconfirmed ones in confirmed mode) with their sizes, and
//! every held event in sequence order. It decides which agent frames a VM may still
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
}

/// One held event: sequence number, payload bytes, owner.
#[derive(Debug)]
struct Held {
    seq: u64,
    bytes: u64,
    vm: Arc<str>,
}

/// The account (see the module doc).
#[derive(Debug)]
pub struct Ledger {
    retention: Retention,
    vms: HashMap<Arc<str>, Usage>,
    /// Outbox totals (sums over `vms`).
    events: u64,
    bytes: u64,
    /// Every held event in order; in ring mode it may also hold entries a VM already
    /// dropped (compacted when they dominate).
    held: VecDeque<Held>,
    /// Bytes of the held events (confirmed mode; in ring mode the outbox is what is held).
    held_bytes: u64,
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
            held: VecDeque::new(),
            held_bytes: 0,
            confirmed,
            fresh: true,
        }
    }

    /// Counts a held event (in sequence order), as read back from the database.
    pub fn load(&mut self, seq: u64, bytes: u64, vm: &str) {
        self.add(seq, bytes, vm);
        if self.retention == Retention::Confirmed && seq <= self.confirmed {
            self.unaccount_confirmed(vm);
        }
    }

    fn unaccount_confirmed(&mut self, vm: &str) {
        let confirmed = self.confirmed;
        if let Some(u) = self.vms.get_mut(vm) {
            while let Some(&(s, b)) = u.q.front() {
                if s > confirmed {
                    break;
                }
                u.q.pop_front();
                u.bytes -= b;
                self.events -= 1;
                self.bytes -= b;
            }
            if u.q.is_empty() {
                self.vms.remove(vm);
            }
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

    /// Counts an event just stored.
    pub fn add(&mut self, seq: u64, bytes: u64, vm: &str) {
        let key: Arc<str> = match self.vms.get_key_value(vm) {
            Some((k, _)) => k.clone(),
            None => Arc::from(vm),
        };
        let u = self.vms.entry(key.clone()).or_default();
        u.q.push_back((seq, bytes));
        u.bytes += bytes;
        self.events += 1;
        self.bytes += bytes;
        self.held_bytes += bytes;
        self.held.push_back(Held {
            seq,
            bytes,
            vm: key,
        });
    }

    /// Ring mode: makes the outbox fit `limits` after an append, returning the sequence
    /// numbers to delete. First every VM in `touched` over its share drops its own
    /// oldest events; then, while the outbox is over its limits, the oldest held event
    /// goes. A flooding VM thus rotates within its share and cannot push other VMs'
    /// events out.
    pub fn trim_ring(&mut self, limits: &Limits, touched: &[&str]) -> Vec<u64> {
        let mut gone = Vec::new();
        for vm in touched {
            let Some(u) = self.vms.get_mut(*vm) else {
                continue;
            };
            while u.q.len() as u64 > limits.vm_events() || u.bytes > limits.vm_bytes() {
                let Some((s, b)) = u.q.pop_front() else { break };
                u.bytes -= b;
                self.events -= 1;
                self.bytes -= b;
                self.held_bytes -= b;
                gone.push(s);
            }
            if u.q.is_empty() {
                self.vms.remove(*vm);
            }
        }
        while self.events > limits.events || self.bytes > limits.bytes {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            let live = self
                .vms
                .get_mut(&h.vm)
                .filter(|u| u.q.front().is_some_and(|f| f.0 == h.seq));
            if let Some(u) = live {
                u.q.pop_front();
                u.bytes -= h.bytes;
                let empty = u.q.is_empty();
                self.events -= 1;
                self.bytes -= h.bytes;
                self.held_bytes -= h.bytes;
                if empty {
                    self.vms.remove(&h.vm);
                }
                gone.push(h.seq);
            }
        }
        // Entries of events a VM dropped itself stay in `held` until compacted.
        if self.held.len() as u64 > 2 * self.events + 1024 {
            let vms = &self.vms;
            self.held.retain(|h| {
                vms.get(&h.vm)
                    .and_then(|u| u.q.front())
                    .is_some_and(|f| h.seq >= f.0)
            });
        }
        gone
    }

    /// Confirmed mode: everything up to `seq` is confirmed (it leaves the outbox).
    pub fn confirm(&mut self, seq: u64) {
        if seq <= self.confirmed {
            return;
        }
        self.confirmed = seq;
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
            }
            if u.q.is_empty() {
                emptied.push(vm.clone());
            }
        }
        for vm in emptied {
            self.vms.remove(&vm);
        }
    }

    /// Confirmed mode: the confirmed events that leave the replay window (more than
    /// `replay` events held, or more than the byte limit), as the last sequence number
    /// to delete from the front (None: nothing leaves).
    pub fn trim_replay(&mut self, limits: &Limits, replay: u64) -> Option<u64> {
        let mut cut = None;
        while self.held.front().is_some_and(|h| h.seq <= self.confirmed)
            && (self.held.len() as u64 > replay || self.held_bytes > limits.bytes)
        {
            if let Some(h) = self.held.pop_front() {
                self.held_bytes -= h.bytes;
                cut = Some(h.seq);
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
        match self.retention {
            Retention::Ring => self.bytes,
            Retention::Confirmed => self.held_bytes,
        }
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
            gone.extend(l.trim_ring(&limits, &["flood"]));
        }
        assert_eq!(l.vm_usage("quiet"), (1, 10));
        assert_eq!(l.vm_usage("flood"), (10, 100));
        assert_eq!(gone.len(), 989);
        assert_eq!(gone.first(), Some(&2));
        assert!(l.held.len() < 1024 + 2 * 11 + 1, "compacted");
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
            gone.extend(l.trim_ring(&limits, &[vm]));
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
        assert_eq!(l.held.len(), 8);
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
