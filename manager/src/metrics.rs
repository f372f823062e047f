//! Prometheus metrics (`GET /metrics`, text format), via `prometheus-client`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The manager's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Launches that spawned QEMU.
    pub launches: Counter,
    /// Launches refused or failed.
    pub launch_failures: Counter,
    /// Request → QEMU spawned, seconds.
    pub launch_seconds: Histogram,
    /// Events stored.
    pub events: Counter,
    /// Agent frames refused because the outbox was full.
    pub refused: Counter,
    /// VMs running.
    pub vms: Gauge,
    /// Events waiting for confirmation (or kept for replay).
    pub outbox: Gauge,
    /// Events confirmed by the control plane.
    pub confirmed: Counter,
    /// 1 while the store commits, 0 after a write failed until it is reopened.
    pub store_healthy: Gauge,
    /// Manager events kept in memory because the store could not commit them.
    pub events_unstored: Gauge,
    /// HTTP or gRPC connections closed at once because --max-connections were open.
    pub connections_refused: Counter,
    /// Times a VM was throttled (over its event rate or its share of the outbox).
    pub guest_throttled: Counter,
    /// Bytes of events held in the store.
    pub store_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cocos_manager");
        let m = Self {
            launches: Counter::default(),
            launch_failures: Counter::default(),
            launch_seconds: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            events: Counter::default(),
            refused: Counter::default(),
            vms: Gauge::default(),
            outbox: Gauge::default(),
            confirmed: Counter::default(),
            store_healthy: Gauge::default(),
            events_unstored: Gauge::default(),
            connections_refused: Counter::default(),
            guest_throttled: Counter::default(),
            store_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("launches", "QEMU launches", m.launches.clone());
        registry.register(
            "launch_failures",
            "Launches refused or failed",
            m.launch_failures.clone(),
        );
        registry.register(
            "launch_seconds",
            "Run request to QEMU spawned",
            m.launch_seconds.clone(),
        );
        registry.register("events", "Events stored in the outbox", m.events.clone());
        registry.register(
            "agent_frames_refused",
            "Agent frames refused (outbox full)",
            m.refused.clone(),
        );
        registry.register("vms", "VMs running", m.vms.clone());
        registry.register(
            "outbox_events",
            "Events awaiting confirmation (with a control plane) or held for replay",
            m.outbox.clone(),
        );
        registry.register(
            "events_confirmed",
            "Events confirmed by the control plane",
            m.confirmed.clone(),
        );
        registry.register(
            "store_healthy",
            "1 while the store commits writes, 0 after a failed write until it is reopened",
            m.store_healthy.clone(),
        );
        registry.register(
            "events_unstored",
            "Manager events held in memory until the store commits again",
            m.events_unstored.clone(),
        );
        registry.register(
            "connections_refused",
            "HTTP or gRPC connections closed because --max-connections were open",
            m.connections_refused.clone(),
        );
        registry.register(
            "guest_throttled",
            "Times a VM was throttled (over its event rate or its share of the outbox)",
            m.guest_throttled.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes of events held in the store (outbox and replay window)",
            m.store_bytes.clone(),
        );
        m.store_healthy.set(1);
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let m = Metrics::default();
        m.launches.inc();
        m.vms.set(3);
        let t = m.render();
        assert!(t.contains("cocos_manager_launches_total 1"), "{t}");
        assert!(t.contains("cocos_manager_vms 3"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
    }
}
